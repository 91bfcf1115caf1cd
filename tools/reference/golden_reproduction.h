// Reproduces the golden reference sets (../shared/golden, see its README):
// builds the model from a set's config.json, loads weights.safetensors
// through the real loader, feeds the stored inputs and noises through the
// production code paths, and returns every output under the golden key
// names. CompareWithGolden applies the README's tolerances.
//
// What is computed follows the set's `kind` and `conditioning_key`, never
// its folder name: crossattn (txt2img) sets get DDIM (eta 0 and 1), PLMS,
// DDPM and img2img; concat (super-resolution) sets DDIM, PLMS and DDPM;
// hybrid (inpainting) sets DDIM and the inpaint conditioning.
#ifndef LDMSERVE_TOOLS_REFERENCE_GOLDEN_REPRODUCTION_H_
#define LDMSERVE_TOOLS_REFERENCE_GOLDEN_REPRODUCTION_H_

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/ldm/safetensors.h"

namespace ldm::reference {

absl::StatusOr<std::map<std::string, at::Tensor>> ReproduceGoldenSet(
    const std::string& set_dir);

struct KeyComparison {
  std::string key;
  double error = 0;  // rel_max, or the share of pixels off for *_u8.
  double tolerance = 0;
  bool passed = false;
  std::string detail;  // Why it failed (missing, shape, ...).
};

// Compares every golden output (inputs, stored noises and *.dbg.* are not
// outputs) with `actual`; an output `actual` lacks is a failure.
std::vector<KeyComparison> CompareWithGolden(
    const SafetensorsFile& golden,
    const std::map<std::string, at::Tensor>& actual);

}  // namespace ldm::reference

#endif  // LDMSERVE_TOOLS_REFERENCE_GOLDEN_REPRODUCTION_H_
