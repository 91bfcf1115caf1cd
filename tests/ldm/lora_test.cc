// LoRA adapters: applied at run time they give what the weights merged by
// their definition, W + weight * alpha / rank * up @ down, give; the kohya
// and diffusers layouts of one adapter land on the same layers; and files
// that do not fit the model are refused naming the key.
#include "server/ldm/lora.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/safetensors.h"
#include "tests/ldm/lora_test_util.h"
#include "tests/ldm/test_util.h"

namespace ldm {
namespace {

using ::testing::HasSubstr;

constexpr int kRank = 2;
constexpr double kAlpha = 1.0;  // Scale alpha / rank = 0.5.
constexpr int kWeightsSeed = 5;

class LoraTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
    model_ = LatentDiffusion::CreateRandom(testing::TinyTextToImageConfig(),
                                           kWeightsSeed)
                 .value();
    lora_ = testing::MakeTestLora(*model_, kRank, 7);
    ASSERT_GE(lora_.layers.size(), 3u);
  }

  std::string WriteAdapter(bool kohya) {
    const std::string file =
        (dir_ / (kohya ? "kohya.safetensors" : "peft.safetensors")).string();
    EXPECT_TRUE(
        WriteSafetensors(file, kohya ? lora_.Kohya(kAlpha) : lora_.Peft(kAlpha))
            .ok());
    return file;
  }

  static GenerationRequest Request() {
    GenerationRequest request;
    request.prompt = "a red circle";
    request.seed = 3;
    request.sampler.steps = 4;
    return request;
  }

  std::filesystem::path dir_;
  std::unique_ptr<LatentDiffusion> model_;
  testing::TestLora lora_;
};

TEST_F(LoraTest, RunTimeUpdatesMatchTheMergedWeights) {
  constexpr double kStrength = 0.8;
  auto adapter = LoraAdapter::Read(WriteAdapter(/*kohya=*/true));
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  ASSERT_EQ((*adapter)->layers().size(), lora_.layers.size());
  auto bound = BindLoras(*model_, {{*adapter, kStrength}});
  ASSERT_TRUE(bound.ok()) << bound.status();

  at::Tensor adapted;
  {
    ScopedLowRankUpdates active(&(*bound)->updates);
    auto image = testing::RunToTensor(*model_, Request());
    ASSERT_TRUE(image.ok()) << image.status();
    adapted = *image;
  }
  auto plain = testing::RunToTensor(*model_, Request());
  ASSERT_TRUE(plain.ok()) << plain.status();

  // The reference: a second copy with the update merged into its weights.
  auto merged = LatentDiffusion::CreateRandom(testing::TinyTextToImageConfig(),
                                              kWeightsSeed);
  ASSERT_TRUE(merged.ok()) << merged.status();
  std::map<std::string, at::Tensor> weights = (*merged)->MutableParameters();
  for (const testing::TestLora::Layer& layer : lora_.layers) {
    at::Tensor& weight = weights.at(layer.weight_name);
    const at::Tensor delta =
        at::matmul(layer.up.flatten(1), layer.down.flatten(1))
            .view(weight.sizes()) *
        (kStrength * kAlpha / kRank);
    at::NoGradGuard no_grad;
    weight.add_(delta);
  }
  auto reference = testing::RunToTensor(**merged, Request());
  ASSERT_TRUE(reference.ok()) << reference.status();

  // 8-bit images: at most one level apart where the rounding of W x + s U D x
  // and (W + s U D) x falls on either side of a level.
  const double gap = (adapted.to(at::kFloat) - reference->to(at::kFloat))
                         .abs()
                         .max()
                         .item<double>();
  EXPECT_LE(gap, 1.0);
  const double change = (plain->to(at::kFloat) - reference->to(at::kFloat))
                            .abs()
                            .mean()
                            .item<double>();
  EXPECT_GT(change, 2.0) << "the adapter should change the image";
  // Leaving the scope took the updates away.
  auto again = testing::RunToTensor(*model_, Request());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(at::equal(*again, *plain));
}

TEST_F(LoraTest, KohyaAndDiffusersLayoutsAreTheSameAdapter) {
  auto kohya = LoraAdapter::Read(WriteAdapter(/*kohya=*/true));
  auto peft = LoraAdapter::Read(WriteAdapter(/*kohya=*/false));
  ASSERT_TRUE(kohya.ok()) << kohya.status();
  ASSERT_TRUE(peft.ok()) << peft.status();
  std::vector<at::Tensor> images;
  for (const auto& adapter : {*kohya, *peft}) {
    for (const auto& layer : adapter->layers()) {
      EXPECT_EQ(model_->Parameter(LoraTarget(layer, *model_)) != nullptr, true)
          << layer.key;
    }
    auto bound = BindLoras(*model_, {{adapter, 1.0}});
    ASSERT_TRUE(bound.ok()) << bound.status();
    ScopedLowRankUpdates active(&(*bound)->updates);
    auto image = testing::RunToTensor(*model_, Request());
    ASSERT_TRUE(image.ok()) << image.status();
    images.push_back(*image);
  }
  EXPECT_LE((images[0].to(at::kFloat) - images[1].to(at::kFloat))
                .abs()
                .max()
                .item<double>(),
            1.0);
}

TEST_F(LoraTest, FilesThatDoNotFitAreRefusedNamingTheKey) {
  auto write = [this](const std::string& name,
                      const std::map<std::string, at::Tensor>& tensors) {
    const std::string file = (dir_ / name).string();
    EXPECT_TRUE(WriteSafetensors(file, tensors).ok());
    return file;
  };
  const at::Tensor down = lora_.layers[0].down;
  const at::Tensor up = lora_.layers[0].up;
  const std::string module =
      "lora_unet_" +
      absl::StrReplaceAll(lora_.layers[0].diffusers_path, {{".", "_"}});

  // A block this model does not have.
  auto missing = LoraAdapter::Read(write(
      "missing.safetensors",
      {{"lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight", down},
       {"lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight", up}}));
  ASSERT_TRUE(missing.ok()) << missing.status();
  const absl::Status no_layer = CheckLoraFits(**missing, *model_);
  EXPECT_EQ(no_layer.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(no_layer.message()), HasSubstr("has no layer"));

  // Halves of another width.
  auto wide = LoraAdapter::Read(
      write("wide.safetensors",
            {{module + ".lora_down.weight", at::randn({kRank, 999})},
             {module + ".lora_up.weight", up}}));
  ASSERT_TRUE(wide.ok()) << wide.status();
  const absl::Status misfit = CheckLoraFits(**wide, *model_);
  EXPECT_EQ(misfit.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(misfit.message()), HasSubstr("do not fit"));
  EXPECT_FALSE(BindLoras(*model_, {{*wide, 1.0}}).ok());

  // Half a layer; a LoHa key.
  auto half = LoraAdapter::Read(
      write("half.safetensors", {{module + ".lora_down.weight", down}}));
  EXPECT_EQ(half.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(half.status().message()),
              HasSubstr("lacks its down or up"));
  auto loha = LoraAdapter::Read(
      write("loha.safetensors", {{module + ".hada_w1_a", down}}));
  EXPECT_EQ(loha.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loha.status().message()),
              HasSubstr("not a LoRA half"));
}

// SD v1's CLIP text encoder takes adapters too (kohya's lora_te_ keys):
// its context with the update applied is what the merged weights give.
TEST(LoraTextEncoderTest, ClipLayersTakeTheUpdate) {
  auto config = testing::SmallStableDiffusionConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = LatentDiffusion::CreateRandom(*config, 3);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string weight_name =
      "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn."
      "q_proj.weight";
  ASSERT_NE((*model)->Parameter(weight_name), nullptr);
  const int64_t width = (*model)->Parameter(weight_name)->size(0);
  at::manual_seed(4);
  const at::Tensor down = at::randn({kRank, width});
  const at::Tensor up = at::randn({width, kRank});
  const std::filesystem::path file =
      std::filesystem::path(::testing::TempDir()) / "clip_lora.safetensors";
  const std::string module =
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
  ASSERT_TRUE(WriteSafetensors(file.string(),
                               {{module + ".lora_down.weight", down},
                                {module + ".lora_up.weight", up},
                                {module + ".alpha", at::scalar_tensor(kAlpha)}})
                  .ok());
  auto adapter = LoraAdapter::Read(file.string());
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  auto bound = BindLoras(**model, {{*adapter, 1.0}});
  ASSERT_TRUE(bound.ok()) << bound.status();
  at::Tensor adapted;
  {
    ScopedLowRankUpdates active(&(*bound)->updates);
    auto text = (*model)->EncodeText({"a red circle"});
    ASSERT_TRUE(text.ok()) << text.status();
    adapted = text->context;
  }
  auto plain = (*model)->EncodeText({"a red circle"});
  ASSERT_TRUE(plain.ok()) << plain.status();

  auto merged = LatentDiffusion::CreateRandom(*config, 3);
  ASSERT_TRUE(merged.ok()) << merged.status();
  {
    at::NoGradGuard no_grad;
    (*merged)
        ->MutableParameters()
        .at(weight_name)
        .add_(at::matmul(up, down) * (kAlpha / kRank));
  }
  auto reference = (*merged)->EncodeText({"a red circle"});
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_TRUE(at::allclose(adapted, reference->context, 1e-4, 1e-5));
  EXPECT_FALSE(at::allclose(plain->context, reference->context, 1e-3, 1e-3));
}

TEST(LoraKeyTest, KohyaNamesWithUnderscoresComeBackWhole) {
  // Through the public path: a text-encoder key lands on CLIP's names.
  const std::filesystem::path file =
      std::filesystem::path(::testing::TempDir()) / "te.safetensors";
  ASSERT_TRUE(
      WriteSafetensors(
          file.string(),
          {{"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down."
            "weight",
            at::zeros({1, 4})},
           {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up."
            "weight",
            at::zeros({4, 1})},
           {"lora_unet_conv_in.lora_down.weight", at::zeros({1, 4, 3, 3})},
           {"lora_unet_conv_in.lora_up.weight", at::zeros({4, 1, 1, 1})},
           {"lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight",
            at::zeros({1, 4})},
           {"lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_up.weight",
            at::zeros({4, 1})},
           {"lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_ff_net_"
            "0_proj.lora_down.weight",
            at::zeros({1, 4})},
           {"lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_ff_net_"
            "0_proj.lora_up.weight",
            at::zeros({4, 1})}})
          .ok());
  auto adapter = LoraAdapter::Read(file.string());
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  ASSERT_EQ((*adapter)->layers().size(), 4u);
  std::vector<std::string> paths;
  for (const auto& layer : (*adapter)->layers()) paths.push_back(layer.path);
  EXPECT_THAT(paths,
              ::testing::UnorderedElementsAre(
                  "text_model.encoder.layers.0.self_attn.q_proj", "conv_in",
                  "down_blocks.0.resnets.0.time_emb_proj",
                  "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0."
                  "proj"));
}

}  // namespace
}  // namespace ldm
