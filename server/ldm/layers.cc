#include "server/ldm/layers.h"

#include <ATen/core/grad_mode.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <atomic>

// at::scaled_dot_product_attention takes `scale` from LibTorch 2.1 on.
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define LDMSERVE_HAS_SDPA 1
#else
#define LDMSERVE_HAS_SDPA 0
#endif

namespace ldm {
namespace {

std::atomic<bool> batch_invariant{false};
std::atomic<bool> fused_attention{true};
std::atomic<bool> counting_flops{false};
std::atomic<int64_t> counted_flops{0};
thread_local int64_t flops_on_this_thread = 0;

// Layers split a batch into samples on the CPU only (BatchInvariant()).
bool SampleBySample(const at::Tensor& x) {
  return BatchInvariant() && x.is_cpu();
}

// `fn` over each sample of `x` (dim 0) alone, results concatenated.
template <typename Fn>
at::Tensor PerSample(const at::Tensor& x, Fn&& fn) {
  if (x.size(0) <= 1) return fn(x);
  std::vector<at::Tensor> outputs;
  outputs.reserve(x.size(0));
  for (int64_t i = 0; i < x.size(0); ++i) {
    outputs.push_back(fn(x.slice(0, i, i + 1)));
  }
  return at::cat(outputs, 0);
}

// CPU convolutions whose (upsampled) input has at least this many bytes run
// in bands of rows: LibTorch's oneDNN path copies its whole input and output
// into a blocked layout, two more full-size tensors alive at once (3 x 256
// MiB at the peak of an SD 512x512 decode).
constexpr int64_t kBandedConvolutionBytes = int64_t{64} << 20;
// About the input bytes of one band.
constexpr int64_t kBandBytes = int64_t{16} << 20;

// The adapters of the call this thread is in (ScopedLowRankUpdates).
thread_local const LowRankUpdates* active_updates = nullptr;

// The updates of the layer whose weight is `weight`, or null.
const std::vector<LowRankUpdate>* ActiveUpdatesOf(const at::Tensor* weight) {
  if (active_updates == nullptr) return nullptr;
  auto found = active_updates->find(weight);
  return found == active_updates->end() ? nullptr : &found->second;
}

}  // namespace

ScopedLowRankUpdates::ScopedLowRankUpdates(const LowRankUpdates* updates)
    : previous_(active_updates) {
  active_updates = updates;
}

ScopedLowRankUpdates::~ScopedLowRankUpdates() { active_updates = previous_; }

void SetBatchInvariant(bool on) {
  batch_invariant.store(on);
  at::globalContext().setDeterministicCuDNN(on);
}
bool BatchInvariant() { return batch_invariant.load(); }
void SetFusedAttention(bool on) { fused_attention.store(on); }

void StartCountingFlops() {
  counted_flops.store(0);
  counting_flops.store(true);
}

int64_t StopCountingFlops() {
  counting_flops.store(false);
  return counted_flops.load();
}

void CountFlops(int64_t flops) {
  flops_on_this_thread += flops;
  if (counting_flops.load(std::memory_order_relaxed)) {
    counted_flops.fetch_add(flops, std::memory_order_relaxed);
  }
}
int64_t FlopsCountedOnThisThread() { return flops_on_this_thread; }

bool LowRankUpdatesActive() {
  return active_updates != nullptr && !active_updates->empty();
}

bool FusedAttentionAvailable() { return LDMSERVE_HAS_SDPA != 0; }

Conv2d::Conv2d(const ParamScope& scope, int64_t in_channels,
               int64_t out_channels, int64_t kernel, int64_t stride,
               int64_t padding)
    : stride_(stride), padding_(padding) {
  scope.Declare("weight", {out_channels, in_channels, kernel, kernel},
                &weight_);
  scope.Declare("bias", {out_channels}, &bias_);
}

at::Tensor Conv2d::Forward(const at::Tensor& x) const {
  return Convolve(x, /*scale=*/1);
}

at::Tensor Conv2d::ForwardUpsampled2x(const at::Tensor& x) const {
  return Convolve(x, /*scale=*/2);
}

at::Tensor Conv2d::Convolve(const at::Tensor& x, int64_t scale) const {
  const std::vector<LowRankUpdate>* updates = ActiveUpdatesOf(&weight_);
  auto conv = [&](const at::Tensor& small_input) {
    if (updates == nullptr && stride_ == 1 && small_input.is_cpu() &&
        small_input.numel() * scale * scale * small_input.element_size() >=
            kBandedConvolutionBytes) {
      return ConvolveInBands(small_input, scale);
    }
    const at::Tensor input =
        scale == 1 ? small_input
                   : at::upsample_nearest2d(small_input,
                                            {small_input.size(2) * scale,
                                             small_input.size(3) * scale});
    at::Tensor out = at::conv2d(input, weight_, bias_, {stride_, stride_},
                                {padding_, padding_});
    if (updates == nullptr) return out;
    for (const LowRankUpdate& update : *updates) {
      const at::Tensor low = at::conv2d(
          input, update.down, {}, {stride_, stride_}, {padding_, padding_});
      out.add_(at::conv2d(low, update.up), update.scale);
    }
    return out;
  };
  at::Tensor out = SampleBySample(x) ? PerSample(x, conv) : conv(x);
  // Each output element: in_channels * k * k multiply-adds.
  CountFlops(2 * out.numel() * weight_.size(1) * weight_.size(2) *
             weight_.size(3));
  return out;
}

at::Tensor Conv2d::ConvolveInBands(const at::Tensor& x, int64_t scale) const {
  const int64_t kernel_height = weight_.size(2);
  const int64_t height = x.size(2) * scale, width = x.size(3) * scale;
  const int64_t out_height = height + 2 * padding_ - kernel_height + 1;
  const int64_t out_width = width + 2 * padding_ - weight_.size(3) + 1;
  const int64_t row_bytes = x.size(0) * x.size(1) * width * x.element_size();
  const int64_t band_rows = std::max<int64_t>(1, kBandBytes / row_bytes);
  at::Tensor out = at::empty(
      {x.size(0), weight_.size(0), out_height, out_width}, x.options());
  for (int64_t first = 0; first < out_height; first += band_rows) {
    const int64_t last = std::min(out_height, first + band_rows);
    // Output row r reads input rows r - padding to r - padding + kernel - 1;
    // rows outside the input are the zero padding.
    const int64_t begin = first - padding_;
    const int64_t end = last - padding_ + kernel_height - 1;
    const int64_t read_begin = std::max<int64_t>(0, begin);
    const int64_t read_end = std::min(height, end);
    at::Tensor rows;
    if (scale == 1) {
      rows = x.slice(2, read_begin, read_end);
    } else {
      // Nearest upsampling copies row i / scale: upsampling the rows that
      // cover the band gives exactly the band of the upsampled input.
      const int64_t small_begin = read_begin / scale;
      const int64_t small_end = (read_end + scale - 1) / scale;
      rows = at::upsample_nearest2d(x.slice(2, small_begin, small_end),
                                    {(small_end - small_begin) * scale, width})
                 .slice(2, read_begin - small_begin * scale,
                        read_end - small_begin * scale);
    }
    if (read_begin > begin || read_end < end) {
      rows = at::constant_pad_nd(rows,
                                 {0, 0, read_begin - begin, end - read_end}, 0);
    }
    const std::array<int64_t, 2> stride = {1, 1}, padding = {0, padding_};
    out.slice(2, first, last)
        .copy_(at::conv2d(rows, weight_, bias_, stride, padding));
  }
  return out;
}

Conv1x1d::Conv1x1d(const ParamScope& scope, int64_t in_channels,
                   int64_t out_channels) {
  scope.Declare("weight", {out_channels, in_channels, 1}, &weight_);
  scope.Declare("bias", {out_channels}, &bias_);
}

at::Tensor Conv1x1d::Forward(const at::Tensor& x) const {
  auto conv = [&](const at::Tensor& input) {
    return at::conv1d(input, weight_, bias_);
  };
  CountFlops(2 * x.size(0) * x.size(2) * weight_.size(0) * weight_.size(1));
  return SampleBySample(x) ? PerSample(x, conv) : conv(x);
}

Linear::Linear(const ParamScope& scope, int64_t in_features,
               int64_t out_features, bool bias) {
  scope.Declare("weight", {out_features, in_features}, &weight_);
  if (bias) scope.Declare("bias", {out_features}, &bias_);
}

at::Tensor Linear::Forward(const at::Tensor& x) const {
  const std::vector<LowRankUpdate>* updates = ActiveUpdatesOf(&weight_);
  auto linear = [&](const at::Tensor& input) {
    at::Tensor out = at::linear(input, weight_, bias_);
    if (updates == nullptr) return out;
    for (const LowRankUpdate& update : *updates) {
      out.add_(at::linear(at::linear(input, update.down), update.up),
               update.scale);
    }
    return out;
  };
  // Rows of x times the weight's multiply-adds.
  CountFlops(2 * (x.numel() / x.size(-1)) * weight_.numel());
  // Dim 0 is the batch (for a 2-D input each row is a sample).
  return SampleBySample(x) ? PerSample(x, linear) : linear(x);
}

GroupNorm::GroupNorm(const ParamScope& scope, int64_t groups, int64_t channels,
                     double eps)
    : groups_(groups), eps_(eps) {
  scope.Declare("weight", {channels}, &weight_, ParameterRegistry::Init::kOnes);
  scope.Declare("bias", {channels}, &bias_, ParameterRegistry::Init::kZeros);
}

at::Tensor GroupNorm::Forward(const at::Tensor& x) const {
  if (x.scalar_type() == at::kFloat) {
    return at::group_norm(x, groups_, weight_, bias_, eps_);
  }
  return at::group_norm(x.to(at::kFloat), groups_, weight_.to(at::kFloat),
                        bias_.to(at::kFloat), eps_)
      .to(x.scalar_type());
}

LayerNorm::LayerNorm(const ParamScope& scope, int64_t features, double eps)
    : features_(features), eps_(eps) {
  scope.Declare("weight", {features}, &weight_, ParameterRegistry::Init::kOnes);
  scope.Declare("bias", {features}, &bias_, ParameterRegistry::Init::kZeros);
}

at::Tensor LayerNorm::Forward(const at::Tensor& x) const {
  return at::layer_norm(x, {features_}, weight_, bias_, eps_);
}

Embedding::Embedding(const ParamScope& scope, int64_t count, int64_t dim) {
  scope.Declare("weight", {count, dim}, &weight_);
}

at::Tensor Embedding::Forward(const at::Tensor& ids) const {
  return at::embedding(weight_, ids);
}

at::Tensor SplitHeads(const at::Tensor& x, int64_t heads) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2) / heads;
  return x.reshape({b, t, heads, d})
      .permute({0, 2, 1, 3})
      .reshape({b * heads, t, d});
}

at::Tensor MergeHeads(const at::Tensor& x, int64_t heads) {
  const int64_t b = x.size(0) / heads, t = x.size(1), d = x.size(2);
  return x.reshape({b, heads, t, d})
      .permute({0, 2, 1, 3})
      .reshape({b, t, heads * d});
}

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v, double scale,
                     const at::Tensor& mask) {
  // q k^T and the weighted sum of v.
  CountFlops(int64_t{4} * q.size(0) * q.size(1) * k.size(1) * q.size(2));
#if LDMSERVE_HAS_SDPA
  if (q.is_cuda() && fused_attention.load()) {
    // [B*heads, T, d] as one batch of B*heads heads: the layout the flash
    // and memory-efficient kernels take.
    c10::optional<at::Tensor> bias;
    if (mask.defined()) bias = mask.to(q.scalar_type());
    return at::scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0),
                                            v.unsqueeze(0), bias,
                                            /*dropout_p=*/0.0,
                                            /*is_causal=*/false, scale)
        .squeeze(0);
  }
#endif
  // Each piece's score matrix at most 2M elements (8 MiB in f32).
  return AttentionInChunks(q, k, v, scale, mask, int64_t{1} << 21);
}

at::Tensor AttentionInChunks(const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v, double scale,
                             const at::Tensor& mask, int64_t max_scores) {
  const int64_t batch = q.size(0), queries = q.size(1), keys = k.size(1);
  // Pieces of whole heads (every query) where a head's scores fit the
  // bound, else of one head's queries: score matrices small enough to stay
  // in cache from the product through the softmax to the weighted sum.
  const int64_t per_head = std::max<int64_t>(1, queries * keys);
  const int64_t heads = std::clamp<int64_t>(max_scores / per_head, 1, batch);
  const int64_t chunk =
      heads > 1 ? queries
                : std::clamp<int64_t>(max_scores / std::max<int64_t>(1, keys),
                                      1, std::max<int64_t>(1, queries));
  // Training differentiates through here, and out= kernels have no
  // gradient: then the pieces are computed functionally and joined.
  const bool differentiable =
      at::GradMode::is_enabled() &&
      (q.requires_grad() || k.requires_grad() || v.requires_grad());
  at::Tensor out = differentiable
                       ? at::Tensor()
                       : at::empty({batch, queries, v.size(2)}, q.options());
  std::vector<at::Tensor> head_outputs;
  for (int64_t head = 0; head < batch; head += heads) {
    const int64_t head_end = std::min(batch, head + heads);
    const at::Tensor k_t = k.slice(0, head, head_end).transpose(1, 2);
    const at::Tensor v_part = v.slice(0, head, head_end);
    std::vector<at::Tensor> query_outputs;
    for (int64_t start = 0; start < queries; start += chunk) {
      const int64_t end = std::min(queries, start + chunk);
      const at::Tensor q_part = q.slice(0, head, head_end).slice(1, start, end);
      // beta = 0 makes the BLAS ignore the output's old contents, but
      // LibTorch 1.13's own kernel for small products computes 0 * old, and
      // the functional baddbmm hands it uninitialised memory (NaN now and
      // then: seen in AttentionTest). So: in place, into zeros where the
      // product is small; big ones take the BLAS and skip the memset.
      const std::vector<int64_t> sizes = {head_end - head, end - start, keys};
      const bool small = (end - start) * keys * q.size(2) < 65536;
      at::Tensor scores =
          small ? at::zeros(sizes, q.options()) : at::empty(sizes, q.options());
      scores.baddbmm_(q_part, k_t, /*beta=*/0, /*alpha=*/scale);
      if (mask.defined()) scores.add_(mask.slice(0, start, end));
      if (differentiable) {
        query_outputs.push_back(at::bmm(at::softmax(scores, -1), v_part));
        continue;
      }
      if (scores.is_cpu()) {
        at::softmax_out(scores, scores, -1);
      } else {
        scores = at::softmax(scores, -1);
      }
      at::Tensor rows = out.slice(0, head, head_end).slice(1, start, end);
      at::bmm_out(rows, scores, v_part);
    }
    if (differentiable) head_outputs.push_back(at::cat(query_outputs, 1));
  }
  return differentiable ? at::cat(head_outputs, 0) : out;
}

}  // namespace ldm
