// How the process's malloc treats tensor memory.
#ifndef LDMSERVE_SERVER_LDM_ALLOCATOR_H_
#define LDMSERVE_SERVER_LDM_ALLOCATOR_H_

namespace ldm {

// glibc's malloc maps blocks over its mmap threshold afresh and gives freed
// heap tops back to the system, so the activations that every UNet call frees
// and allocates again page-fault anew on each call; its dynamic threshold
// hides that only some of the time, so timings wander. This serves blocks of
// up to 32 MiB from the heap and keeps up to 256 MiB of freed heap (the
// process's resident memory stays near its peak). A shapes job runs about
// 1.35x faster on a 2-core CPU (docs/benchmarks.md). Call once at start-up,
// before other threads; it does nothing without glibc.
void KeepFreedTensorMemory();

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_ALLOCATOR_H_
