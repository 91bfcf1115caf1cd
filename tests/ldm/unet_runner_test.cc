#include "server/ldm/unet_runner.h"

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <memory>
#include <set>

#include "server/ldm/latent_diffusion.h"
#include "server/ldm/layers.h"
#include "server/ldm/sampler.h"
#include "tests/ldm/test_util.h"

namespace ldm {
namespace {

TEST(RowBucketTest, SmallCallsAreNotPaddedAndAtMostAThirdOfACallIsPadding) {
  for (int64_t rows = 1; rows <= 4; ++rows) EXPECT_EQ(RowBucket(rows), rows);
  std::set<int64_t> buckets;
  int64_t previous = 0;
  for (int64_t rows = 1; rows <= 400; ++rows) {
    const int64_t bucket = RowBucket(rows);
    EXPECT_GE(bucket, rows);
    EXPECT_GE(bucket, previous) << rows;      // Monotonic.
    EXPECT_LE(2 * bucket, 3 * rows) << rows;  // Padding <= bucket / 3.
    previous = bucket;
    buckets.insert(bucket);
  }
  // Powers of two and 1.5 times them: 1, 2, 3, 4, 6, 8, ... 384, 512.
  EXPECT_EQ(buckets, (std::set<int64_t>{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48,
                                        64, 96, 128, 192, 256, 384, 512}));
}

// A tiny text-to-image model's UNet and a batch of distinct inputs.
class UNetRunnerTest : public ::testing::Test {
 protected:
  void Load(const LoadOptions& options) {
    auto model = LatentDiffusion::CreateRandom(testing::TinyTextToImageConfig(),
                                               7, options);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(model).value();
  }

  UNetInputs Inputs(int64_t rows, uint64_t seed) const {
    const ModelConfig& config = model_->config();
    const at::Device device = model_->device();
    const at::ScalarType dtype = model_->precision().unet;
    at::Generator generator = MakeGenerator(seed);
    auto normal = [&](at::IntArrayRef sizes) {
      return StandardNormal(sizes, generator,
                            at::TensorOptions().device(device))
          .to(dtype);
    };
    UNetInputs inputs;
    inputs.x = normal({rows, config.unet.in_channels, config.latent_height,
                       config.latent_width});
    inputs.timesteps =
        at::arange(rows, at::TensorOptions().device(device)).to(at::kFloat) *
            97 +
        3;
    inputs.context = normal({rows, config.ctx_len, config.unet.context_dim});
    return inputs;
  }

  const UNetRunner& runner() const { return model_->denoiser().unet_runner(); }

  std::unique_ptr<LatentDiffusion> model_;
};

// Padding rows are computed and dropped; the real rows' results are those
// of the call as given (on the CPU within rounding: element-wise kernels
// split their work by the tensor's size). A misaligned slice of any input
// or of the output would move them by far more.
TEST_F(UNetRunnerTest, PaddedRowsLeaveTheRealRowsAsTheyWere) {
  Load({});
  c10::InferenceMode inference;
  const UNetInputs inputs = Inputs(5, 1);
  const at::Tensor as_given = runner().Run(inputs);
  const at::Tensor padded = runner().RunPadded(inputs, RowBucket(5));
  ASSERT_EQ(padded.sizes(), as_given.sizes());
  const double largest = as_given.abs().max().item<double>();
  EXPECT_LT((padded - as_given).abs().max().item<double>(), 1e-5 * largest);
  // Each row is its own: the rows alone give the same.
  for (int64_t row : {0, 4}) {
    UNetInputs alone = inputs;
    alone.x = inputs.x.slice(0, row, row + 1);
    alone.timesteps = inputs.timesteps.slice(0, row, row + 1);
    alone.context = inputs.context.slice(0, row, row + 1);
    EXPECT_LT((runner().Run(alone) - as_given.slice(0, row, row + 1))
                  .abs()
                  .max()
                  .item<double>(),
              1e-5 * largest);
  }
  EXPECT_EQ(runner().captured_graphs(), 0);  // The CPU never captures.
}

// The CPU's promise: with BatchInvariant() a row's result is the same bits
// alone and in any batch.
TEST_F(UNetRunnerTest, OnTheCpuEachRowIsBitIdenticalWithBatchInvariance) {
  Load({});
  c10::InferenceMode inference;
  SetBatchInvariant(true);
  const UNetInputs inputs = Inputs(3, 2);
  const at::Tensor batched = runner().Run(inputs);
  UNetInputs alone = inputs;
  alone.x = inputs.x.slice(0, 1, 2);
  alone.timesteps = inputs.timesteps.slice(0, 1, 2);
  alone.context = inputs.context.slice(0, 1, 2);
  EXPECT_TRUE(at::equal(runner().Run(alone), batched.slice(0, 1, 2)));
  SetBatchInvariant(false);
}

// LoadOptions::channels_last: the UNet's convolution weights in NHWC, and
// the same UNet results up to rounding.
TEST_F(UNetRunnerTest, ChannelsLastWeightsGiveTheSameResults) {
  Load({});
  c10::InferenceMode inference;
  const UNetInputs inputs = Inputs(2, 3);
  const at::Tensor plain = runner().Run(inputs);
  const char* conv = "model.diffusion_model.input_blocks.0.0.weight";
  EXPECT_FALSE(
      model_->Parameter(conv)->is_contiguous(at::MemoryFormat::ChannelsLast));
  LoadOptions options;
  options.channels_last = true;
  Load(options);
  EXPECT_TRUE(
      model_->Parameter(conv)->is_contiguous(at::MemoryFormat::ChannelsLast));
  const at::Tensor nhwc = runner().Run(inputs);
  EXPECT_LT((nhwc - plain).abs().max().item<double>(),
            1e-5 * plain.abs().max().item<double>());
}

// The GPU machine's checks (tools/device/service_gpu.sh runs them).
class UNetRunnerCudaTest : public UNetRunnerTest {
 protected:
  void SetUp() override {
    if (!CudaGraphsAvailable() || !at::hasCUDA()) {
      GTEST_SKIP() << "needs a LibTorch with CUDA graphs and a GPU";
    }
    LoadOptions options;
    options.device = at::Device(at::kCUDA, 0);
    options.dtype = at::kHalf;
    Load(options);
  }
};

// A replay computes what the same padded call computes eagerly, bit for
// bit, and each bucket is captured once.
TEST_F(UNetRunnerCudaTest, ReplaysEqualTheEagerCallOfTheirBucket) {
  c10::InferenceMode inference;
  SetCudaGraphs(true);
  for (int64_t rows : {2, 5, 6}) {
    const UNetInputs inputs = Inputs(rows, 10 + rows);
    const at::Tensor eager = runner().RunPadded(inputs, RowBucket(rows));
    const at::Tensor first = runner().Run(inputs);
    const at::Tensor second = runner().Run(inputs);
    ASSERT_TRUE(runner().graph_error().ok()) << runner().graph_error();
    EXPECT_TRUE(at::equal(first, eager)) << rows << " rows";
    EXPECT_TRUE(at::equal(second, eager)) << rows << " rows";
  }
  EXPECT_EQ(runner().captured_graphs(), 2);  // Buckets 2 and 6.
}

// CUDA's promise with BatchInvariant() (deterministic cuDNN, fixed
// buckets): a row's result depends on its bucket only, not on the other
// rows of its call nor on its place among them.
TEST_F(UNetRunnerCudaTest, ARowIsBitIdenticalWhateverSharesItsBucket) {
  c10::InferenceMode inference;
  SetBatchInvariant(true);
  for (bool graphs : {false, true}) {
    SetCudaGraphs(graphs);
    const UNetInputs mine = Inputs(1, 21);
    const UNetInputs others = Inputs(7, 22);
    auto with_others = [&](int64_t place, int64_t count) {
      UNetInputs batch;
      auto join = [&](const at::Tensor& row, const at::Tensor& rest) {
        return at::cat(
            {rest.slice(0, 0, place), row, rest.slice(0, place, count - 1)}, 0);
      };
      batch.x = join(mine.x, others.x);
      batch.timesteps = join(mine.timesteps, others.timesteps);
      batch.context = join(mine.context, others.context);
      return runner().Run(batch).slice(0, place, place + 1);
    };
    // Bucket 8: 7 and 8 rows, the row first, last, in the middle.
    const at::Tensor reference = with_others(0, 8);
    EXPECT_TRUE(at::equal(with_others(7, 8), reference)) << graphs;
    EXPECT_TRUE(at::equal(with_others(3, 7), reference)) << graphs;
  }
  SetBatchInvariant(false);
}

// Adapters are not in a graph: with one active the call runs eagerly and
// sees it.
TEST_F(UNetRunnerCudaTest, ActiveAdaptersRunEagerly) {
  c10::InferenceMode inference;
  SetCudaGraphs(true);
  const UNetInputs inputs = Inputs(2, 31);
  const at::Tensor plain = runner().Run(inputs);
  const int64_t captured = runner().captured_graphs();
  const at::Tensor* weight =
      model_->Parameter("model.diffusion_model.out.2.weight");
  ASSERT_NE(weight, nullptr);
  const auto options = weight->options();
  LowRankUpdates updates;
  updates[weight].push_back(
      {at::ones({1, weight->size(1), 3, 3}, options) * 0.1,
       at::ones({weight->size(0), 1, 1, 1}, options), 1.0});
  const ScopedLowRankUpdates active(&updates);
  const at::Tensor adapted = runner().Run(inputs);
  EXPECT_EQ(runner().captured_graphs(), captured);
  EXPECT_FALSE(at::equal(adapted, plain));
}

}  // namespace
}  // namespace ldm
