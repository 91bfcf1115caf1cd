// The primitive layers every model here is built from. Each declares its
// parameters under the reference names ("weight", "bias") in the scope it is
// given; the registry then points into the layer, so layers are neither copied
// nor moved (hold them as members of heap-allocated blocks). Forward() is
// const and may run on several threads at once.
#ifndef LDMSERVE_SERVER_LDM_LAYERS_H_
#define LDMSERVE_SERVER_LDM_LAYERS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "server/ldm/parameters.h"

namespace ldm {

// Batch-invariant numerics: when on, every stage that batches jobs (the
// UNet, the autoencoder, the text encoder; and on the CPU, within them,
// convolutions and linear layers) computes each sample of a batch on its
// own, so a sample's result does not depend on what else shares its batch
// (oneDNN and BLAS pick other kernels and blockings for other batch sizes,
// and element-wise kernels split their work by the tensor's size: either
// moves results by ~1e-6). The scheduler relies on it for bit-identical
// results however jobs are batched. On CUDA, where a sample at a time
// costs 5x in throughput, the UNet call is instead padded to a fixed row
// bucket (UNetRunner) and cuDNN is held to deterministic algorithms: a
// sample's result does not depend on the rest of its bucket. Process-wide,
// like LibTorch's thread counts: set it once, before serving. Default off.
void SetBatchInvariant(bool on);
bool BatchInvariant();

// `fn(begin, end)` over rows [begin, end) of a batch of `rows`: once over
// all of them, or with BatchInvariant() once per row, the results
// concatenated along dim 0.
template <typename Fn>
at::Tensor ForEachRowIfInvariant(int64_t rows, Fn&& fn) {
  if (!BatchInvariant() || rows <= 1) return fn(0, rows);
  std::vector<at::Tensor> outputs;
  outputs.reserve(static_cast<size_t>(rows));
  for (int64_t row = 0; row < rows; ++row) outputs.push_back(fn(row, row + 1));
  return at::cat(outputs, 0);
}

// Floating-point operations of the matrix products and convolutions run
// while counting is on, 2 per multiply-add (element-wise work, norms and
// softmax are not counted: they are memory-bound). Benchmarks report speed
// as a fraction of the machine's peak with it. Process-wide; off by default,
// when it costs one relaxed atomic load per layer call.
void StartCountingFlops();
// Stops counting; returns the operations counted since the start.
int64_t StopCountingFlops();
// Adds `flops` while counting is on (layers call it; so do model blocks that
// multiply matrices themselves).
void CountFlops(int64_t flops);
// Everything CountFlops was given on this thread, counting on or off: a
// CUDA graph notes its capture's work and adds it again on each replay.
int64_t FlopsCountedOnThisThread();

// A low-rank update of a Linear or Conv2d weight W, applied at run time
// (LoRA): the layer computes W x + scale * up(down(x)), its weight never
// changed, so that one copy of a model serves jobs with and without
// adapters. `down` is [r, in] ([r, in, kh, kw] for a convolution) and `up`
// [out, r] ([out, r, 1, 1]), in the layer's device and dtype.
struct LowRankUpdate {
  at::Tensor down;
  at::Tensor up;
  double scale = 1.0;
};
// The updates of each layer, by the address of its weight tensor.
using LowRankUpdates =
    absl::flat_hash_map<const at::Tensor*, std::vector<LowRankUpdate>>;

// Whether layers run on this thread now add updates.
bool LowRankUpdatesActive();

// While alive, the layers run on this thread add `updates` (null: none);
// the previous set is restored after. The scheduler sets the batch's
// adapters around each call into a model.
class ScopedLowRankUpdates {
 public:
  explicit ScopedLowRankUpdates(const LowRankUpdates* updates);
  ~ScopedLowRankUpdates();
  ScopedLowRankUpdates(const ScopedLowRankUpdates&) = delete;
  ScopedLowRankUpdates& operator=(const ScopedLowRankUpdates&) = delete;

 private:
  const LowRankUpdates* previous_;
};

class Conv2d {
 public:
  // Not copyable: the parameter registry points into the layer.
  Conv2d(const Conv2d&) = delete;
  Conv2d& operator=(const Conv2d&) = delete;
  Conv2d(const ParamScope& scope, int64_t in_channels, int64_t out_channels,
         int64_t kernel, int64_t stride = 1, int64_t padding = 0);
  at::Tensor Forward(const at::Tensor& x) const;
  // Forward of `x` upsampled 2x (nearest), as the autoencoder's Upsample,
  // without making the upsampled tensor where the input is large.
  at::Tensor ForwardUpsampled2x(const at::Tensor& x) const;

 private:
  // Forward of `x` scaled up `scale` times (1 or 2, nearest).
  at::Tensor Convolve(const at::Tensor& x, int64_t scale) const;
  // The same convolution (stride 1, no adapters) a band of output rows at a
  // time, each from its input rows and the kernel's halo.
  at::Tensor ConvolveInBands(const at::Tensor& x, int64_t scale) const;

  at::Tensor weight_, bias_;
  int64_t stride_ = 1, padding_ = 0;
};

// Conv1d with kernel 1, as the reference's AttentionBlock `qkv`/`proj_out`.
class Conv1x1d {
 public:
  // Not copyable: the parameter registry points into the layer.
  Conv1x1d(const Conv1x1d&) = delete;
  Conv1x1d& operator=(const Conv1x1d&) = delete;
  Conv1x1d(const ParamScope& scope, int64_t in_channels, int64_t out_channels);
  at::Tensor Forward(const at::Tensor& x) const;  // x: [B, C, T]

 private:
  at::Tensor weight_, bias_;
};

class Linear {
 public:
  // Not copyable: the parameter registry points into the layer.
  Linear(const Linear&) = delete;
  Linear& operator=(const Linear&) = delete;
  Linear(const ParamScope& scope, int64_t in_features, int64_t out_features,
         bool bias = true);
  at::Tensor Forward(const at::Tensor& x) const;

 private:
  at::Tensor weight_, bias_;
};

// GroupNorm computed in float32 whatever the model's dtype (GroupNorm32 in
// the reference).
class GroupNorm {
 public:
  // Not copyable: the parameter registry points into the layer.
  GroupNorm(const GroupNorm&) = delete;
  GroupNorm& operator=(const GroupNorm&) = delete;
  GroupNorm(const ParamScope& scope, int64_t groups, int64_t channels,
            double eps);
  at::Tensor Forward(const at::Tensor& x) const;

 private:
  at::Tensor weight_, bias_;
  int64_t groups_ = 32;
  double eps_ = 1e-5;
};

class LayerNorm {
 public:
  // Not copyable: the parameter registry points into the layer.
  LayerNorm(const LayerNorm&) = delete;
  LayerNorm& operator=(const LayerNorm&) = delete;
  LayerNorm(const ParamScope& scope, int64_t features, double eps = 1e-5);
  at::Tensor Forward(const at::Tensor& x) const;

 private:
  at::Tensor weight_, bias_;
  int64_t features_ = 0;
  double eps_ = 1e-5;
};

class Embedding {
 public:
  // Not copyable: the parameter registry points into the layer.
  Embedding(const Embedding&) = delete;
  Embedding& operator=(const Embedding&) = delete;
  Embedding(const ParamScope& scope, int64_t count, int64_t dim);
  at::Tensor Forward(const at::Tensor& ids) const;

 private:
  at::Tensor weight_;
};

// Fused attention (at::scaled_dot_product_attention's flash and
// memory-efficient kernels) for tensors on CUDA, where this LibTorch has it
// (2.1 and later; FusedAttentionAvailable() says). Process-wide, on by
// default; benchmarks turn it off to measure its gain. The CPU always takes
// the chunked path below: it is what the golden parity sets and the
// batch-invariance promise were measured on.
void SetFusedAttention(bool on);
bool FusedAttentionAvailable();

// softmax(q k^T * scale + mask) v over [B*heads, T, d] tensors. `mask`, if
// given, is [Tq, Tk] and added to the scores (-inf hides a key). Fused on
// CUDA (above); otherwise AttentionInChunks with a 32M-element bound.
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v, double scale,
                     const at::Tensor& mask = {});
// The same in query chunks whose score matrices hold at most `max_scores`
// elements (B*heads * chunk * Tk), so memory stays bounded for long
// sequences: a 64x64 latent has 4096 tokens, a 128x128 one 16384, whose
// full score matrix would be 1 GiB per head.
at::Tensor AttentionInChunks(const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v, double scale,
                             const at::Tensor& mask, int64_t max_scores);

// [B, T, heads*d] -> [B*heads, T, d], head j taking features [j*d, (j+1)*d).
at::Tensor SplitHeads(const at::Tensor& x, int64_t heads);
// The inverse: [B*heads, T, d] -> [B, T, heads*d].
at::Tensor MergeHeads(const at::Tensor& x, int64_t heads);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_LAYERS_H_
