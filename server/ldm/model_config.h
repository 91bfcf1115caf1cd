// A model's architecture and schedule, as a small JSON file beside its
// weights. Field names mirror the reference configs (the CompVis YAML's
// unet_config / first_stage_config params and the golden sets' config.json):
//
//   {"kind": "txt2img", "conditioning_key": "crossattn",
//    "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000,
//    "scale_factor": 0.18215, "latent_hw": [16, 16], "ctx_len": 77,
//    "unet": {"in_channels": 4, "model_channels": 32, ...},
//    "ae": {"embed_dim": 4, "ddconfig": {"ch": 32, "ch_mult": [1, 2], ...}},
//    "text_encoder": {"vocab": ["a", "red", ...], "dim": 32, ...}}
#ifndef LDMSERVE_SERVER_LDM_MODEL_CONFIG_H_
#define LDMSERVE_SERVER_LDM_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/ldm/clip_text_model.h"
#include "server/ldm/schedule.h"

namespace ldm {

struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  int64_t model_channels = 32;
  std::vector<int64_t> channel_mult = {1, 2};
  int64_t num_res_blocks = 1;
  std::vector<int64_t> attention_resolutions;  // Downsampling factors.
  int64_t num_heads = -1;
  int64_t num_head_channels = -1;
  int64_t context_dim = 0;  // 0 = no cross-attention.
  int64_t transformer_depth = 1;
  bool use_spatial_transformer = false;
  bool legacy = true;
  bool use_scale_shift_norm = false;
  bool resblock_updown = false;
  int64_t num_classes = 0;  // > 0 enables `label_emb`.
};

// "kl": AutoencoderKL (diagonal Gaussian posterior); "vq": VQModelInterface
// (vector quantiser with `n_embed` codes, applied when decoding).
enum class AutoencoderKind { kKl, kVq };
// ddconfig.attn_type: "vanilla" attention blocks, or "none" (identities).
enum class AutoencoderAttention { kVanilla, kNone };

struct AutoencoderConfig {
  AutoencoderKind kind = AutoencoderKind::kKl;
  int64_t n_embed = 0;
  AutoencoderAttention attn_type = AutoencoderAttention::kVanilla;
  int64_t ch = 32;
  int64_t out_ch = 3;
  int64_t in_channels = 3;
  std::vector<int64_t> ch_mult = {1, 2};
  int64_t num_res_blocks = 1;
  std::vector<int64_t> attn_resolutions;
  int64_t resolution = 64;
  int64_t z_channels = 4;
  bool double_z = true;
  int64_t embed_dim = 4;

  // Pixels per latent element along each side.
  int64_t DownsamplingFactor() const {
    return int64_t{1} << (ch_mult.size() - 1);
  }
};

// The x-transformers text encoder of the paper's text-to-image model
// (BERTEmbedder) and of our own small models, which train it jointly with
// the UNet the same way. Tokens: our word-level `vocab` list, or the
// paper's BERT WordPiece vocabulary file.
struct TextEncoderConfig {
  std::vector<std::string> vocab;  // Index = token id; 0 is padding.
  // BERT's vocab.txt (relative paths are resolved against the config
  // file's folder) and its size (30522 for bert-base-uncased); used
  // instead of `vocab` when set.
  std::string vocab_file;
  int64_t vocab_size = 0;
  int64_t dim = 32;
  int64_t depth = 2;
  int64_t heads = 2;
  // Per attention head; 0 = dim / heads (our models). x-transformers'
  // default, which the paper's encoder uses, is 64.
  int64_t dim_head = 0;
  int64_t max_length = 16;

  bool uses_wordpiece() const { return !vocab_file.empty(); }
  int64_t NumTokens() const {
    return uses_wordpiece() ? vocab_size : static_cast<int64_t>(vocab.size());
  }
  int64_t HeadDim() const { return dim_head > 0 ? dim_head : dim / heads; }
};

// SD v1's conditioning: the CLIP text transformer and its tokenizer.
struct ClipCondition {
  ClipTextConfig text;
  std::string tokenizer_dir;  // vocab.json + merges.txt; relative paths are
                              // resolved against the config file's folder.
  int clip_skip = 1;          // 2 = the penultimate layer.
};

// What the model was trained for ("kind": txt2img | inpaint | sr). A
// text-to-image model also runs image-to-image and inpaints by blending in
// latent space; the others run their own task only.
enum class ModelKind { kTextToImage, kInpaint, kSuperResolution };
// How the UNet takes its conditioning (the reference's conditioning_key):
// "crossattn" (the text through cross-attention), "concat" (channels
// concatenated to its input), "hybrid" (both) or "adm" (class labels through
// the UNet's label embedding, unet.num_classes).
enum class ConditioningKey { kCrossAttention, kConcat, kHybrid, kAdm };
// What the UNet predicts ("parameterization": eps | v).
enum class Parameterization { kEps, kV };

struct ModelConfig {
  std::string name;
  ModelKind kind = ModelKind::kTextToImage;
  ConditioningKey conditioning_key = ConditioningKey::kCrossAttention;
  Parameterization parameterization = Parameterization::kEps;
  BetaSchedule beta_schedule = BetaSchedule::kLinear;
  double linear_start = 0.00085;
  double linear_end = 0.012;
  int64_t timesteps = 1000;
  double scale_factor = 0.18215;
  // The guidance scale a request that names none gets; 0 = the server's
  // default. Small models trained here want less than SD's 7.5.
  double default_guidance_scale = 0;
  // The DDIM eta a request that names none gets, in [0, 1]. The paper
  // samples its super-resolution models with eta 1 (its notebook's
  // convsample_ddim), which reads the low-res image better than eta 0.
  double default_eta = 0;
  int64_t latent_height = 16;
  int64_t latent_width = 16;
  int64_t ctx_len = 77;
  UNetConfig unet;
  AutoencoderConfig ae;
  std::optional<TextEncoderConfig> text_encoder;
  // "cond_stage": {"kind": "clip", "tokenizer": "tokenizer", "clip_skip": 1,
  //                <CLIPTextConfig fields>}
  std::optional<ClipCondition> clip;

  int64_t native_height() const {
    return latent_height * ae.DownsamplingFactor();
  }
  int64_t native_width() const {
    return latent_width * ae.DownsamplingFactor();
  }
};

// The whole file at `path`; NOT_FOUND naming it when it cannot be read.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text);
absl::StatusOr<ModelConfig> ReadModelConfig(const std::string& path);
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_MODEL_CONFIG_H_
