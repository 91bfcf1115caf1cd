#include "server/ldm/allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <torch/version.h>

#include <cerrno>
#include <cstdlib>  // Defines __GLIBC__ where glibc is the C library.
#include <cstring>
#include <list>
#include <map>
#include <unordered_map>
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
// multiple of it so that near sizes share blocks.
constexpr size_t kCachedBlock = size_t{1} << 20;

class CachingCpuAllocator;
// The process's one instance (never destroyed: tensors may be freed during
// static destruction); Free has no other way to reach it.
CachingCpuAllocator* caching_allocator = nullptr;

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
  struct Block {
    void* data;
    size_t size;
  };

  static size_t Rounded(size_t bytes) {
    return (bytes + kCachedBlock - 1) / kCachedBlock * kCachedBlock;
  }

  void* Take(size_t bytes) const {
    if (bytes < kCachedBlock) return c10::alloc_cpu(bytes);
    const size_t size = Rounded(bytes);
    {
      absl::MutexLock lock(&mu_);
      // The smallest kept block that fits, if it wastes at most a quarter
      // of itself (near sizes share; the 2x and 4x steps between a
      // network's stages do not).
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first - size <= it->first / 4) {
        const size_t block = it->first;
        void* data = it->second.front();
        it->second.pop_front();
        if (it->second.empty()) free_.erase(it);
        stats_.cached_bytes -= static_cast<int64_t>(block);
        ++stats_.hits;
        live_[data] = block;
        live_bytes_ += block;
        return data;
      }
      ++stats_.misses;
    }
    ReleaseAll(EvictBeyondPeak(size));
    void* data = MapBlock(size);
    absl::MutexLock lock(&mu_);
    live_[data] = size;
    live_bytes_ += size;
    peak_live_bytes_ = std::max(peak_live_bytes_, live_bytes_);
    return data;
  }

  // Takes kept blocks out, largest first, until a new block of `size` fits
  // within the most memory that was ever live in large blocks: the cache
  // then never raises the process's peak above what the model needed
  // without it (a decode after UNet steps reuses or replaces their blocks
  // instead of adding to them; threads allocating at once may overshoot it
  // by their blocks). Returns the blocks to free, outside the lock.
  std::vector<Block> EvictBeyondPeak(size_t size) const {
    std::vector<Block> evicted;
    absl::MutexLock lock(&mu_);
    while (!free_.empty() &&
           live_bytes_ + static_cast<size_t>(stats_.cached_bytes) + size >
               peak_live_bytes_) {
      evicted.push_back(TakeLargestLocked());
    }
    return evicted;
  }

  Block TakeLargestLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto largest = std::prev(free_.end());
    const Block block{largest->second.front(), largest->first};
    largest->second.pop_front();
    stats_.cached_bytes -= static_cast<int64_t>(largest->first);
    if (largest->second.empty()) free_.erase(largest);
    return block;
  }

  // Large blocks are mapped and unmapped here rather than taken from
  // malloc: an evicted block then leaves the process's resident memory at
  // once (glibc keeps freed heap blocks of up to its 32 MiB mmap threshold
  // resident, so evicting them would not lower the peak). 2 MiB aligned and
  // marked for transparent huge pages: where the kernel allows them, a
  // first touch faults in 2 MiB at once.
  static void* MapBlock(size_t size) {
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

  static void ReleaseAll(const std::vector<Block>& blocks) {
    for (const Block& block : blocks) munmap(block.data, block.size);
  }

  static void Free(void* data) {
    if (data == nullptr) return;
    if (!caching_allocator->Keep(data)) c10::free_cpu(data);
  }

  // Returns false for blocks it does not cache (small ones); keeps the rest,
  // giving back the largest kept blocks while over the limit.
  bool Keep(void* data) {
    std::vector<Block> released;
    {
      absl::MutexLock lock(&mu_);
      auto it = live_.find(data);
      if (it == live_.end()) return false;
      const size_t size = it->second;
      live_.erase(it);
      live_bytes_ -= size;
      free_[size].push_back(data);
      stats_.cached_bytes += static_cast<int64_t>(size);
      while (static_cast<size_t>(stats_.cached_bytes) > max_cached_bytes_) {
        released.push_back(TakeLargestLocked());
      }
    }
    ReleaseAll(released);
    return true;
  }

  const size_t max_cached_bytes_;
  mutable absl::Mutex mu_;
  // Rounded size -> kept blocks of that size.
  mutable std::map<size_t, std::list<void*>> free_ ABSL_GUARDED_BY(mu_);
  // Handed-out large blocks -> their rounded size.
  mutable std::unordered_map<void*, size_t> live_ ABSL_GUARDED_BY(mu_);
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
