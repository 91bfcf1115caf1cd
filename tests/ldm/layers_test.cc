#include "server/ldm/layers.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "server/ldm/parameters.h"

namespace ldm {
namespace {

// Large CPU convolutions run a band of output rows at a time (layers.cc);
// the bands, the zero rows at the borders and the upsampled bands must add
// up to the whole convolution.
class BandedConvolutionTest : public ::testing::Test {
 protected:
  BandedConvolutionTest()
      : conv_(ParamScope(&registry_, "conv"), 64, 16, 3, 1, 1) {
    registry_.InitRandom(7);
  }

  // What LibTorch computes for the whole input at once.
  at::Tensor Whole(const at::Tensor& input) const {
    return at::conv2d(input, *registry_.Find("conv.weight"),
                      *registry_.Find("conv.bias"), {1, 1}, {1, 1});
  }

  // The largest difference relative to the largest output: one rounding
  // per summand is the most a different order of the same 576 products
  // can cost, and the products are no larger than the outputs' scale.
  static double RelativeError(const at::Tensor& actual,
                              const at::Tensor& expected) {
    return (actual - expected).abs().max().item<double>() /
           expected.abs().max().item<double>();
  }

  ParameterRegistry registry_;
  Conv2d conv_;
};

TEST_F(BandedConvolutionTest, BandsComputeTheWholeConvolution) {
  at::manual_seed(1);
  // 64 MiB and more are banded; 515 rows leave a short last band, and two
  // samples make each band's rows a strided slice.
  for (const auto& sizes : {std::vector<int64_t>{1, 64, 515, 512},
                            std::vector<int64_t>{2, 64, 259, 512}}) {
    const at::Tensor x = at::randn(sizes);
    ASSERT_GE(x.nbytes(), size_t{64} << 20);
    const at::Tensor banded = conv_.Forward(x);
    ASSERT_EQ(banded.sizes(), Whole(x).sizes());
    EXPECT_LT(RelativeError(banded, Whole(x)), 1e-5) << x.sizes();
  }
}

TEST_F(BandedConvolutionTest, UpsampledBandsComputeTheUpsampledConvolution) {
  at::manual_seed(2);
  // Upsampled 2x to 518 x 514 (68 MiB): banded, odd low-resolution rows
  // split between bands.
  const at::Tensor x = at::randn({1, 64, 259, 257});
  const at::Tensor expected = Whole(at::upsample_nearest2d(x, {518, 514}));
  const at::Tensor banded = conv_.ForwardUpsampled2x(x);
  ASSERT_EQ(banded.sizes(), expected.sizes());
  EXPECT_LT(RelativeError(banded, expected), 1e-5);
  // Small inputs take the unbanded path: the same function.
  const at::Tensor small = at::randn({1, 64, 9, 7});
  EXPECT_LT(RelativeError(conv_.ForwardUpsampled2x(small),
                          Whole(at::upsample_nearest2d(small, {18, 14}))),
            1e-5);
}

}  // namespace
}  // namespace ldm
