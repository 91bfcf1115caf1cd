#include "server/common/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace ldmserve {
namespace {

TEST(ParallelForTest, EveryIndexOnceInContiguousRangesOnTheirOwnThreads) {
  for (int threads : {1, 3, 8}) {
    for (int64_t count : {int64_t{1}, int64_t{5}, int64_t{100}}) {
      std::vector<std::atomic<int>> visits(static_cast<size_t>(count));
      std::mutex mu;
      std::set<std::thread::id> ids;
      int ranges = 0;
      ParallelFor(count, threads, [&](int64_t begin, int64_t end) {
        EXPECT_LT(begin, end);
        for (int64_t i = begin; i < end; ++i) visits[i].fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        ids.insert(std::this_thread::get_id());
        ++ranges;
      });
      for (int64_t i = 0; i < count; ++i) {
        EXPECT_EQ(visits[i].load(), 1) << threads << " " << count << " " << i;
      }
      const int expected = static_cast<int>(std::min<int64_t>(threads, count));
      EXPECT_EQ(ranges, expected);
      // One thread per range: the work is really spread (at::parallel_for
      // in a unit without -fopenmp ran every range on the caller).
      EXPECT_EQ(static_cast<int>(ids.size()), expected);
    }
  }
  ParallelFor(0, 4, [](int64_t, int64_t) { FAIL() << "no work, no call"; });
}

}  // namespace
}  // namespace ldmserve
