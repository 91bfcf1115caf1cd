// How the process keeps the memory that tensors free.
#ifndef LDMSERVE_SERVER_LDM_ALLOCATOR_H_
#define LDMSERVE_SERVER_LDM_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>

namespace ldm {

// Every UNet call frees and allocates again the same activations. glibc's
// malloc maps blocks over its mmap threshold afresh (and at most 32 MiB can
// be served from its heap), so each of them page-faults in anew on every
// call: an SD v1 UNet call at 256x256 took 5.2 M page faults, 42 of its 107
// CPU seconds in the kernel (docs/benchmarks.md). This
//   - serves blocks of up to 32 MiB from glibc's heap and keeps up to 256 MiB
//     of freed heap (a shapes job 1.35x faster on a 2-core CPU), and
//   - on LibTorch 1.x, installs a CPU allocator that maps blocks of 1 MiB
//     and more itself (2 MiB aligned, transparent huge pages asked for),
//     keeps them when freed (up to `max_cached_bytes`) as free ranges,
//     joined with free neighbours and split for smaller requests: memory
//     is not given back and faulted in again on every call. Kept ranges
//     never take the process above the most memory that was live in large
//     blocks: a request none holds unmaps them (the largest first) before
//     new memory is mapped, so a 512x512 SD v1 decode after its UNet steps
//     peaks where it would without the cache.
// Call once at start-up, before other threads and before any tensor is
// made; the malloc part does nothing without glibc.
void KeepFreedTensorMemory(size_t max_cached_bytes = size_t{2} << 30);

// The caching allocator's figures (zeros where it is not installed).
struct CachedTensorMemory {
  int64_t cached_bytes = 0;  // Freed blocks kept for reuse.
  int64_t hits = 0;          // Allocations served from them.
  int64_t misses = 0;        // Large allocations that needed new memory.
};
CachedTensorMemory CachedTensorMemoryStats();

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_ALLOCATOR_H_
