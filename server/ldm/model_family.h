// Which model family a checkpoint belongs to: among the configs of a folder
// (models/configs/*.json, one per family), the one whose UNet and autoencoder
// parameters the checkpoint holds exactly, by reference key name and shape.
// A Stable Diffusion checkpoint, single file or diffusers folder, is
// recognised this way without its user naming a config.
//
// Thread-safe: a pure function of the file and the folder.
//
// Example:
//   LDM_ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(path));
//   LDM_ASSIGN_OR_RETURN(FamilyMatch family,
//                        DetectFamily(*checkpoint, path, "models/configs"));
//   ... LatentDiffusion::Load(family.config_path, path)
#ifndef LDMSERVE_SERVER_LDM_MODEL_FAMILY_H_
#define LDMSERVE_SERVER_LDM_MODEL_FAMILY_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/ldm/checkpoint.h"

namespace ldm {

struct FamilyMatch {
  std::string name;         // The config's "name".
  std::string config_path;  // The config file.
};

// The family of `file` (read from `path`, which error messages name). When
// none fits: NOT_FOUND, one line naming the file and the closest family with
// what it lacks ("missing tensor X" or "shape of Y is A, expected B"). When
// several fit, the one whose text encoder fits best, then the first by file
// name.
absl::StatusOr<FamilyMatch> DetectFamily(const Checkpoint& file,
                                         const std::string& path,
                                         const std::string& config_dir);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_MODEL_FAMILY_H_
