// Helpers shared by the model tests: a tiny config that builds in
// milliseconds, and the location of the golden reference sets.
#ifndef LDMSERVE_TESTS_LDM_TEST_UTIL_H_
#define LDMSERVE_TESTS_LDM_TEST_UTIL_H_

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/ldm/image_tensor.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/model_config.h"

namespace ldm::testing {

// A txt2img model of a few thousand parameters: 8x8 latents, f = 2.
inline ModelConfig TinyTextToImageConfig() {
  ModelConfig config;
  config.name = "test-tiny";
  config.latent_height = 8;
  config.latent_width = 8;
  config.unet.model_channels = 32;
  config.unet.channel_mult = {1, 2};
  config.unet.num_res_blocks = 1;
  config.unet.attention_resolutions = {2};
  config.unet.num_heads = 2;
  config.unet.context_dim = 16;
  config.unet.use_spatial_transformer = true;
  config.unet.legacy = false;
  config.ae.ch = 32;
  config.ae.ch_mult = {1, 2};
  config.ae.num_res_blocks = 1;
  config.ae.resolution = 16;
  TextEncoderConfig text;
  text.vocab = {"<pad>", "<unk>", "a", "red", "blue", "circle", "square"};
  text.dim = 16;
  text.depth = 1;
  text.heads = 2;
  text.max_length = 8;
  config.text_encoder = text;
  config.ctx_len = text.max_length;
  return config;
}

// RunJob's images as uint8 [N, H, W, 3], for tensor comparisons.
// SD v1's config with every width reduced: the family's real key names
// (model.diffusion_model.*, first_stage_model.*, cond_stage_model.
// transformer.text_model.*) and its CLIP tokenizer, at test size.
inline absl::StatusOr<ModelConfig> SmallStableDiffusionConfig() {
  absl::StatusOr<ModelConfig> config = ReadModelConfig(
      std::string(LDMSERVE_SOURCE_DIR) + "/models/configs/sd-v1.json");
  if (!config.ok()) return config.status();
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
  return config;
}

inline absl::StatusOr<at::Tensor> RunToTensor(
    const LatentDiffusion& model, const GenerationRequest& request) {
  absl::StatusOr<std::vector<RgbImage>> images = RunJob(model, request);
  if (!images.ok()) return images.status();
  return Uint8ImagesTensor(*images);
}

// $LDM_GOLDEN_DIR, else ../shared/golden relative to the source tree.
inline std::string GoldenDir() {
  if (const char* dir = std::getenv("LDM_GOLDEN_DIR")) return dir;
  return std::string(LDMSERVE_SOURCE_DIR) + "/../shared/golden";
}

}  // namespace ldm::testing

#endif  // LDMSERVE_TESTS_LDM_TEST_UTIL_H_
