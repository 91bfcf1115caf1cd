#include "server/ldm/allocator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/version.h>

namespace ldm {
namespace {

// CTest runs each test in its own process (gtest_discover_tests), so
// installing the allocator here changes no other test.
TEST(CachingAllocatorTest, FreedLargeBlocksAreReusedWithTheirContentsReset) {
  if (TORCH_VERSION_MAJOR >= 2) GTEST_SKIP() << "LibTorch 1.x only";
  KeepFreedTensorMemory(/*max_cached_bytes=*/size_t{64} << 20);
  const CachedTensorMemory before = CachedTensorMemoryStats();
  at::Tensor first = at::full({4 << 20}, 1.0f);  // 16 MiB: cached.
  first.reset();
  EXPECT_EQ(CachedTensorMemoryStats().cached_bytes, 16 << 20);
  // The same size comes back from the cache; zeros() still zeroes it.
  const at::Tensor second = at::zeros({4 << 20});
  CachedTensorMemory after = CachedTensorMemoryStats();
  EXPECT_EQ(after.hits - before.hits, 1);
  EXPECT_EQ(after.cached_bytes, 0);
  EXPECT_EQ(second.sum().item<float>(), 0.0f);
  // Small blocks stay with malloc.
  const at::Tensor small = at::ones({16});
  EXPECT_EQ(CachedTensorMemoryStats().hits, after.hits);
  EXPECT_EQ(small.sum().item<float>(), 16.0f);

  // Over the limit, the largest kept blocks are given back.
  std::vector<at::Tensor> blocks;
  blocks.reserve(6);
  for (int i = 0; i < 6; ++i) blocks.push_back(at::empty({4 << 20}));
  blocks.clear();  // 6 x 16 MiB freed, 64 MiB kept.
  after = CachedTensorMemoryStats();
  EXPECT_EQ(after.cached_bytes, 64 << 20);
}

// Freed memory serves smaller requests (split) and, joined with its free
// neighbours, larger ones.
TEST(CachingAllocatorTest, KeptRangesAreSplitAndJoined) {
  if (TORCH_VERSION_MAJOR >= 2) GTEST_SKIP() << "LibTorch 1.x only";
  KeepFreedTensorMemory(/*max_cached_bytes=*/size_t{256} << 20);
  at::Tensor whole = at::empty({8 << 20});  // 32 MiB.
  whole.reset();
  const CachedTensorMemory before = CachedTensorMemoryStats();
  ASSERT_EQ(before.cached_bytes, 32 << 20);
  // Two halves from the one kept range: no new memory.
  at::Tensor first = at::ones({4 << 20});
  at::Tensor second = at::ones({4 << 20});
  CachedTensorMemory after = CachedTensorMemoryStats();
  EXPECT_EQ(after.hits - before.hits, 2);
  EXPECT_EQ(after.misses, before.misses);
  EXPECT_EQ(after.cached_bytes, 0);
  EXPECT_EQ(first.sum().item<float>() + second.sum().item<float>(),
            float{8 << 20});
  // Freed in either order, they are one range again: the whole size fits.
  first.reset();
  second.reset();
  at::Tensor again = at::zeros({8 << 20});
  EXPECT_EQ(again.sum().item<float>(), 0.0f);
  again.reset();
  first = at::empty({4 << 20});
  second = at::empty({4 << 20});
  second.reset();
  first.reset();
  again = at::empty({8 << 20});
  after = CachedTensorMemoryStats();
  EXPECT_EQ(after.hits - before.hits, 6);
  EXPECT_EQ(after.misses, before.misses);
}

// Kept ranges never hold the process above the most memory that was live:
// a request that none holds unmaps them first.
TEST(CachingAllocatorTest, KeptRangesAreUnmappedRatherThanGrowPastThePeak) {
  if (TORCH_VERSION_MAJOR >= 2) GTEST_SKIP() << "LibTorch 1.x only";
  KeepFreedTensorMemory(/*max_cached_bytes=*/size_t{256} << 20);
  at::Tensor first = at::empty({8 << 20});  // 32 MiB, the peak so far.
  first.reset();
  ASSERT_EQ(CachedTensorMemoryStats().cached_bytes, 32 << 20);
  // 8 MiB from the kept range leaves 24 MiB kept. 48 MiB fits in no kept
  // range: 8 live + 24 kept + 48 new would pass the 56 MiB that will then
  // be live, so 24 MiB are unmapped.
  const at::Tensor smaller = at::empty({2 << 20});
  EXPECT_EQ(CachedTensorMemoryStats().cached_bytes, 24 << 20);
  const int64_t misses = CachedTensorMemoryStats().misses;
  at::Tensor larger = at::empty({12 << 20});
  EXPECT_EQ(CachedTensorMemoryStats().misses, misses + 1);
  EXPECT_EQ(CachedTensorMemoryStats().cached_bytes, 0);
  // Under the peak, freed ranges stay kept beside the live ones.
  larger.reset();
  EXPECT_EQ(CachedTensorMemoryStats().cached_bytes, 48 << 20);
}

// What runs in reused blocks computes what it computed in fresh ones.
TEST(CachingAllocatorTest, ResultsDoNotDependOnTheCache) {
  const at::Tensor a = at::randn({1 << 20}), b = at::randn({1 << 20});
  // Element-wise work is exact: bit for bit. (Large matrix products are not
  // compared bit for bit: LibTorch 1.13's rounds differently from one call
  // to the next, cache or not, ~2e-6 relative.)
  const at::Tensor expected = at::sin(a) * 2 + b;
  KeepFreedTensorMemory(size_t{256} << 20);
  const int64_t hits_before = CachedTensorMemoryStats().hits;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(at::equal(at::sin(a) * 2 + b, expected));
  }
  const at::Tensor m = at::randn({512, 1024}), n = at::randn({1024, 512});
  const at::Tensor product = at::mm(m, n);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(at::allclose(at::mm(m, n), product, 1e-5, 1e-4));
  }
  if (TORCH_VERSION_MAJOR < 2) {
    EXPECT_GT(CachedTensorMemoryStats().hits, hits_before);
  }
}

}  // namespace
}  // namespace ldm
