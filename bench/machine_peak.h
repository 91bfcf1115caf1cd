// The machine's own arithmetic peak, measured in the benchmark's run, so
// that model figures can be read as a fraction of what the cores can do
// (times alone wander with a shared machine's load; a fraction measured
// beside them does not).
#ifndef LDMSERVE_BENCH_MACHINE_PEAK_H_
#define LDMSERVE_BENCH_MACHINE_PEAK_H_

#include <ATen/ATen.h>

#include <string>

namespace ldmbench {

struct FmaPeak {
  double gflops = 0;  // float32 FLOP/s / 1e9, 2 per fused multiply-add.
  std::string isa;    // The widest vector unit used: "avx512f", "avx2", ...
  int threads = 0;
};

// Runs independent chains of float32 FMAs (enough to cover the units'
// latency) on each of LibTorch's intra-op threads for about `seconds`, with
// the widest vectors this CPU has.
FmaPeak MeasureFmaPeak(double seconds = 0.5);

// float32 GEMM (at::mm of two n x n matrices) in GFLOP/s: what the BLAS
// reaches, the practical ceiling of the model's matrix work. `options`
// picks another device and dtype (on CUDA: the f16/bf16 tensor-core rate,
// each repeat timing 10 products and one synchronisation).
double MeasureGemmGflops(int n = 2048, int repeats = 3,
                         const at::TensorOptions& options = {});

}  // namespace ldmbench

#endif  // LDMSERVE_BENCH_MACHINE_PEAK_H_
