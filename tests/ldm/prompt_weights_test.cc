#include "server/ldm/prompt_weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/ldm/latent_diffusion.h"
#include "tests/ldm/test_util.h"

namespace ldm {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatEq;

MATCHER_P2(Segment, text, weight, "") {
  return arg.text == text && std::abs(arg.weight - weight) < 1e-6f;
}

TEST(PromptWeightsTest, ParsesTheEmphasisSyntax) {
  EXPECT_THAT(ParsePromptWeights("a (red:1.5) circle"),
              ElementsAre(Segment("a ", 1.0f), Segment("red", 1.5f),
                          Segment(" circle", 1.0f)));
  EXPECT_THAT(ParsePromptWeights("(a) [b] ((c))"),
              ElementsAre(Segment("a", 1.1f), Segment(" ", 1.0f),
                          Segment("b", 1.0f / 1.1f), Segment(" ", 1.0f),
                          Segment("c", 1.21f)));
  EXPECT_THAT(ParsePromptWeights("(a (b:2))"),
              ElementsAre(Segment("a ", 1.1f), Segment("b", 2.2f)));
  EXPECT_THAT(ParsePromptWeights("(red: 0.5 )"),
              ElementsAre(Segment("red", 0.5f)));
}

TEST(PromptWeightsTest, EscapesColonsAndOpenBracketsAreText) {
  EXPECT_THAT(ParsePromptWeights("\\(a\\) b: c"),
              ElementsAre(Segment("(a) b: c", 1.0f)));
  // Not a number after the colon: the colon is text, ")" closes at 1.1.
  EXPECT_THAT(ParsePromptWeights("(a:x)"), ElementsAre(Segment("a:x", 1.1f)));
  // A bracket left open still applies, as in other front ends.
  EXPECT_THAT(ParsePromptWeights("a (b"),
              ElementsAre(Segment("a ", 1.0f), Segment("b", 1.1f)));
  EXPECT_TRUE(ParsePromptWeights("").empty());
  EXPECT_EQ(PromptText(ParsePromptWeights("a (red:1.5) circle")),
            "a red circle");
  EXPECT_FALSE(HasWeights(ParsePromptWeights("a red circle")));
}

TEST(PromptWeightsTest, WeightsStayFiniteAndBounded) {
  // Found by fuzz_prompt_weights: strtof reads "nan" and "inf", and nested
  // large weights overflowed to inf.
  EXPECT_THAT(ParsePromptWeights("(z:nan)"),
              ElementsAre(Segment("z:nan", 1.1f)));
  EXPECT_THAT(ParsePromptWeights("(z:inf)"),
              ElementsAre(Segment("z:inf", 1.1f)));
  EXPECT_THAT(ParsePromptWeights("(z:1e30)"),
              ElementsAre(Segment("z:1e30", 1.1f)));
  EXPECT_THAT(ParsePromptWeights("a ((b:50):50)"),
              ElementsAre(Segment("a ", 1.0f), Segment("b", 100.0f)));
  std::string deep;
  for (int i = 0; i < 400; ++i) deep += "(x:90 ";
  for (const PromptSegment& segment : ParsePromptWeights(deep)) {
    EXPECT_LE(std::abs(segment.weight), kMaxPromptWeight);
  }
}

TEST(PromptWeightsTest, EncodeTextScalesTheWeightedTokensRows) {
  auto model =
      LatentDiffusion::CreateRandom(testing::TinyTextToImageConfig(), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  // Weight 1 is the plain prompt, bit for bit.
  auto plain_alone = (*model)->EncodeText({"a red circle"});
  auto unit_weight = (*model)->EncodeText({"a (red:1.0) circle"});
  ASSERT_TRUE(plain_alone.ok() && unit_weight.ok());
  EXPECT_TRUE(at::equal(plain_alone->context, unit_weight->context));

  auto text = (*model)->EncodeText({"a red circle", "a (red:1.5) circle"});
  ASSERT_TRUE(text.ok()) << text.status();
  const at::Tensor plain = text->context[0];
  // Weight 1.5: the row of "red" (token 1) is scaled 1.5 times as much as
  // every other row (all rescaled alike to keep the mean).
  const at::Tensor emphasised = text->context[1];
  const double other = (emphasised[0] / plain[0]).mean().item<double>();
  const double red = (emphasised[1] / plain[1]).mean().item<double>();
  EXPECT_NEAR(red / other, 1.5, 1e-4);
  EXPECT_NEAR(emphasised.mean().item<double>(), plain.mean().item<double>(),
              1e-5);
}

}  // namespace
}  // namespace ldm
