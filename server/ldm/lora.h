// LoRA adapters (low-rank weight updates) read from safetensors files in the
// two layouts SD v1 adapters come in, and bound to a loaded model:
// - kohya (sd-scripts, A1111): `lora_unet_<module>.lora_down.weight`,
//   `.lora_up.weight`, `.alpha`; `lora_te_<module>...` for the text encoder;
//   <module> is the diffusers module path with '_' for '.';
// - diffusers / PEFT: `unet.<module>.lora_A.weight`, `.lora_B.weight`
//   (`text_encoder.<module>...`), or the older `.lora.down.weight`,
//   `.lora.up.weight` and attention-processor `processor.to_q_lora.down.
//   weight` forms.
// An update's scale is weight * alpha / rank (alpha = rank when the file has
// none). Bound adapters change no weight: layers add them at run time
// (ScopedLowRankUpdates, layers.h), so one model copy serves every job.
//
// Example:
//   LDM_ASSIGN_OR_RETURN(auto adapter,
//   LoraAdapter::Read("styles/ink.safetensors")); LDM_ASSIGN_OR_RETURN(auto
//   bound, BindLoras(model, {{adapter, 0.8}})); ScopedLowRankUpdates
//   active(&bound->updates); model.DenoiseStep(tasks);
#ifndef LDMSERVE_SERVER_LDM_LORA_H_
#define LDMSERVE_SERVER_LDM_LORA_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/ldm/layers.h"

namespace ldm {

class LatentDiffusion;

// Immutable once read; safe to share between threads and models.
class LoraAdapter {
 public:
  enum class Part { kUnet, kTextEncoder };
  struct Layer {
    Part part = Part::kUnet;
    // The module as the file names it, for errors.
    std::string key;
    // Its diffusers path ("down_blocks.0.attentions.0.proj_in",
    // "text_model.encoder.layers.0.self_attn.q_proj"), or a CompVis UNet
    // path ("input_blocks.1.1.proj_in") where the file used those.
    std::string path;
    at::Tensor down;  // CPU, as stored.
    at::Tensor up;
    double alpha = 0;  // = rank where the file has none.
  };

  // INVALID_ARGUMENT (naming the key) for a file that is not a LoRA of a
  // known layout, or a layer without both halves.
  static absl::StatusOr<std::shared_ptr<const LoraAdapter>> Read(
      const std::string& path);

  const std::vector<Layer>& layers() const { return layers_; }
  // What its tensors take in memory.
  int64_t bytes() const { return bytes_; }

 private:
  std::vector<Layer> layers_;
  int64_t bytes_ = 0;
};

// The parameter name (".weight" of a Linear or Conv2d) `layer` updates in
// `model`.
std::string LoraTarget(const LoraAdapter::Layer& layer,
                       const LatentDiffusion& model);

// Adapters bound to one model copy: the updates of its layers, on its
// device and in its dtypes (what ScopedLowRankUpdates activates).
struct BoundLoras {
  LowRankUpdates updates;
};

// `adapters` with their weights bound to `model`. INVALID_ARGUMENT naming
// the key when a layer is not in the model or its shapes do not fit.
absl::StatusOr<std::shared_ptr<const BoundLoras>> BindLoras(
    const LatentDiffusion& model,
    const std::vector<std::pair<std::shared_ptr<const LoraAdapter>, double>>&
        adapters);

// Whether every layer of `adapter` fits `model` (BindLoras' checks, nothing
// copied).
absl::Status CheckLoraFits(const LoraAdapter& adapter,
                           const LatentDiffusion& model);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_LORA_H_
