// The precision a model is served in, stage by stage.
//
// A model is served in one dtype (--dtype / the registry's "dtype"), which is
// the denoiser's: the UNet holds nearly all of a step's work. The first stage
// (autoencoder) and the text encoder stay in float32 unless asked: SD v1's
// decoder overflows float16 on some latents (front ends ship a "no-half VAE"
// switch for it), and both run once per image, not once per step. The
// sampler's state (latents, noise) is always float32; each UNet call casts
// its input to the UNet's dtype and its output back.
//
// Example:
//   LDM_ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtypeName("f16"));
//   StagePrecision precision = StagePrecision::ForModelDtype(dtype);
#ifndef LDMSERVE_SERVER_LDM_PRECISION_H_
#define LDMSERVE_SERVER_LDM_PRECISION_H_

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ldm {

// "f32", "f16", "bf16" <-> float32, float16, bfloat16; INVALID_ARGUMENT for
// anything else, with the accepted names.
absl::StatusOr<at::ScalarType> ParseDtypeName(absl::string_view name);
// The inverse; "other" for dtypes that are not served.
std::string DtypeName(at::ScalarType dtype);

// The dtype a device serves by default: float16 on CUDA, float32 elsewhere.
at::ScalarType DefaultDtypeFor(const at::Device& device);

struct StagePrecision {
  at::ScalarType unet = at::kFloat;
  at::ScalarType first_stage = at::kFloat;
  at::ScalarType text = at::kFloat;

  // The UNet in `dtype`, the autoencoder and text encoder in float32.
  static StagePrecision ForModelDtype(at::ScalarType dtype);
  bool operator==(const StagePrecision& other) const {
    return unet == other.unet && first_stage == other.first_stage &&
           text == other.text;
  }
};

// Runs the kernels a model needs (convolution, group and layer norm, matrix
// products, softmax, upsampling) on tiny tensors of `dtype` on `device`:
// FAILED_PRECONDITION naming the dtype and device where this LibTorch lacks
// one (Debian's LibTorch 1.13 has no float16 convolution on the CPU), so a
// model fails at load, not at its first request.
absl::Status CheckDtypeSupported(const at::Device& device,
                                 at::ScalarType dtype);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_PRECISION_H_
