#include "bench/machine_peak.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>

#include "server/common/parallel.h"

namespace ldmbench {
namespace {

// 12 independent accumulators: an FMA's latency (4-5 cycles) times two
// units needs at least 10 in flight.
constexpr int kChains = 12;

// acc = acc * a + b converges to b / (1 - a) = 1: no overflow, no
// denormals, and the compiler cannot fold the loop away.
__attribute__((target("avx512f"))) float FmaLoopAvx512(int64_t iterations) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(0.5f + 0.01f * c);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
  for (int64_t i = 0; i < iterations; ++i) {
    // Unrolled, so the accumulators live in registers, not on the stack.
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) float FmaLoopAvx2(int64_t iterations) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(0.5f + 0.01f * c);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
  for (int64_t i = 0; i < iterations; ++i) {
    // Unrolled, so the accumulators live in registers, not on the stack.
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  }
  __m256 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm256_add_ps(sum, acc[c]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  float total = 0;
  for (float lane : lanes) total += lane;
  return total;
}

// GFLOP/s of `loop` (floats per vector `width`) on every intra-op thread at
// once, over about `seconds`.
template <typename Loop>
double TimeOnAllThreads(Loop loop, int width, double seconds) {
  const int threads = at::get_num_threads();
  // Calibrate on one thread: iterations for about `seconds`.
  int64_t iterations = 1 << 16;
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    volatile float sink = loop(iterations);
    (void)sink;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    if (elapsed > seconds / 4) {
      iterations = static_cast<int64_t>(iterations * seconds / elapsed);
      break;
    }
    iterations *= 4;
  }
  std::atomic<float> sink{0};
  const auto start = std::chrono::steady_clock::now();
  // Each loop on its own thread (server/common/parallel.h says why not
  // at::parallel_for).
  ldmserve::ParallelFor(threads, threads, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      sink.store(loop(iterations), std::memory_order_relaxed);
    }
  });
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  const double flops =
      2.0 * kChains * width * static_cast<double>(iterations) * threads;
  return flops / elapsed / 1e9;
}

}  // namespace

FmaPeak MeasureFmaPeak(double seconds) {
  FmaPeak peak;
  peak.threads = at::get_num_threads();
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    peak.gflops = TimeOnAllThreads(FmaLoopAvx2, 8, seconds);
    peak.isa = "avx2";
  }
  // Some CPUs run 512-bit FMAs at half rate or lower clocks: the faster of
  // the two is the peak.
  if (__builtin_cpu_supports("avx512f")) {
    const double wide = TimeOnAllThreads(FmaLoopAvx512, 16, seconds);
    if (wide > peak.gflops) {
      peak.gflops = wide;
      peak.isa = "avx512f";
    }
  }
  return peak;
}

double MeasureGemmGflops(int n, int repeats, const at::TensorOptions& options) {
  const at::Tensor a = at::randn({n, n}, options);
  const at::Tensor b = at::randn({n, n}, options);
  // A device's products are queued: several per timing, then one read back
  // (of one element, so the read costs nothing beside them).
  const int products = options.device().is_cuda() ? 10 : 1;
  auto run = [&] {
    at::Tensor c;
    for (int i = 0; i < products; ++i) c = at::mm(a, b);
    (void)c[0][0].item<float>();
  };
  run();  // Warm-up.
  double best = 0;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    best = std::max(
        best, 2.0 * n * n * static_cast<double>(n) * products / elapsed / 1e9);
  }
  return best;
}

}  // namespace ldmbench
