#include "server/ldm/allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <torch/version.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>  // Defines __GLIBC__ where glibc is the C library.
#include <cstring>
#include <iterator>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// LibTorch 2.x changed the Allocator interface (allocate() lost its const,
// copy_data() was added): the caching allocator is built for 1.x, the
// CPU-serving LibTorch; a 2.x build keeps LibTorch's own.
#if TORCH_VERSION_MAJOR < 2
#define LDMSERVE_CACHING_CPU_ALLOCATOR 1
#else
#define LDMSERVE_CACHING_CPU_ALLOCATOR 0
#endif

namespace ldm {
namespace {

#if LDMSERVE_CACHING_CPU_ALLOCATOR

// Blocks of at least this size are cached, their sizes rounded up to a
// multiple of it (kept ranges are split and joined at this granularity).
constexpr size_t kCachedBlock = size_t{1} << 20;

class CachingCpuAllocator;
// The process's one instance (never destroyed: tensors may be freed during
// static destruction); Free has no other way to reach it.
CachingCpuAllocator* caching_allocator = nullptr;

// Large blocks come from the allocator's own mappings. A freed block is kept
// as a free range, joined with free neighbours; a request takes the smallest
// free range that holds it, split if larger, so freed memory serves any
// smaller size (the same sizes in the same order every UNet call find
// their memory again). Kept ranges never take the process above the most
// memory that was live in large blocks, nor above `max_cached_bytes`: past
// either, the largest ranges are unmapped (their ends first, as much as
// needed).
class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(size_t max_cached_bytes)
      : max_cached_bytes_(max_cached_bytes) {}

  c10::DataPtr allocate(size_t bytes) const override {
    void* data = Take(bytes);
    return {data, data, &Free, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Free; }

  CachedTensorMemory Stats() const {
    absl::MutexLock lock(&mu_);
    return stats_;
  }

 private:
  // A range of mapped memory: [start, start + size).
  struct Range {
    char* start;
    size_t size;
  };

  static size_t Rounded(size_t bytes) {
    return (bytes + kCachedBlock - 1) / kCachedBlock * kCachedBlock;
  }

  void* Take(size_t bytes) const {
    if (bytes < kCachedBlock) return c10::alloc_cpu(bytes);
    const size_t size = Rounded(bytes);
    std::vector<Range> released;
    {
      absl::MutexLock lock(&mu_);
      auto fit = free_by_size_.lower_bound({size, nullptr});
      if (fit != free_by_size_.end()) {
        const Range range{fit->second, fit->first};
        RemoveFreeLocked(range);
        if (range.size > size) {
          AddFreeLocked({range.start + size, range.size - size});
        }
        ++stats_.hits;
        MarkLiveLocked(range.start, size);
        return range.start;
      }
      ++stats_.misses;
      // New memory would take live + kept past the most ever live: unmap
      // kept ranges first.
      const size_t limit = std::max(peak_live_bytes_, live_bytes_ + size);
      const size_t kept = static_cast<size_t>(stats_.cached_bytes);
      if (live_bytes_ + kept + size > limit) {
        released = ShrinkLocked(live_bytes_ + kept + size - limit);
      }
    }
    Unmap(released);
    char* data = MapBlock(size);
    absl::MutexLock lock(&mu_);
    MarkLiveLocked(data, size);
    return data;
  }

  void MarkLiveLocked(char* data, size_t size) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    live_[data] = size;
    live_bytes_ += size;
    peak_live_bytes_ = std::max(peak_live_bytes_, live_bytes_);
  }

  // Keeps `range` free, joined with the free ranges that touch it.
  void AddFreeLocked(Range range) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto next = free_by_start_.find(range.start + range.size);
    if (next != free_by_start_.end()) {
      const Range after{next->first, next->second};
      RemoveFreeLocked(after);
      range.size += after.size;
    }
    auto previous = free_by_start_.lower_bound(range.start);
    if (previous != free_by_start_.begin()) {
      --previous;
      if (previous->first + previous->second == range.start) {
        const Range before{previous->first, previous->second};
        RemoveFreeLocked(before);
        range = {before.start, before.size + range.size};
      }
    }
    free_by_start_[range.start] = range.size;
    free_by_size_.insert({range.size, range.start});
    stats_.cached_bytes += static_cast<int64_t>(range.size);
  }

  void RemoveFreeLocked(const Range& range) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    free_by_start_.erase(range.start);
    free_by_size_.erase({range.size, range.start});
    stats_.cached_bytes -= static_cast<int64_t>(range.size);
  }

  // Takes at least `bytes` (whole kCachedBlocks) out of the kept ranges,
  // from the ends of the largest ones; returns them to unmap outside the
  // lock.
  std::vector<Range> ShrinkLocked(size_t bytes) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<Range> released;
    size_t remaining = Rounded(bytes);
    while (remaining > 0 && !free_by_size_.empty()) {
      const auto largest = std::prev(free_by_size_.end());
      const Range range{largest->second, largest->first};
      RemoveFreeLocked(range);
      if (range.size > remaining) {
        // Keeps the head, unmaps the tail.
        AddFreeLocked({range.start, range.size - remaining});
        released.push_back({range.start + range.size - remaining, remaining});
        break;
      }
      released.push_back(range);
      remaining -= range.size;
    }
    return released;
  }

  // Maps `size` bytes rather than taking them from malloc: unmapped ranges
  // leave the process's resident memory at once (glibc keeps freed heap
  // blocks of up to its 32 MiB mmap threshold resident). 2 MiB aligned and
  // marked for transparent huge pages: where the kernel allows them, a
  // first touch faults in 2 MiB at once.
  static char* MapBlock(size_t size) {
    constexpr size_t kHugePage = size_t{2} << 20;
    void* mapped = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(mapped != MAP_FAILED, "CPU allocator: cannot map ", size,
                " bytes: ", std::strerror(errno));
    // Unmaps the slack before the first 2 MiB boundary and after the block.
    const size_t head =
        (kHugePage - reinterpret_cast<uintptr_t>(mapped) % kHugePage) %
        kHugePage;
    char* const data = static_cast<char*>(mapped) + head;
    if (head > 0) munmap(mapped, head);
    if (head < kHugePage) munmap(data + size, kHugePage - head);
    madvise(data, size, MADV_HUGEPAGE);
    return data;
  }

  static void Unmap(const std::vector<Range>& ranges) {
    for (const Range& range : ranges) munmap(range.start, range.size);
  }

  static void Free(void* data) {
    if (data == nullptr) return;
    if (!caching_allocator->Keep(static_cast<char*>(data))) {
      c10::free_cpu(data);
    }
  }

  // Returns false for blocks it does not cache (small ones); keeps the rest
  // as free ranges, unmapping the largest while over `max_cached_bytes_`.
  bool Keep(char* data) {
    std::vector<Range> released;
    {
      absl::MutexLock lock(&mu_);
      auto it = live_.find(data);
      if (it == live_.end()) return false;
      const size_t size = it->second;
      live_.erase(it);
      live_bytes_ -= size;
      AddFreeLocked({data, size});
      const size_t kept = static_cast<size_t>(stats_.cached_bytes);
      if (kept > max_cached_bytes_) {
        released = ShrinkLocked(kept - max_cached_bytes_);
      }
    }
    Unmap(released);
    return true;
  }

  const size_t max_cached_bytes_;
  mutable absl::Mutex mu_;
  // Kept ranges by start (to join neighbours) and by (size, start) (the
  // smallest that holds a request).
  mutable std::map<char*, size_t> free_by_start_ ABSL_GUARDED_BY(mu_);
  mutable std::set<std::pair<size_t, char*>> free_by_size_ ABSL_GUARDED_BY(mu_);
  // Handed-out large blocks -> their rounded size.
  mutable std::unordered_map<char*, size_t> live_ ABSL_GUARDED_BY(mu_);
  mutable CachedTensorMemory stats_ ABSL_GUARDED_BY(mu_);
  // Bytes of the handed-out large blocks, and the most there ever were.
  mutable size_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  mutable size_t peak_live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

#endif  // LDMSERVE_CACHING_CPU_ALLOCATOR

}  // namespace

void KeepFreedTensorMemory(size_t max_cached_bytes) {
#if defined(__GLIBC__)
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
#if LDMSERVE_CACHING_CPU_ALLOCATOR
  if (caching_allocator != nullptr || max_cached_bytes == 0) return;
  caching_allocator = new CachingCpuAllocator(max_cached_bytes);
  c10::SetCPUAllocator(caching_allocator, /*priority=*/1);
#else
  (void)max_cached_bytes;
#endif
}

CachedTensorMemory CachedTensorMemoryStats() {
#if LDMSERVE_CACHING_CPU_ALLOCATOR
  if (caching_allocator != nullptr) return caching_allocator->Stats();
#endif
  return {};
}

}  // namespace ldm
