#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "server/ldm/layers.h"
#include "server/ldm/sampler.h"

namespace ldm {
namespace {

at::Tensor Random(at::IntArrayRef sizes, uint64_t seed) {
  at::Generator generator = MakeGenerator(seed);
  return StandardNormal(sizes, generator, at::TensorOptions());
}

// softmax(q k^T * scale + mask) v in double, in one piece: the definition.
at::Tensor Definition(const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, double scale,
                      const at::Tensor& mask) {
  at::Tensor scores =
      at::bmm(q.to(at::kDouble), k.to(at::kDouble).transpose(1, 2)) * scale;
  if (mask.defined()) scores = scores + mask.to(at::kDouble);
  return at::bmm(at::softmax(scores, -1), v.to(at::kDouble)).to(at::kFloat);
}

// Training differentiates through the pieces: gradients as the definition's
// (whole heads at once, one head in query chunks, and in one piece).
TEST(AttentionTest, PiecesAreDifferentiable) {
  const at::Tensor q0 = Random({4, 19, 8}, 11);
  const at::Tensor k0 = Random({4, 13, 8}, 12);
  const at::Tensor v0 = Random({4, 13, 8}, 13);
  const double scale = 1.0 / std::sqrt(8.0);
  auto gradients = [&](auto attend) {
    at::Tensor q = q0.clone().requires_grad_(true);
    at::Tensor k = k0.clone().requires_grad_(true);
    at::Tensor v = v0.clone().requires_grad_(true);
    // A weighted sum, so that every output element's gradient differs.
    (attend(q, k, v) * at::arange(4 * 19 * 8).reshape({4, 19, 8}).sin())
        .sum()
        .backward();
    return std::vector<at::Tensor>{q.grad(), k.grad(), v.grad()};
  };
  const auto expected = gradients([&](auto& q, auto& k, auto& v) {
    at::Tensor scores = at::bmm(q, k.transpose(1, 2)) * scale;
    return at::bmm(at::softmax(scores, -1), v);
  });
  for (int64_t max_scores :
       {int64_t{13} * 5, int64_t{19} * 13 * 2, int64_t{19} * 13 * 4}) {
    const auto actual = gradients([&](auto& q, auto& k, auto& v) {
      return AttentionInChunks(q, k, v, scale, {}, max_scores);
    });
    for (size_t i = 0; i < actual.size(); ++i) {
      ASSERT_TRUE(actual[i].defined()) << max_scores;
      EXPECT_TRUE(at::allclose(actual[i], expected[i], 1e-4, 1e-5))
          << max_scores << " input " << i;
    }
  }
}

TEST(AttentionTest, ChunksAgreeWithTheWholeScoreMatrix) {
  const at::Tensor q = Random({6, 37, 8}, 1);
  const at::Tensor k = Random({6, 23, 8}, 2);
  const at::Tensor v = Random({6, 23, 8}, 3);
  const double scale = 1.0 / std::sqrt(8.0);
  // A causal-style mask (-inf above the diagonal), as CLIP uses.
  const at::Tensor mask =
      at::full({37, 23}, -std::numeric_limits<float>::infinity()).triu(1);
  for (const at::Tensor& m : {at::Tensor(), mask}) {
    const at::Tensor expected = Definition(q, k, v, scale, m);
    // 6 * 23 scores a query: bounds of 1 query, 5 (a ragged last chunk) and
    // all 37 at once.
    for (int64_t max_scores :
         {int64_t{1}, int64_t{6} * 23 * 5, int64_t{6} * 23 * 37}) {
      const at::Tensor chunked =
          AttentionInChunks(q, k, v, scale, m, max_scores);
      ASSERT_EQ(chunked.sizes(), expected.sizes());
      EXPECT_LT((chunked - expected).abs().max().item<double>(), 1e-5)
          << "max_scores " << max_scores << (m.defined() ? " masked" : "");
    }
  }
}

TEST(AttentionTest, TheCpuTakesTheChunkedPathBitForBit) {
  const at::Tensor q = Random({4, 300, 16}, 4);
  const at::Tensor k = Random({4, 300, 16}, 5);
  const at::Tensor v = Random({4, 300, 16}, 6);
  // A process's first matrix products may round differently (1 ulp seen)
  // from its later ones, whatever path calls them: compare warm calls.
  (void)AttentionInChunks(q, k, v, 0.25, {}, int64_t{1} << 25);
  EXPECT_TRUE(
      at::equal(Attention(q, k, v, 0.25),
                AttentionInChunks(q, k, v, 0.25, {}, int64_t{1} << 25)));
}

// Where this LibTorch has fused attention and a GPU is present: it agrees
// with the chunked path on the same device within float16's rounding.
TEST(AttentionTest, FusedAttentionOnCudaAgreesWithTheChunkedPath) {
  if (!FusedAttentionAvailable() || !at::hasCUDA()) {
    GTEST_SKIP() << "needs LibTorch >= 2.1 with CUDA and a GPU";
  }
  const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
  const at::Tensor q = Random({16, 1024, 40}, 7).to(options);
  const at::Tensor k = Random({16, 77, 40}, 8).to(options);
  const at::Tensor v = Random({16, 77, 40}, 9).to(options);
  const double scale = 1.0 / std::sqrt(40.0);
  const at::Tensor fused = Attention(q, k, v, scale).to(at::kFloat);
  const at::Tensor chunked =
      AttentionInChunks(q, k, v, scale, {}, int64_t{1} << 25).to(at::kFloat);
  // Outputs are convex combinations of v (|v| ~ 1): float16 keeps ~3
  // decimal digits.
  EXPECT_LT((fused - chunked).abs().max().item<double>(), 1e-2);
}

}  // namespace
}  // namespace ldm
