// The shipped model configs build the reference architectures: for SD v1
// every UNet and autoencoder key and shape of a real checkpoint
// (../shared/golden/keys-sd15.txt), and the others build at all.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "server/ldm/clip_text_model.h"
#include "server/ldm/latent_diffusion.h"
#include "tests/ldm/test_util.h"

namespace ldm {
namespace {

std::string ConfigPath(const std::string& name) {
  return std::string(LDMSERVE_SOURCE_DIR) + "/models/configs/" + name;
}

// "key<whitespace>[dtype<whitespace>][d0, d1, ...]" lines; '#' comments.
std::map<std::string, std::vector<int64_t>> ReadKeyFile(
    const std::string& path) {
  std::map<std::string, std::vector<int64_t>> keys;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t key_end = line.find_first_of(" \t");
    const size_t open = line.find('['), close = line.find(']');
    if (key_end == std::string::npos || open == std::string::npos ||
        close == std::string::npos) {
      continue;
    }
    std::vector<int64_t> shape;
    for (absl::string_view dim :
         absl::StrSplit(line.substr(open + 1, close - open - 1), ", ",
                        absl::SkipEmpty())) {
      int64_t value = 0;
      EXPECT_TRUE(absl::SimpleAtoi(dim, &value)) << line;
      shape.push_back(value);
    }
    keys[line.substr(0, key_end)] = shape;
  }
  return keys;
}

TEST(ModelConfigsTest, SdV1BuildsEveryReferenceKeyAndShape) {
  const std::string key_file = testing::GoldenDir() + "/keys-sd15.txt";
  if (!std::filesystem::exists(key_file)) GTEST_SKIP() << "no " << key_file;
  auto config = ReadModelConfig(ConfigPath("sd-v1.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  auto ours = LatentDiffusion::ExpectedParameters(*config);
  ASSERT_TRUE(ours.ok()) << ours.status();
  std::map<std::string, std::vector<int64_t>> reference;
  for (const auto& [key, shape] : ReadKeyFile(key_file)) {
    if (absl::StartsWith(key, "model.diffusion_model.") ||
        absl::StartsWith(key, "first_stage_model.")) {
      reference[key] = shape;
    }
  }
  EXPECT_EQ(reference.size(), 686u + 248u);
  std::map<std::string, std::vector<int64_t>> unet_and_autoencoder;
  int text_keys = 0;
  for (const auto& [key, shape] : *ours) {
    if (absl::StartsWith(key, "cond_stage_model.")) {
      ++text_keys;
    } else {
      unet_and_autoencoder[key] = shape;
    }
  }
  EXPECT_EQ(unet_and_autoencoder, reference);
  EXPECT_EQ(text_keys, 196);  // CLIP ViT-L/14, checked key by key below.
}

TEST(ModelConfigsTest, SdV1InpaintingDiffersOnlyInTheInputConv) {
  auto plain = ReadModelConfig(ConfigPath("sd-v1.json"));
  auto inpainting = ReadModelConfig(ConfigPath("sd-v1-inpainting.json"));
  ASSERT_TRUE(plain.ok() && inpainting.ok());
  auto a = LatentDiffusion::ExpectedParameters(*plain);
  auto b = LatentDiffusion::ExpectedParameters(*inpainting);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  const std::string conv = "model.diffusion_model.input_blocks.0.0.weight";
  EXPECT_EQ(b->at(conv), (std::vector<int64_t>{320, 9, 3, 3}));
  (*a)[conv] = b->at(conv);
  EXPECT_EQ(*a, *b);
}

TEST(ModelConfigsTest, PaperVqModelsBuild) {
  for (const char* name : {"ldm-sr-4x.json", "ldm-inpainting-big.json"}) {
    SCOPED_TRACE(name);
    auto config = ReadModelConfig(ConfigPath(name));
    ASSERT_TRUE(config.ok()) << config.status();
    auto params = LatentDiffusion::ExpectedParameters(*config);
    ASSERT_TRUE(params.ok()) << params.status();
    EXPECT_EQ(params->at("first_stage_model.quantize.embedding.weight"),
              (std::vector<int64_t>{8192, 3}));
    EXPECT_EQ(params->at("first_stage_model.quant_conv.weight"),
              (std::vector<int64_t>{3, 3, 1, 1}));
    EXPECT_EQ(params->at("model.diffusion_model.input_blocks.0.0.weight")[1],
              config->unet.in_channels);
  }
  // attn_type "none" leaves the autoencoder without attention blocks.
  auto big = ReadModelConfig(ConfigPath("ldm-inpainting-big.json"));
  auto params = LatentDiffusion::ExpectedParameters(*big);
  EXPECT_EQ(params->count("first_stage_model.encoder.mid.attn_1.q.weight"), 0u);
  // resblock_updown: the downsampling block is a ResBlock.
  EXPECT_EQ(params->count(
                "model.diffusion_model.input_blocks.3.0.in_layers.2.weight"),
            1u);
}

// The paper's text-to-image model: its BERTEmbedder is x-transformers'
// TransformerWrapper (heads of 64, so q/k/v are 1280 -> 512) over BERT's
// 30522 WordPiece tokens, 77 positions, 32 pre-norm layers; the UNet reads
// 1280-wide context.
TEST(ModelConfigsTest, PaperTextToImageModelBuildsItsBertEmbedder) {
  auto config = ReadModelConfig(ConfigPath("ldm-txt2img-f8.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(absl::EndsWith(config->text_encoder->vocab_file,
                             "models/configs/bert/vocab.txt"));
  auto params = LatentDiffusion::ExpectedParameters(*config);
  ASSERT_TRUE(params.ok()) << params.status();
  const std::string text = "cond_stage_model.transformer.";
  const std::map<std::string, std::vector<int64_t>> expected = {
      {text + "token_emb.weight", {30522, 1280}},
      {text + "pos_emb.emb.weight", {77, 1280}},
      {text + "attn_layers.layers.0.0.weight", {1280}},
      {text + "attn_layers.layers.0.1.to_q.weight", {512, 1280}},
      {text + "attn_layers.layers.0.1.to_v.weight", {512, 1280}},
      {text + "attn_layers.layers.0.1.to_out.weight", {1280, 512}},
      {text + "attn_layers.layers.0.1.to_out.bias", {1280}},
      {text + "attn_layers.layers.63.1.net.0.0.weight", {5120, 1280}},
      {text + "attn_layers.layers.63.1.net.2.weight", {1280, 5120}},
      {text + "norm.weight", {1280}},
      {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2."
       "to_k.weight",
       {320, 1280}},
  };
  for (const auto& [key, shape] : expected) {
    ASSERT_EQ(params->count(key), 1u) << key;
    EXPECT_EQ(params->at(key), shape) << key;
  }
  EXPECT_EQ(params->count(text + "attn_layers.layers.64.0.weight"), 0u);
  EXPECT_EQ(params->count(text + "attn_layers.layers.0.1.to_q.bias"), 0u);
}

TEST(ModelConfigsTest, SuperResolutionSamplesWithThePapersEta) {
  auto config = ReadModelConfig(ConfigPath("ldm-sr-4x.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->default_eta, 1.0);
  auto bad = ParseModelConfig(
      absl::StrReplaceAll(ModelConfigToJson(*config),
                          {{"\"default_eta\": 1.0", "\"default_eta\": 2.0"}}));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

// Numbers that do not fit their field are refused naming it, not cast
// (a cast out of range is undefined; fuzz.libfuzzer found 1e102 read as
// `timesteps`).
TEST(ModelConfigsTest, NumbersOutOfTheirFieldsRangeAreRefused) {
  auto config = ReadModelConfig(ConfigPath("sd-v1.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string json = ModelConfigToJson(*config);
  ASSERT_THAT(json, ::testing::HasSubstr("\"timesteps\": 1000"));
  for (const auto& [from, to, field] :
       {std::tuple{"\"timesteps\": 1000", "\"timesteps\": 1e102", "timesteps"},
        std::tuple{"\"timesteps\": 1000", "\"timesteps\": 10.5", "timesteps"},
        std::tuple{"\"timesteps\": 1000", "\"timesteps\": 99999999999999999999",
                   "timesteps"}}) {
    SCOPED_TRACE(to);
    const std::string bad_json = absl::StrReplaceAll(json, {{from, to}});
    ASSERT_NE(bad_json, json);
    auto bad = ParseModelConfig(bad_json);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(bad.status().message()),
                ::testing::HasSubstr(field));
  }
  // Found by fuzz.libfuzzer too: a non-string cond_stage kind threw out of
  // the parser, and zero CLIP heads divided by zero.
  for (const auto& [from, to] :
       {std::pair{"\"kind\": \"clip\"", "\"kind\": 5"},
        std::pair{"\"num_attention_heads\": 12", "\"num_attention_heads\": 0"},
        std::pair{"\"num_attention_heads\": 12",
                  "\"num_attention_heads\": 1e300"}}) {
    SCOPED_TRACE(to);
    const std::string bad_json = absl::StrReplaceAll(json, {{from, to}});
    ASSERT_NE(bad_json, json);
    EXPECT_EQ(ParseModelConfig(bad_json).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  // An integral float is still an integer.
  auto integral = ParseModelConfig(absl::StrReplaceAll(
      json, {{"\"timesteps\": 1000", "\"timesteps\": 1000.0"}}));
  ASSERT_TRUE(integral.ok()) << integral.status();
  EXPECT_EQ(integral->timesteps, 1000);
}

// A config written back (checkpoint metadata, tools, tests) builds the same
// model: no field is dropped on the way.
TEST(ModelConfigsTest, EveryConfigSurvivesARoundTripThroughJson) {
  for (const char* name :
       {"sd-v1.json", "sd-v1-inpainting.json", "ldm-sr-4x.json",
        "ldm-inpainting-big.json", "ldm-txt2img-f8.json"}) {
    SCOPED_TRACE(name);
    auto config = ReadModelConfig(ConfigPath(name));
    ASSERT_TRUE(config.ok()) << config.status();
    auto again = ParseModelConfig(ModelConfigToJson(*config));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*LatentDiffusion::ExpectedParameters(*config),
              *LatentDiffusion::ExpectedParameters(*again));
    EXPECT_EQ(again->ae.kind, config->ae.kind);
    EXPECT_EQ(again->ae.attn_type, config->ae.attn_type);
    EXPECT_EQ(again->conditioning_key, config->conditioning_key);
    EXPECT_EQ(again->beta_schedule, config->beta_schedule);
    EXPECT_EQ(again->default_eta, config->default_eta);
    EXPECT_EQ(ModelConfigToJson(*again), ModelConfigToJson(*config));
  }
}

// A misspelt kind is refused where the file is read, naming the field and
// the names it takes, instead of silently serving as some default.
TEST(ModelConfigsTest, UnknownEnumNamesAreRefusedWithTheChoices) {
  auto config = ReadModelConfig(ConfigPath("sd-v1.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string valid = ModelConfigToJson(*config);
  struct Case {
    std::string from, to, message;
  };
  for (const Case& c : std::vector<Case>{
           {"\"kind\": \"txt2img\"", "\"kind\": \"inpainting\"",
            "config kind: 'inpainting' is not one of txt2img, inpaint, sr"},
           {"\"conditioning_key\": \"crossattn\"",
            "\"conditioning_key\": \"cross\"",
            "is not one of crossattn, concat, hybrid, adm"},
           {"\"parameterization\": \"eps\"", "\"parameterization\": \"x0\"",
            "config parameterization: 'x0' is not one of eps, v"},
           {"\"beta_schedule\": \"linear\"", "\"beta_schedule\": \"zigzag\"",
            "is not one of linear, sqrt_linear, sqrt, cosine"},
           {"\"kind\": \"kl\"", "\"kind\": \"vqgan\"",
            "config ae.kind: 'vqgan' is not one of kl, vq"},
           {"\"attn_type\": \"vanilla\"", "\"attn_type\": \"linear\"",
            "config ae.ddconfig.attn_type: 'linear'"},
           {"\"hidden_act\": \"quick_gelu\"", "\"hidden_act\": \"relu\"",
            "hidden_act 'relu' is not one of quick_gelu, gelu"},
       }) {
    SCOPED_TRACE(c.to);
    std::string text = valid;
    const size_t at = text.find(c.from);
    ASSERT_NE(at, std::string::npos) << text;
    text.replace(at, c.from.size(), c.to);
    auto parsed = ParseModelConfig(text);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()),
                ::testing::HasSubstr(c.message));
  }
}

TEST(ModelConfigsTest, ClipVitL14BuildsEverySdV1TextEncoderKey) {
  const std::string key_file = testing::GoldenDir() + "/clip/keys-vit-l14.txt";
  if (!std::filesystem::exists(key_file)) GTEST_SKIP() << "no " << key_file;
  ClipTextConfig config;  // The defaults are ViT-L/14's text tower.
  ParameterRegistry registry(at::kMeta);
  ClipTextModel model(
      config, ParamScope(&registry, "cond_stage_model.transformer.text_model"));
  std::map<std::string, std::vector<int64_t>> reference = ReadKeyFile(key_file);
  // Optional in checkpoints; positions are always 0..76.
  EXPECT_EQ(
      reference.erase(
          "cond_stage_model.transformer.text_model.embeddings.position_ids"),
      1u);
  EXPECT_EQ(reference.size(), 196u);
  EXPECT_EQ(registry.Shapes(), reference);
}

}  // namespace
}  // namespace ldm
