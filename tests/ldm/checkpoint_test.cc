// The diffusers -> CompVis key mapping, checked against names of the real
// Stable Diffusion v1 checkpoints (the pairs the diffusers project's own
// conversion script produces), and the folder reader's error lines.
#include "server/ldm/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace ldm {
namespace {

using ::testing::HasSubstr;

// Every key is mapped against the whole list, as the loader does: the
// block numbering comes from the keys present.
std::map<std::string, std::string> Map(
    DiffusersPart part,
    const std::vector<std::pair<std::string, std::string>>& expected,
    const std::vector<std::string>& structure = {}) {
  std::vector<std::string> keys = structure;
  for (const auto& [diffusers, compvis] : expected) keys.push_back(diffusers);
  return MapDiffusersKeys(part, keys);
}

TEST(DiffusersKeysTest, StableDiffusionV1UnetNamesMapAsTheConversionScript) {
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"conv_in.weight", "input_blocks.0.0.weight"},
      {"time_embedding.linear_1.weight", "time_embed.0.weight"},
      {"time_embedding.linear_2.bias", "time_embed.2.bias"},
      {"down_blocks.0.resnets.0.norm1.weight",
       "input_blocks.1.0.in_layers.0.weight"},
      {"down_blocks.0.resnets.1.conv1.bias",
       "input_blocks.2.0.in_layers.2.bias"},
      {"down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
       "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"},
      {"down_blocks.0.downsamplers.0.conv.weight",
       "input_blocks.3.0.op.weight"},
      {"down_blocks.1.resnets.0.conv_shortcut.weight",
       "input_blocks.4.0.skip_connection.weight"},
      {"down_blocks.2.downsamplers.0.conv.bias", "input_blocks.9.0.op.bias"},
      {"down_blocks.3.resnets.1.conv2.bias",
       "input_blocks.11.0.out_layers.3.bias"},
      {"mid_block.resnets.0.time_emb_proj.weight",
       "middle_block.0.emb_layers.1.weight"},
      {"mid_block.attentions.0.proj_in.weight",
       "middle_block.1.proj_in.weight"},
      {"mid_block.resnets.1.norm2.bias", "middle_block.2.out_layers.0.bias"},
      {"up_blocks.0.resnets.2.conv1.weight",
       "output_blocks.2.0.in_layers.2.weight"},
      // Up block 0 has no attention: its upsampler is the block's 2nd layer.
      {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"},
      {"up_blocks.1.attentions.0.norm.weight", "output_blocks.3.1.norm.weight"},
      {"up_blocks.1.resnets.2.conv_shortcut.bias",
       "output_blocks.5.0.skip_connection.bias"},
      {"up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"},
      {"up_blocks.2.upsamplers.0.conv.bias", "output_blocks.8.2.conv.bias"},
      {"up_blocks.3.attentions.2.proj_out.weight",
       "output_blocks.11.1.proj_out.weight"},
      {"conv_norm_out.weight", "out.0.weight"},
      {"conv_out.bias", "out.2.bias"},
  };
  const auto mapped = Map(DiffusersPart::kUnet, expected,
                          {"up_blocks.2.attentions.0.norm.weight",
                           "up_blocks.3.attentions.0.norm.weight"});
  for (const auto& [diffusers, compvis] : expected) {
    EXPECT_EQ(mapped.at(diffusers), "model.diffusion_model." + compvis)
        << diffusers;
  }
}

TEST(DiffusersKeysTest, VaeNamesMapAndDecoderLevelsAreReversed) {
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"encoder.conv_in.weight", "encoder.conv_in.weight"},
      {"encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
       "encoder.down.1.block.0.nin_shortcut.weight"},
      {"encoder.down_blocks.2.downsamplers.0.conv.bias",
       "encoder.down.2.downsample.conv.bias"},
      {"encoder.mid_block.resnets.1.norm2.weight",
       "encoder.mid.block_2.norm2.weight"},
      {"encoder.mid_block.attentions.0.group_norm.bias",
       "encoder.mid.attn_1.norm.bias"},
      {"encoder.mid_block.attentions.0.to_q.weight",
       "encoder.mid.attn_1.q.weight"},
      {"decoder.mid_block.attentions.0.key.bias", "decoder.mid.attn_1.k.bias"},
      {"decoder.mid_block.attentions.0.proj_attn.weight",
       "decoder.mid.attn_1.proj_out.weight"},
      {"decoder.mid_block.attentions.0.to_out.0.bias",
       "decoder.mid.attn_1.proj_out.bias"},
      {"decoder.up_blocks.0.resnets.2.conv1.weight",
       "decoder.up.3.block.2.conv1.weight"},
      {"decoder.up_blocks.0.upsamplers.0.conv.weight",
       "decoder.up.3.upsample.conv.weight"},
      {"decoder.up_blocks.3.resnets.0.conv_shortcut.bias",
       "decoder.up.0.block.0.nin_shortcut.bias"},
      {"decoder.conv_norm_out.weight", "decoder.norm_out.weight"},
      {"quant_conv.weight", "quant_conv.weight"},
      {"post_quant_conv.bias", "post_quant_conv.bias"},
  };
  const auto mapped = Map(DiffusersPart::kVae, expected);
  for (const auto& [diffusers, compvis] : expected) {
    EXPECT_EQ(mapped.at(diffusers), "first_stage_model." + compvis)
        << diffusers;
  }
}

TEST(DiffusersKeysTest, TextEncoderGetsThePrefixAndUnknownKeysAreKept) {
  const auto mapped = MapDiffusersKeys(
      DiffusersPart::kTextEncoder,
      {"text_model.encoder.layers.0.mlp.fc1.weight", "logit_scale"});
  EXPECT_EQ(mapped.at("text_model.encoder.layers.0.mlp.fc1.weight"),
            "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1."
            "weight");
  // Kept under a name no parameter has, so a strict load reports it.
  EXPECT_EQ(mapped.at("logit_scale"), "diffusers.text_encoder.logit_scale");
  EXPECT_EQ(MapDiffusersKeys(DiffusersPart::kUnet, {"add_embedding.weight"})
                .at("add_embedding.weight"),
            "diffusers.unet.add_embedding.weight");
}

TEST(CheckpointTest, FolderWithoutUnetOrWeightsIsOneClearLine) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "not-diffusers";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto opened = Checkpoint::Open(dir.string());
  ASSERT_FALSE(opened.ok());
  EXPECT_THAT(opened.status().message(),
              HasSubstr("not a diffusers layout (no unet/ in it)"));

  std::filesystem::create_directories(dir / "unet");
  std::ofstream(dir / "unet" / "diffusion_pytorch_model.bin") << "pickle";
  opened = Checkpoint::Open(dir.string());
  ASSERT_FALSE(opened.ok());
  EXPECT_THAT(opened.status().message(),
              HasSubstr("unet: no diffusion_pytorch_model.safetensors"));
}

}  // namespace
}  // namespace ldm
