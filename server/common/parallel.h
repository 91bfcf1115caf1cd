// ParallelFor: plain threads for the project's own loops.
//
// at::parallel_for is a header template whose OpenMP pragma only takes
// effect in a unit compiled with -fopenmp; Debian's LibTorch exports no such
// flag, so in this project's units it ran every chunk on the calling thread
// (ldmbench's FMA peak read one core's rate on two cores). LibTorch's own
// kernels are unaffected: they are compiled inside LibTorch.
#ifndef LDMSERVE_SERVER_COMMON_PARALLEL_H_
#define LDMSERVE_SERVER_COMMON_PARALLEL_H_

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace ldmserve {

// `fn(begin, end)` over [0, count) in up to `threads` contiguous ranges of
// near-equal size, each on its own thread (the calling thread takes the
// first); returns when every range is done. `fn` must be safe to call
// concurrently on disjoint ranges.
template <typename Fn>
void ParallelFor(int64_t count, int threads, const Fn& fn) {
  if (count <= 0) return;
  const int64_t parts = std::clamp<int64_t>(threads, 1, count);
  auto range = [&](int64_t part) {
    return std::pair<int64_t, int64_t>(part * count / parts,
                                       (part + 1) * count / parts);
  };
  std::vector<std::thread> helpers;
  helpers.reserve(static_cast<size_t>(parts - 1));
  for (int64_t part = 1; part < parts; ++part) {
    helpers.emplace_back(
        [&fn, bounds = range(part)] { fn(bounds.first, bounds.second); });
  }
  const auto first = range(0);
  fn(first.first, first.second);
  for (std::thread& helper : helpers) helper.join();
}

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_COMMON_PARALLEL_H_
