// The primitive layers every model here is built from. Each declares its
// parameters under the reference names ("weight", "bias") in the scope it is
// given; the registry then points into the layer, so layers are neither copied
// nor moved (hold them as members of heap-allocated blocks). Forward() is
// const and may run on several threads at once.
#ifndef LDMSERVE_SERVER_LDM_LAYERS_H_
#define LDMSERVE_SERVER_LDM_LAYERS_H_

#include <ATen/ATen.h>

#include <cstdint>

#include "server/ldm/parameters.h"

namespace ldm {

// Batch-invariant numerics: when on, convolutions and linear layers compute
// every sample of a batch on its own, so a sample's result does not depend
// on what else shares its batch (oneDNN and BLAS pick other kernels and
// blockings for other batch sizes, which moves results by ~1e-6). The
// scheduler relies on it for bit-identical results however jobs are
// batched. Process-wide, like LibTorch's thread counts: set it once, before
// serving. Default off.
void SetBatchInvariant(bool on);
bool BatchInvariant();

class Conv2d {
 public:
  // Not copyable: the parameter registry points into the layer.
  Conv2d(const Conv2d&) = delete;
  Conv2d& operator=(const Conv2d&) = delete;
  Conv2d(const ParamScope& scope, int64_t in_channels, int64_t out_channels,
         int64_t kernel, int64_t stride = 1, int64_t padding = 0);
  at::Tensor Forward(const at::Tensor& x) const;

 private:
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

// softmax(q k^T * scale + mask) v over [B*heads, T, d] tensors, in query
// chunks so that memory stays bounded for long sequences (a 64x64 latent has
// 4096 tokens: the full score matrix per head would be 64 MiB). `mask`, if
// given, is [Tq, Tk] and added to the scores (-inf hides a key).
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v, double scale,
                     const at::Tensor& mask = {});

// [B, T, heads*d] -> [B*heads, T, d], head j taking features [j*d, (j+1)*d).
at::Tensor SplitHeads(const at::Tensor& x, int64_t heads);
// The inverse: [B*heads, T, d] -> [B, T, heads*d].
at::Tensor MergeHeads(const at::Tensor& x, int64_t heads);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_LAYERS_H_
