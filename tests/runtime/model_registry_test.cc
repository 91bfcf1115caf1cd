// The registry's start-up path: a checkpoint listed without a config is
// recognised by its keys among the family configs, and a file of no known
// family fails with one clear line, fatal or not as the entry says.
#include "server/runtime/model_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/ldm/image_tensor.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/safetensors.h"
#include "tests/ldm/test_util.h"

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
  auto found = registry.Find("mine", ldm::Task::kSuperResolution);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ((*found)->model->config().name, "tiny-family");
}

TEST_F(ModelRegistryTest, DevicesDefaultToTheServersAndNeedAWorker) {
  auto entries = Registry(R"({"models": [{"name": "mine",
      "weights": "known.safetensors", "tasks": ["super_resolution"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_TRUE((*entries)[0].devices.empty());
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll({"cpu"}).ok());
  auto found = registry.Find("mine", ldm::Task::kSuperResolution);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ((*found)->entry.devices, std::vector<std::string>{"cpu"});
  const std::vector<const ldm::LatentDiffusion*> copies = (*found)->Copies();
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0], (*found)->model.get());
  EXPECT_EQ(copies[0]->device(), at::Device(at::kCPU));

  auto on_gpu = Registry(R"({"models": [{"name": "mine",
      "weights": "known.safetensors", "devices": ["cuda:0"]}]})");
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.status();
  ModelRegistry refused(*on_gpu);
  const absl::Status status = refused.LoadAll({"cpu"});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("model mine: device cuda:0 has no worker "
                        "(--devices=cpu)"));
}

TEST_F(ModelRegistryTest, DtypeFromTheEntryElseTheServersDefault) {
  auto entries = Registry(R"({"models": [
      {"name": "default", "weights": "known.safetensors",
       "tasks": ["super_resolution"]},
      {"name": "mine", "weights": "known.safetensors", "dtype": "f32",
       "vae_dtype": "bf16", "tasks": ["super_resolution"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_EQ((*entries)[1].dtype, "f32");
  EXPECT_EQ((*entries)[1].vae_dtype, "bf16");
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll({"cpu"}, "bf16").ok());
  auto defaulted = registry.Find("default", ldm::Task::kSuperResolution);
  ASSERT_TRUE(defaulted.ok()) << defaulted.status();
  EXPECT_EQ((*defaulted)->model->precision(),
            ldm::StagePrecision::ForModelDtype(at::kBFloat16));
  auto own = registry.Find("mine", ldm::Task::kSuperResolution);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ((*own)->model->precision().unet, at::kFloat);
  EXPECT_EQ((*own)->model->precision().first_stage, at::kBFloat16);
  EXPECT_EQ((*own)->model->precision().text, at::kFloat);
  // The snapshot (ListModels' source) carries every copy's placement.
  const std::vector<ModelRegistry::ModelStatus> snapshot = registry.Snapshot();
  ASSERT_EQ(snapshot.size(), 2u);
  for (const ModelRegistry::ModelStatus& status : snapshot) {
    ASSERT_EQ(status.placements.size(), 1u);
    EXPECT_EQ(status.placements[0].device, "cpu");
    EXPECT_EQ(status.capabilities.tasks,
              std::vector<ldm::Task>{ldm::Task::kSuperResolution});
  }
  EXPECT_EQ(snapshot[0].placements[0].dtype, "bf16");
  EXPECT_EQ(snapshot[1].placements[0].dtype, "f32");
  EXPECT_EQ(snapshot[1].placements[0].vae_dtype, "bf16");
  EXPECT_EQ(snapshot[1].placements[0].text_dtype, "f32");

  // "auto" on the CPU is f32.
  ModelRegistry automatic(*entries);
  ASSERT_TRUE(automatic.LoadAll({"cpu"}, "auto").ok());
  EXPECT_EQ((*automatic.Find("default", ldm::Task::kSuperResolution))
                ->model->precision()
                .unet,
            at::kFloat);

  auto misspelt = Registry(R"({"models": [{"name": "mine",
      "weights": "known.safetensors", "dtype": "fp16"}]})");
  EXPECT_EQ(misspelt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(misspelt.status().message()),
              HasSubstr("model mine: dtype 'fp16': expected f32, f16 or bf16"));

  // A dtype the device cannot run fails the load with one line.
  auto half = Registry(R"({"models": [{"name": "mine",
      "weights": "known.safetensors", "tasks": ["super_resolution"]}]})");
  ASSERT_TRUE(half.ok());
  ModelRegistry on_cpu(*half);
  const absl::Status loaded = on_cpu.LoadAll({"cpu"}, "f16");
  if (!ldm::CheckDtypeSupported(at::kCPU, at::kHalf).ok()) {
    EXPECT_EQ(loaded.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(loaded.message()),
                HasSubstr("model mine: f16 on cpu is not supported"));
  } else {
    EXPECT_TRUE(loaded.ok()) << loaded;
  }
}

TEST_F(ModelRegistryTest, IntraOpThreadsFollowTheLargestModel) {
  auto entries = Registry(R"({"models": [
      {"name": "a", "weights": "known.safetensors"},
      {"name": "missing", "weights": "nowhere.safetensors"}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  // The shipped SR architecture: a few million parameters, small.
  EXPECT_EQ(DefaultIntraOpThreads(*entries, 2), 1);
  EXPECT_EQ(DefaultIntraOpThreads(*entries, 1), 1);
  EXPECT_EQ(DefaultIntraOpThreads(*entries, 16), 15);
  // The same file counts as large under a lower bar: every core.
  EXPECT_EQ(DefaultIntraOpThreads(*entries, 2, /*large_parameters=*/1000), 2);
  // Unreadable files count as small.
  entries->erase(entries->begin());
  EXPECT_EQ(DefaultIntraOpThreads(*entries, 2, 1000), 1);
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
  auto config = ldm::testing::SmallStableDiffusionConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  std::ofstream(dir_ / "configs" / "sd-v1-small.json")
      << ldm::ModelConfigToJson(*config);
  WriteCheckpoint(*config, dir_ / "sd.safetensors");

  auto entries = Registry(R"({"models": [{"name": "sd",
      "weights": "sd.safetensors", "tasks": ["text_to_image"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll().ok());
  auto found = registry.Find("", ldm::Task::kTextToImage);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ((*found)->model->config().name, "sd-v1-small");
  ldm::GenerationRequest request;
  request.prompt = "an astronaut riding a (horse:1.2) on mars";
  request.sampler.steps = 2;
  auto images = ldm::testing::RunToTensor(*(*found)->model, request);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->sizes(), (at::IntArrayRef{1, 16, 16, 3}));
}

// A BERT-style vocabulary (special tokens, words, "##" pieces) for the
// paper's text-to-image family at test width.
std::filesystem::path WriteWordPieceVocab(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "vocab.txt";
  std::ofstream out(path);
  for (const char* token : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red",
                            "circle", "##s", "on", "mars"}) {
    out << token << "\n";
  }
  return path;
}

// A family's config at test width: its structure (conditioning, channels in
// and out, autoencoder kind, attention type, resblock_updown, CLIP or BERT)
// kept, every width and depth reduced.
ldm::ModelConfig AtTestWidth(ldm::ModelConfig config,
                             const std::filesystem::path& dir) {
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
  if (config.text_encoder) {
    config.text_encoder->vocab_file = WriteWordPieceVocab(dir).string();
    config.text_encoder->vocab_size = 10;
    config.text_encoder->dim = 32;
    config.text_encoder->depth = 2;
    config.text_encoder->heads = 2;
    config.text_encoder->dim_head = 8;  // Inner width 16, not dim.
  }
  config.ae.ch = 32;
  config.ae.ch_mult = {1, 2};
  config.ae.num_res_blocks = 1;
  config.ae.attn_resolutions = {};
  if (config.ae.kind == ldm::AutoencoderKind::kVq) config.ae.n_embed = 64;
  return config;
}

class FamilyTest : public ModelRegistryTest,
                   public ::testing::WithParamInterface<std::string> {};

// Each shipped family: a checkpoint the test writes with the family's key
// names, listed without a config, detected among all families at test
// width, and run through its pipeline.
TEST_P(FamilyTest, DetectedAndRunThroughItsPipeline) {
  for (const char* family : {"sd-v1", "sd-v1-inpainting", "ldm-sr-4x",
                             "ldm-inpainting-big", "ldm-txt2img-f8"}) {
    auto config = ldm::ReadModelConfig(std::string(LDMSERVE_SOURCE_DIR) +
                                       "/models/configs/" + family + ".json");
    ASSERT_TRUE(config.ok()) << config.status();
    std::ofstream(dir_ / "configs" / (std::string(family) + ".json"))
        << ldm::ModelConfigToJson(AtTestWidth(*config, dir_));
  }
  auto config = ldm::ReadModelConfig(
      (dir_ / "configs" / (GetParam() + ".json")).string());
  ASSERT_TRUE(config.ok()) << config.status();
  WriteCheckpoint(*config, dir_ / "family.safetensors");
  // No "tasks": every task the model runs.
  auto entries = Registry(R"({"models": [{"name": "m",
      "weights": "family.safetensors"}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll().ok());
  const ldm::Task task = config->kind == ldm::ModelKind::kInpaint
                             ? ldm::Task::kInpaint
                         : config->kind == ldm::ModelKind::kSuperResolution
                             ? ldm::Task::kSuperResolution
                             : ldm::Task::kTextToImage;
  auto found = registry.Find("m", task);
  ASSERT_TRUE(found.ok()) << found.status();
  const ldm::LatentDiffusion& model = *(*found)->model;
  EXPECT_EQ(model.config().name, GetParam() + "-small");

  ldm::GenerationRequest request;
  request.prompt = "a (red:1.2) circles on mars";
  request.sampler.steps = 2;
  const int64_t side = 8 * model.config().ae.DownsamplingFactor();
  if (task == ldm::Task::kInpaint) {
    at::Tensor mask = at::zeros({1, 1, side, side});
    mask.slice(2, 0, side / 2).fill_(1);
    request.task = ldm::Inpaint{
        ldm::RgbImageFromTensor(at::rand({1, 3, side, side}) * 2 - 1),
        ldm::MaskFromTensor(mask)};
  } else if (task == ldm::Task::kSuperResolution) {
    request.task = ldm::SuperResolution{
        ldm::RgbImageFromTensor(at::rand({1, 3, 8, 8}) * 2 - 1)};
  }
  auto images = ldm::testing::RunToTensor(model, request);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->sizes(), (at::IntArrayRef{1, side, side, 3}));
}

// CompVis -> diffusers, the other way round from the loader and written as
// the diffusers project's conversion script lists it: prefix pairs, block
// by block, for this config's depth, with the renames inside each block.
struct PrefixPair {
  std::string compvis, diffusers;
  std::vector<std::pair<std::string, std::string>> inner;
  bool linear_weights = false;  // 1x1 convolutions stored as linear layers.
};

std::vector<PrefixPair> CompVisToDiffusers(const ldm::ModelConfig& config) {
  const std::vector<std::pair<std::string, std::string>> unet_resnet = {
      {"in_layers.0.", "norm1."},
      {"in_layers.2.", "conv1."},
      {"emb_layers.1.", "time_emb_proj."},
      {"out_layers.0.", "norm2."},
      {"out_layers.3.", "conv2."},
      {"skip_connection.", "conv_shortcut."}};
  const std::vector<std::pair<std::string, std::string>> vae_resnet = {
      {"nin_shortcut.", "conv_shortcut."}};
  const std::vector<std::pair<std::string, std::string>> vae_attention = {
      {"norm.", "group_norm."},
      {"q.", "to_q."},
      {"k.", "to_k."},
      {"v.", "to_v."},
      {"proj_out.", "to_out.0."}};
  const std::string unet = "model.diffusion_model.";
  std::vector<PrefixPair> pairs = {
      {unet + "time_embed.0.", "unet/time_embedding.linear_1.", {}},
      {unet + "time_embed.2.", "unet/time_embedding.linear_2.", {}},
      {unet + "input_blocks.0.0.", "unet/conv_in.", {}},
      {unet + "out.0.", "unet/conv_norm_out.", {}},
      {unet + "out.2.", "unet/conv_out.", {}},
      {unet + "middle_block.0.", "unet/mid_block.resnets.0.", unet_resnet},
      {unet + "middle_block.1.", "unet/mid_block.attentions.0.", {}},
      {unet + "middle_block.2.", "unet/mid_block.resnets.1.", unet_resnet},
      {"cond_stage_model.transformer.", "text_encoder/", {}},
  };
  const int levels = static_cast<int>(config.unet.channel_mult.size());
  const int res = static_cast<int>(config.unet.num_res_blocks);
  auto has_attention = [&](int level) {
    const auto& at = config.unet.attention_resolutions;
    return std::find(at.begin(), at.end(), 1 << level) != at.end();
  };
  for (int i = 0; i < levels; ++i) {
    for (int j = 0; j < res; ++j) {
      const std::string block =
          absl::StrCat(unet, "input_blocks.", i * (res + 1) + j + 1);
      pairs.push_back(
          {block + ".0.",
           absl::StrCat("unet/down_blocks.", i, ".resnets.", j, "."),
           unet_resnet});
      pairs.push_back(
          {block + ".1.",
           absl::StrCat("unet/down_blocks.", i, ".attentions.", j, "."),
           {}});
    }
    const int up_level = levels - 1 - i;  // Diffusers' up block i.
    for (int j = 0; j <= res; ++j) {
      const std::string block =
          absl::StrCat(unet, "output_blocks.", i * (res + 1) + j);
      pairs.push_back({block + ".0.",
                       absl::StrCat("unet/up_blocks.", i, ".resnets.", j, "."),
                       unet_resnet});
      pairs.push_back(
          {block + ".1.",
           absl::StrCat("unet/up_blocks.", i, ".attentions.", j, "."),
           {}});
    }
    if (i < levels - 1) {
      pairs.push_back(
          {absl::StrCat(unet, "input_blocks.", (i + 1) * (res + 1), ".0.op."),
           absl::StrCat("unet/down_blocks.", i, ".downsamplers.0.conv."),
           {}});
      pairs.push_back(
          {absl::StrCat(unet, "output_blocks.", i * (res + 1) + res, ".",
                        has_attention(up_level) ? 2 : 1, ".conv."),
           absl::StrCat("unet/up_blocks.", i, ".upsamplers.0.conv."),
           {}});
    }
  }
  const std::string vae = "first_stage_model.";
  const int vae_levels = static_cast<int>(config.ae.ch_mult.size());
  for (int i = 0; i < vae_levels; ++i) {
    for (int j = 0; j <= config.ae.num_res_blocks; ++j) {
      pairs.push_back(
          {absl::StrCat(vae, "encoder.down.", i, ".block.", j, "."),
           absl::StrCat("vae/encoder.down_blocks.", i, ".resnets.", j, "."),
           vae_resnet});
      pairs.push_back(
          {absl::StrCat(vae, "decoder.up.", vae_levels - 1 - i, ".block.", j,
                        "."),
           absl::StrCat("vae/decoder.up_blocks.", i, ".resnets.", j, "."),
           vae_resnet});
    }
    pairs.push_back(
        {absl::StrCat(vae, "encoder.down.", i, ".downsample.conv."),
         absl::StrCat("vae/encoder.down_blocks.", i, ".downsamplers.0.conv."),
         {}});
    pairs.push_back(
        {absl::StrCat(vae, "decoder.up.", vae_levels - 1 - i,
                      ".upsample.conv."),
         absl::StrCat("vae/decoder.up_blocks.", i, ".upsamplers.0.conv."),
         {}});
  }
  for (const char* coder : {"encoder", "decoder"}) {
    const std::string c = coder;
    pairs.push_back({vae + c + ".mid.block_1.",
                     "vae/" + c + ".mid_block.resnets.0.", vae_resnet});
    pairs.push_back({vae + c + ".mid.block_2.",
                     "vae/" + c + ".mid_block.resnets.1.", vae_resnet});
    pairs.push_back({vae + c + ".mid.attn_1.",
                     "vae/" + c + ".mid_block.attentions.0.", vae_attention,
                     true});
    pairs.push_back(
        {vae + c + ".norm_out.", "vae/" + c + ".conv_norm_out.", {}});
    pairs.push_back({vae + c + ".", "vae/" + c + ".", {}});
  }
  pairs.push_back({vae, "vae/", {}});
  return pairs;
}

// Writes `model` as a diffusers folder: unet/, vae/, text_encoder/ with
// their weights files, the VAE's attention projections as linear weights.
void WriteDiffusersFolder(ldm::LatentDiffusion& model,
                          const std::filesystem::path& dir) {
  const std::vector<PrefixPair> pairs = CompVisToDiffusers(model.config());
  std::map<std::string, std::map<std::string, at::Tensor>> parts;
  for (const auto& [name, tensor] : model.MutableParameters()) {
    // The longest CompVis prefix that fits.
    const PrefixPair* best = nullptr;
    for (const PrefixPair& pair : pairs) {
      if (absl::StartsWith(name, pair.compvis) &&
          (best == nullptr || pair.compvis.size() > best->compvis.size())) {
        best = &pair;
      }
    }
    ASSERT_NE(best, nullptr) << name;
    std::string rest = name.substr(best->compvis.size());
    for (const auto& [from, to] : best->inner) {
      if (absl::StartsWith(rest, from)) {
        rest = to + rest.substr(from.size());
        break;
      }
    }
    const std::string full = best->diffusers + rest;
    const size_t slash = full.find('/');
    at::Tensor value = tensor;
    if (best->linear_weights && value.dim() == 4) {
      value = value.reshape({value.size(0), value.size(1)});
    }
    parts[full.substr(0, slash)][full.substr(slash + 1)] = value;
  }
  for (const auto& [part, tensors] : parts) {
    std::filesystem::create_directories(dir / part);
    const std::string file = part == "text_encoder"
                                 ? "model.safetensors"
                                 : "diffusion_pytorch_model.safetensors";
    ASSERT_TRUE(
        ldm::WriteSafetensors((dir / part / file).string(), tensors).ok());
  }
  std::ofstream(dir / "model_index.json")
      << R"({"_class_name": "StableDiffusionPipeline"})";
}

// A diffusers folder of an SD v1 model, listed without a config, is
// detected as the family and gives exactly the single file's images.
TEST_F(ModelRegistryTest, DiffusersFolderIsDetectedAndMatchesTheSingleFile) {
  auto family = ldm::ReadModelConfig(std::string(LDMSERVE_SOURCE_DIR) +
                                     "/models/configs/sd-v1.json");
  ASSERT_TRUE(family.ok()) << family.status();
  const ldm::ModelConfig config = AtTestWidth(*family, dir_);
  std::ofstream(dir_ / "configs" / "sd-v1-small.json")
      << ldm::ModelConfigToJson(config);
  auto model = ldm::LatentDiffusion::CreateRandom(config, 3);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE((*model)->Save((dir_ / "sd.safetensors").string()).ok());
  WriteDiffusersFolder(**model, dir_ / "sd-diffusers");

  auto entries = Registry(R"({"models": [
      {"name": "file", "weights": "sd.safetensors", "tasks": ["text_to_image"]},
      {"name": "folder", "weights": "sd-diffusers",
       "tasks": ["text_to_image"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll().ok());
  std::vector<at::Tensor> images;
  for (const char* name : {"file", "folder"}) {
    auto found = registry.Find(name, ldm::Task::kTextToImage);
    ASSERT_TRUE(found.ok()) << found.status();
    EXPECT_EQ((*found)->model->config().name, "sd-v1-small");
    ldm::GenerationRequest request;
    request.prompt = "a red circle";
    request.seed = 11;
    request.sampler.steps = 3;
    auto generated = ldm::testing::RunToTensor(*(*found)->model, request);
    ASSERT_TRUE(generated.ok()) << generated.status();
    images.push_back(*generated);
  }
  EXPECT_TRUE(at::equal(images[0], images[1]));
}

TEST_F(ModelRegistryTest, WeightBytesFollowEachStagesDtype) {
  ModelEntry entry;
  entry.name = "mine";
  entry.weights_path = (dir_ / "known.safetensors").string();
  entry.configs_dir = (dir_ / "configs").string();
  auto f32 = EstimateWeightBytes(entry, "cpu", "f32");
  ASSERT_TRUE(f32.ok()) << f32.status();
  ModelRegistry registry({entry});
  const absl::Status loaded = registry.LoadAll({"cpu"}, "f32");
  ASSERT_TRUE(loaded.ok()) << loaded;
  auto found = registry.Find("mine", ldm::Task::kSuperResolution);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*f32, (*found)->model->NumParameters() * 4);
  // A f16 UNet halves the UNet's share only: the autoencoder stays f32.
  auto f16 = EstimateWeightBytes(entry, "cpu", "f16");
  ASSERT_TRUE(f16.ok()) << f16.status();
  EXPECT_LT(*f16, *f32);
  EXPECT_GT(*f16, *f32 / 2);
  entry.vae_dtype = "f16";
  auto all_f16 = EstimateWeightBytes(entry, "cpu", "f16");
  ASSERT_TRUE(all_f16.ok()) << all_f16.status();
  EXPECT_EQ(*all_f16, *f32 / 2);
}

TEST_F(ModelRegistryTest, AnUnloadingModelTakesNoJobsAndWaitsForItsLeases) {
  auto entries = Registry(R"({"models": [{"name": "mine",
      "weights": "known.safetensors", "tasks": ["super_resolution"]}]})");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ModelRegistry registry(*entries);
  ASSERT_TRUE(registry.LoadAll().ok());
  auto lease = registry.Find("mine", ldm::Task::kSuperResolution);
  ASSERT_TRUE(lease.ok()) << lease.status();
  std::shared_ptr<const ModelRegistry::Model> held = *std::move(lease);
  bool checked = false;
  // Called once the model is UNLOADING; the unload waits for the lease
  // held here, which this callback gives back last.
  const absl::Status unloaded = registry.Unload("mine", [&] {
    auto refused = registry.Find("mine", ldm::Task::kSuperResolution);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr("being unloaded"));
    ASSERT_EQ(registry.Snapshot().size(), 1u);
    EXPECT_EQ(registry.Snapshot()[0].state, ModelState::kUnloading);
    EXPECT_EQ(registry.Unload("mine").code(),
              absl::StatusCode::kFailedPrecondition);
    // The model is still whole while leased.
    EXPECT_EQ(held->model->config().name, "tiny-family");
    checked = true;
    held.reset();
  });
  EXPECT_TRUE(unloaded.ok()) << unloaded;
  EXPECT_TRUE(checked);
  EXPECT_TRUE(registry.Snapshot().empty());
  EXPECT_EQ(registry.Find("mine", ldm::Task::kSuperResolution).status().code(),
            absl::StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(ShippedConfigs, FamilyTest,
                         ::testing::Values("sd-v1", "sd-v1-inpainting",
                                           "ldm-sr-4x", "ldm-inpainting-big",
                                           "ldm-txt2img-f8"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace ldmserve
