// How a denoising step's UNet call runs. On the CPU: as given, each row
// alone under BatchInvariant() (what the golden parity sets and the CPU's
// bit-identity promise rest on). On CUDA: padded up to a row bucket, so
// that the kernels (picked by shape) are the same whatever shares the
// batch, and replayed from a CUDA graph captured once per shape, which
// removes the host's per-kernel launch cost (about a thousand kernels per
// SD v1 UNet call).
#ifndef LDMSERVE_SERVER_LDM_UNET_RUNNER_H_
#define LDMSERVE_SERVER_LDM_UNET_RUNNER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/ldm/unet.h"

namespace ldm {

// CUDA graphs for the UNet call where this build's LibTorch has them
// (CudaGraphsAvailable()). Process-wide, on by default; benchmarks turn
// them off to measure their gain.
void SetCudaGraphs(bool on);
bool CudaGraphsAvailable();

// The rows a UNet call of `rows` is padded to on CUDA: 1, 2, 3, 4, then
// 6, 8, 12, 16, 24, 32, ... (powers of two and 1.5 times them), so at most
// a third of a call is padding and a few shapes cover every batch.
int64_t RowBucket(int64_t rows);

// One UNet call's inputs, as UNetModel::Forward takes them.
struct UNetInputs {
  at::Tensor x;             // [B, C, h, w]
  at::Tensor timesteps;     // [B]
  at::Tensor context;       // [B, L, D] or undefined
  at::Tensor class_labels;  // [B] int64 or undefined
};

// Runs one model's UNet calls (the denoiser owns one). Thread-safe; on
// CUDA the graphed calls of one runner take turns (they share static
// buffers), each enqueued on the calling thread's current stream.
class UNetRunner {
 public:
  explicit UNetRunner(const UNetModel& unet);
  ~UNetRunner();
  UNetRunner(const UNetRunner&) = delete;
  UNetRunner& operator=(const UNetRunner&) = delete;

  // The UNet over `inputs`. CUDA: padded to RowBucket rows when graphs are
  // on or BatchInvariant() is, and replayed from a graph when graphs are on
  // and no low-rank adapters are active (a graph holds the weights it was
  // captured with); a capture that fails turns this runner's graphs off
  // (graph_error() says why) and the call runs eagerly.
  at::Tensor Run(const UNetInputs& inputs) const;

  // `inputs` padded with zero rows to `rows` (>= theirs), run eagerly,
  // and the padding's results dropped.
  at::Tensor RunPadded(const UNetInputs& inputs, int64_t rows) const;

  // Graphs captured so far, one per (input, context and label shapes,
  // dtype, row bucket).
  int64_t captured_graphs() const;
  // Why a capture failed; OK while none has.
  absl::Status graph_error() const;

 private:
  struct Graphs;  // CUDA graphs and their static buffers (unet_runner.cc).

  at::Tensor Replay(const UNetInputs& inputs, int64_t bucket) const;

  const UNetModel& unet_;
  mutable absl::Mutex mu_;
  std::unique_ptr<Graphs> graphs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_UNET_RUNNER_H_
