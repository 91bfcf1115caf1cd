// A checkpoint seen under the CompVis key names the model code declares
// (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`),
// whatever its layout on disk:
// - a single safetensors file: its keys as stored;
// - a diffusers folder (`unet/`, `vae/`, `text_encoder/`, each with its
//   safetensors file): every key renamed by the one table-driven mapping in
//   checkpoint.cc, and the VAE's attention projections (linear layers
//   there, 1x1 convolutions in CompVis) given their 4-d shape.
// Tensors are read straight from the memory-mapped files: no copy is made
// until a loader copies each into its parameter.
//
// Immutable after Open(); safe to share between threads.
//
// Example:
//   LDM_ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(path));
//   LDM_ASSIGN_OR_RETURN(at::Tensor w,
//                        checkpoint->Get("first_stage_model.quant_conv.weight"));
#ifndef LDMSERVE_SERVER_LDM_CHECKPOINT_H_
#define LDMSERVE_SERVER_LDM_CHECKPOINT_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/ldm/safetensors.h"

namespace ldm {

// The diffusers parts this project reads.
enum class DiffusersPart { kUnet, kVae, kTextEncoder };

class Checkpoint {
 public:
  // A `.safetensors` file or a diffusers folder (one holding
  // `model_index.json` or `unet/`).
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Open(
      const std::string& path);
  // An open file, keys as stored.
  static std::shared_ptr<const Checkpoint> FromFile(
      std::shared_ptr<const SafetensorsFile> file);

  const std::string& path() const { return path_; }
  bool is_diffusers_folder() const { return diffusers_folder_; }
  struct TensorInfo {
    at::ScalarType dtype;
    std::vector<int64_t> shape;
  };
  // Key (CompVis name) -> dtype and shape as Get() returns it.
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  bool Contains(const std::string& key) const {
    return tensors_.count(key) > 0;
  }
  // A CPU tensor aliasing the mapped bytes (read-only: clone before writing).
  absl::StatusOr<at::Tensor> Get(const std::string& key) const;
  // As SafetensorsFile::ReleasePages, for the file the key lives in.
  void ReleasePages(const std::string& key) const;

 private:
  struct Source {
    const SafetensorsFile* file;
    std::string key;  // As stored in `file`.
    bool as_conv;     // A 2-d linear weight read as a 1x1 convolution's.
  };
  Checkpoint() = default;
  absl::Status AddDiffusersPart(const std::filesystem::path& folder,
                                DiffusersPart part);

  std::string path_;
  bool diffusers_folder_ = false;
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, Source> sources_;
  std::map<std::string, TensorInfo> tensors_;
};

// Maps the keys of one diffusers part's file to CompVis keys (prefix
// included). The UNet's and VAE's block numbering is derived from the keys
// themselves (resnets per block, which up blocks have attention), so any
// width and depth maps. A key no rule knows is kept, prefixed
// "diffusers.<part>.", so that a strict load reports it as unexpected.
std::map<std::string, std::string> MapDiffusersKeys(
    DiffusersPart part, const std::vector<std::string>& keys);

// One diffusers UNet key under its CompVis name, for a UNet of
// `resnets_per_down_block` (its config's num_res_blocks) whose up blocks
// all have attention (SD v1's do): for keys read alone, as a LoRA file's,
// whose numbering the keys cannot tell. "diffusers.unet.KEY" when no rule
// matches.
std::string MapDiffusersUnetKey(const std::string& key,
                                int64_t resnets_per_down_block);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_CHECKPOINT_H_
