#include "server/ldm/unet_runner.h"

#include <torch/version.h>

#include <atomic>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/ldm/layers.h"

#if defined(LDMSERVE_WITH_CUDA_GRAPHS)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ldm {
namespace {

std::atomic<bool> cuda_graphs{true};

// Rows [begin, end) of each defined input.
UNetInputs RowsOf(const UNetInputs& inputs, int64_t begin, int64_t end) {
  auto rows = [&](const at::Tensor& t) {
    return t.defined() ? t.slice(0, begin, end) : t;
  };
  return {rows(inputs.x), rows(inputs.timesteps), rows(inputs.context),
          rows(inputs.class_labels)};
}

// Zeros of `rows` rows shaped and typed like each defined input.
UNetInputs ZeroRowsLike(const UNetInputs& inputs, int64_t rows) {
  auto zeros = [&](const at::Tensor& t) {
    if (!t.defined()) return t;
    std::vector<int64_t> sizes = t.sizes().vec();
    sizes[0] = rows;
    return at::zeros(sizes, t.options());
  };
  return {zeros(inputs.x), zeros(inputs.timesteps), zeros(inputs.context),
          zeros(inputs.class_labels)};
}

// Copies `inputs` into the first rows of `into` and zeroes the rest.
void FillRows(const UNetInputs& inputs, const UNetInputs& into) {
  auto fill = [](const at::Tensor& from, const at::Tensor& to) {
    if (!from.defined()) return;
    const int64_t rows = from.size(0);
    to.slice(0, 0, rows).copy_(from);
    if (rows < to.size(0)) to.slice(0, rows).zero_();
  };
  fill(inputs.x, into.x);
  fill(inputs.timesteps, into.timesteps);
  fill(inputs.context, into.context);
  fill(inputs.class_labels, into.class_labels);
}

at::Tensor Forward(const UNetModel& unet, const UNetInputs& inputs) {
  return unet.Forward(inputs.x, inputs.timesteps, inputs.context,
                      inputs.class_labels);
}

// One captured call: static inputs (filled before each replay), the
// output the replay writes, and the FLOPs its capture counted (a replay
// runs no layer code, so it adds them itself).
struct CapturedCall {
  UNetInputs inputs;
  at::Tensor output;
  int64_t flops = 0;
#if defined(LDMSERVE_WITH_CUDA_GRAPHS)
  std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
};

}  // namespace

void SetCudaGraphs(bool on) { cuda_graphs.store(on); }

bool CudaGraphsAvailable() {
#if defined(LDMSERVE_WITH_CUDA_GRAPHS)
  return true;
#else
  return false;
#endif
}

int64_t RowBucket(int64_t rows) {
  if (rows <= 4) return rows;
  int64_t power = 4;
  while (true) {
    if (rows <= power + power / 2) return power + power / 2;
    if (rows <= 2 * power) return 2 * power;
    power *= 2;
  }
}

struct UNetRunner::Graphs {
  absl::flat_hash_map<std::string, std::unique_ptr<CapturedCall>> calls;
  absl::Status error;
#if defined(LDMSERVE_WITH_CUDA_GRAPHS)
  // One memory pool for every graph of the runner: calls take turns and
  // each output is copied out before the next replay, so a graph's
  // activations may reuse another's.
  bool has_pool = false;
  // (The pool id's type moved from c10::cuda to c10 in LibTorch 2.x.)
  decltype(at::cuda::graph_pool_handle()) pool;
#endif
};

UNetRunner::UNetRunner(const UNetModel& unet)
    : unet_(unet), graphs_(std::make_unique<Graphs>()) {}

UNetRunner::~UNetRunner() = default;

at::Tensor UNetRunner::Run(const UNetInputs& inputs) const {
  const int64_t rows = inputs.x.size(0);
  if (!inputs.x.is_cuda()) {
    return ForEachRowIfInvariant(rows, [&](int64_t begin, int64_t end) {
      return Forward(unet_, RowsOf(inputs, begin, end));
    });
  }
  const bool graphed =
      CudaGraphsAvailable() && cuda_graphs.load() && !LowRankUpdatesActive();
  if (graphed) return Replay(inputs, RowBucket(rows));
  if (BatchInvariant()) return RunPadded(inputs, RowBucket(rows));
  return Forward(unet_, inputs);
}

at::Tensor UNetRunner::RunPadded(const UNetInputs& inputs, int64_t rows) const {
  const int64_t given = inputs.x.size(0);
  if (rows <= given) return Forward(unet_, inputs);
  const UNetInputs padded = ZeroRowsLike(inputs, rows);
  FillRows(inputs, padded);
  return Forward(unet_, padded).slice(0, 0, given);
}

int64_t UNetRunner::captured_graphs() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(graphs_->calls.size());
}

absl::Status UNetRunner::graph_error() const {
  absl::MutexLock lock(&mu_);
  return graphs_->error;
}

at::Tensor UNetRunner::Replay(const UNetInputs& inputs, int64_t bucket) const {
#if defined(LDMSERVE_WITH_CUDA_GRAPHS)
  auto shape = [](const at::Tensor& t) {
    return t.defined() ? absl::StrCat(absl::StrJoin(t.sizes().slice(1), "x"),
                                      ":", c10::toString(t.scalar_type()))
                       : std::string("-");
  };
  const std::string key =
      absl::StrCat(bucket, " ", shape(inputs.x), " ", shape(inputs.context),
                   " ", shape(inputs.class_labels), " ",
                   c10::toString(inputs.timesteps.scalar_type()));
  const c10::DeviceIndex device = inputs.x.device().index();
  const c10::cuda::CUDAGuard device_guard(device);
  absl::MutexLock lock(&mu_);
  // A failed capture turned this runner's graphs off.
  if (!graphs_->error.ok()) return RunPadded(inputs, bucket);
  auto found = graphs_->calls.find(key);
  if (found == graphs_->calls.end()) {
    auto call = std::make_unique<CapturedCall>();
    call->inputs = ZeroRowsLike(inputs, bucket);
    try {
      // Captured on a side stream (the default stream cannot be), after a
      // warm-up there that does the lazy set-up a capture may not (cuBLAS
      // workspaces of that stream, cuDNN plans).
      c10::cuda::getCurrentCUDAStream(device).synchronize();
      const c10::cuda::CUDAStream side =
          c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device);
      {
        const c10::cuda::CUDAStreamGuard stream_guard(side);
        (void)Forward(unet_, call->inputs);
        side.synchronize();
        if (!graphs_->has_pool) {
          graphs_->pool = at::cuda::graph_pool_handle();
          graphs_->has_pool = true;
        }
        call->graph = std::make_unique<at::cuda::CUDAGraph>();
        const int64_t flops_before = FlopsCountedOnThisThread();
#if TORCH_VERSION_MAJOR >= 2
        // Thread-local: other threads' CUDA calls (a memory scrape, another
        // model's decode) neither fail nor spoil this capture.
        call->graph->capture_begin(graphs_->pool,
                                   cudaStreamCaptureModeThreadLocal);
#else
        call->graph->capture_begin(graphs_->pool);
#endif
        call->output = Forward(unet_, call->inputs);
        call->graph->capture_end();
        call->flops = FlopsCountedOnThisThread() - flops_before;
      }
      side.synchronize();
    } catch (const c10::Error& e) {
      graphs_->error = absl::InternalError(absl::StrCat(
          "CUDA graph capture of the UNet call (", key,
          ") failed, graphs off for this model: ", e.what_without_backtrace()));
      return RunPadded(inputs, bucket);
    }
    found = graphs_->calls.emplace(key, std::move(call)).first;
  }
  CapturedCall& call = *found->second;
  FillRows(inputs, call.inputs);
  call.graph->replay();
  CountFlops(call.flops);
  // A copy: the next replay overwrites the graph's output.
  return call.output.slice(0, 0, inputs.x.size(0)).clone();
#else
  (void)bucket;
  return Forward(unet_, inputs);
#endif
}

}  // namespace ldm
