#include "server/ldm/allocator.h"

#include <cstdlib>  // Defines __GLIBC__ where glibc is the C library.

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ldm {

void KeepFreedTensorMemory() {
#if defined(__GLIBC__)
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

}  // namespace ldm
