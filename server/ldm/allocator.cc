#include "server/ldm/allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/version.h>

#include <cstdlib>  // Defines __GLIBC__ where glibc is the C library.
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
        return data;
      }
      ++stats_.misses;
    }
    void* data = c10::alloc_cpu(size);
    absl::MutexLock lock(&mu_);
    live_[data] = size;
    return data;
  }

  static void Free(void* data) {
    if (data == nullptr) return;
    if (!caching_allocator->Keep(data)) c10::free_cpu(data);
  }

  // Returns false for blocks it does not cache (small ones); keeps the rest,
  // giving back the largest kept blocks while over the limit.
  bool Keep(void* data) {
    std::vector<void*> released;
    {
      absl::MutexLock lock(&mu_);
      auto it = live_.find(data);
      if (it == live_.end()) return false;
      const size_t size = it->second;
      live_.erase(it);
      free_[size].push_back(data);
      stats_.cached_bytes += static_cast<int64_t>(size);
      while (static_cast<size_t>(stats_.cached_bytes) > max_cached_bytes_) {
        auto largest = std::prev(free_.end());
        released.push_back(largest->second.front());
        largest->second.pop_front();
        stats_.cached_bytes -= static_cast<int64_t>(largest->first);
        if (largest->second.empty()) free_.erase(largest);
      }
    }
    for (void* block : released) c10::free_cpu(block);
    return true;
  }

  const size_t max_cached_bytes_;
  mutable absl::Mutex mu_;
  // Rounded size -> kept blocks of that size.
  mutable std::map<size_t, std::list<void*>> free_ ABSL_GUARDED_BY(mu_);
  // Handed-out large blocks -> their rounded size.
  mutable std::unordered_map<void*, size_t> live_ ABSL_GUARDED_BY(mu_);
  mutable CachedTensorMemory stats_ ABSL_GUARDED_BY(mu_);
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
