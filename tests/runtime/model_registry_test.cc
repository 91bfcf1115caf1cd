// The registry's start-up path: a checkpoint listed without a config is
// recognised by its keys among the family configs, and a file of no known
// family fails with one clear line, fatal or not as the entry says.
#include "server/runtime/model_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "server/ldm/latent_diffusion.h"

namespace ldmserve {
namespace {

using ::testing::HasSubstr;

class ModelRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_ / "configs");
    // One family: the shipped SR model's architecture, renamed.
    auto config = ldm::ReadModelConfig(std::string(LDMSERVE_SOURCE_DIR) +
                                       "/models/shapes-sr/config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    config->name = "tiny-family";
    std::ofstream(dir_ / "configs" / "tiny-family.json")
        << ldm::ModelConfigToJson(*config);
    WriteCheckpoint(*config, dir_ / "known.safetensors");
    // A checkpoint of another architecture (the inpainting UNet).
    auto other = ldm::ReadModelConfig(std::string(LDMSERVE_SOURCE_DIR) +
                                      "/models/shapes-inpaint/config.json");
    ASSERT_TRUE(other.ok()) << other.status();
    WriteCheckpoint(*other, dir_ / "unknown.safetensors");
  }

  static void WriteCheckpoint(const ldm::ModelConfig& config,
                              const std::filesystem::path& path) {
    auto model = ldm::LatentDiffusion::CreateRandom(config, 3);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_TRUE((*model)->Save(path.string()).ok());
  }

  absl::StatusOr<std::vector<ModelEntry>> Registry(const std::string& json) {
    const std::filesystem::path path = dir_ / "registry.json";
    std::ofstream(path) << json;
    return ModelRegistry::ReadRegistryFile(path.string());
  }

  std::filesystem::path dir_;
};

TEST_F(ModelRegistryTest, DetectsTheFamilyOfACheckpointWithoutConfig) {
  auto entries = Registry(R"({"models": [{"name": "mine",
      "weights": "known.safetensors", "tasks": ["super_resolution"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll().ok());
  auto found = registry.Find("mine", TaskKind::kSuperResolution);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ((*found)->model->config().name, "tiny-family");
}

TEST_F(ModelRegistryTest, FamilyByNameUsesTheConfigsFolder) {
  auto entries = Registry(R"({"models": [{"name": "mine",
      "family": "tiny-family", "weights": "known.safetensors",
      "tasks": ["super_resolution"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_EQ((*entries)[0].config_path,
            (dir_ / "configs" / "tiny-family.json").string());
  ModelRegistry registry(*entries);
  EXPECT_TRUE(registry.LoadAll().ok());
}

TEST_F(ModelRegistryTest, UnknownFamilyIsOneClearLineAndFatalWhenRequired) {
  auto entries = Registry(R"({"models": [{"name": "odd",
      "weights": "unknown.safetensors", "required": true}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  const absl::Status status = registry.LoadAll();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("unknown.safetensors: not a model family we know"));
  // What it lacks, for the user: the inpainting UNet takes 9 channels.
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("closest tiny-family: shape of "
                        "model.diffusion_model.input_blocks.0.0.weight"));
}

TEST_F(ModelRegistryTest, UnknownFamilyLeavesTheOthersServedWhenOptional) {
  auto entries = Registry(R"({"models": [
      {"name": "odd", "weights": "unknown.safetensors", "required": false},
      {"name": "mine", "weights": "known.safetensors",
       "tasks": ["super_resolution"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll().ok());
  EXPECT_TRUE(registry.AllRequiredReady());
  for (const auto& model : registry.Snapshot()) {
    if (model.entry.name == "odd") {
      EXPECT_EQ(model.state, ModelState::kFailed);
      EXPECT_THAT(model.error, HasSubstr("not a model family we know"));
    } else {
      EXPECT_EQ(model.state, ModelState::kReady);
    }
  }
}

TEST_F(ModelRegistryTest, StableDiffusionFamilyCheckpointRunsEndToEnd) {
  // SD v1's config with every width reduced: the family's real key names
  // (model.diffusion_model.*, first_stage_model.*, cond_stage_model.
  // transformer.text_model.*) and its CLIP tokenizer, at test size.
  auto config = ldm::ReadModelConfig(std::string(LDMSERVE_SOURCE_DIR) +
                                     "/models/configs/sd-v1.json");
  ASSERT_TRUE(config.ok()) << config.status();
  config->name = "sd-v1-small";
  config->latent_height = config->latent_width = 8;
  config->unet.model_channels = 32;
  config->unet.channel_mult = {1, 2};
  config->unet.num_res_blocks = 1;
  config->unet.attention_resolutions = {2};
  config->unet.num_heads = 2;
  config->unet.context_dim = 32;
  config->clip->text.hidden_size = 32;
  config->clip->text.intermediate_size = 64;
  config->clip->text.num_attention_heads = 2;
  config->clip->text.num_hidden_layers = 2;
  config->ae.ch = 32;
  config->ae.ch_mult = {1, 2};
  config->ae.num_res_blocks = 1;
  config->clip->tokenizer_dir =
      std::string(LDMSERVE_SOURCE_DIR) + "/models/configs/tokenizer";
  std::ofstream(dir_ / "configs" / "sd-v1-small.json")
      << ldm::ModelConfigToJson(*config);
  WriteCheckpoint(*config, dir_ / "sd.safetensors");

  auto entries = Registry(R"({"models": [{"name": "sd",
      "weights": "sd.safetensors", "tasks": ["text_to_image"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll().ok());
  auto found = registry.Find("", TaskKind::kTextToImage);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ((*found)->model->config().name, "sd-v1-small");
  ldm::JobRequest request;
  request.prompt = "an astronaut riding a (horse:1.2) on mars";
  request.sampler.steps = 2;
  auto images = ldm::RunJob(*(*found)->model, request);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->sizes(), (at::IntArrayRef{1, 16, 16, 3}));
}

// A family's config at test width: its structure (conditioning, channels in
// and out, autoencoder kind, attention type, resblock_updown, CLIP) kept,
// every width and depth reduced.
ldm::ModelConfig AtTestWidth(ldm::ModelConfig config) {
  config.name += "-small";
  config.latent_height = config.latent_width = 8;
  config.unet.model_channels = 32;
  config.unet.channel_mult = {1, 2};
  config.unet.num_res_blocks = 1;
  config.unet.attention_resolutions = {2};
  config.unet.num_heads = 2;
  config.unet.num_head_channels = -1;
  if (config.unet.context_dim > 0) config.unet.context_dim = 32;
  if (config.clip) {
    config.clip->text.hidden_size = 32;
    config.clip->text.intermediate_size = 64;
    config.clip->text.num_attention_heads = 2;
    config.clip->text.num_hidden_layers = 2;
    config.clip->tokenizer_dir =
        std::string(LDMSERVE_SOURCE_DIR) + "/models/configs/tokenizer";
  }
  config.ae.ch = 32;
  config.ae.ch_mult = {1, 2};
  config.ae.num_res_blocks = 1;
  config.ae.attn_resolutions = {};
  if (config.ae.kind == "vq") config.ae.n_embed = 64;
  return config;
}

class FamilyTest : public ModelRegistryTest,
                   public ::testing::WithParamInterface<std::string> {};

// Each shipped family: a checkpoint the test writes with the family's key
// names, listed without a config, detected among all families at test
// width, and run through its pipeline.
TEST_P(FamilyTest, DetectedAndRunThroughItsPipeline) {
  for (const char* family :
       {"sd-v1", "sd-v1-inpainting", "ldm-sr-4x", "ldm-inpainting-big"}) {
    auto config = ldm::ReadModelConfig(std::string(LDMSERVE_SOURCE_DIR) +
                                       "/models/configs/" + family + ".json");
    ASSERT_TRUE(config.ok()) << config.status();
    std::ofstream(dir_ / "configs" / (std::string(family) + ".json"))
        << ldm::ModelConfigToJson(AtTestWidth(*config));
  }
  auto config = ldm::ReadModelConfig(
      (dir_ / "configs" / (GetParam() + ".json")).string());
  ASSERT_TRUE(config.ok()) << config.status();
  WriteCheckpoint(*config, dir_ / "family.safetensors");
  auto entries = Registry(R"({"models": [{"name": "m",
      "weights": "family.safetensors",
      "tasks": ["text_to_image", "inpaint", "super_resolution"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll().ok());
  auto found = registry.Find("m", TaskKind::kTextToImage);
  ASSERT_TRUE(found.ok()) << found.status();
  const ldm::LatentDiffusion& model = *(*found)->model;
  EXPECT_EQ(model.config().name, GetParam() + "-small");

  ldm::JobRequest request;
  request.prompt = "a red circle";
  request.sampler.steps = 2;
  const int64_t side = 8 * model.config().ae.DownsamplingFactor();
  if (model.config().kind == "inpaint") {
    request.inpaint_image = at::rand({1, 3, side, side}) * 2 - 1;
    request.inpaint_mask = at::zeros({1, 1, side, side});
    request.inpaint_mask.slice(2, 0, side / 2).fill_(1);
  } else if (model.config().kind == "sr") {
    request.low_res = at::rand({1, 3, 8, 8}) * 2 - 1;
  }
  auto images = ldm::RunJob(model, request);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->sizes(), (at::IntArrayRef{1, side, side, 3}));
}

INSTANTIATE_TEST_SUITE_P(ShippedConfigs, FamilyTest,
                         ::testing::Values("sd-v1", "sd-v1-inpainting",
                                           "ldm-sr-4x", "ldm-inpainting-big"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace ldmserve
