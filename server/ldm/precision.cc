#include "server/ldm/precision.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "server/ldm/torch_boundary.h"

namespace ldm {

absl::StatusOr<at::ScalarType> ParseDtypeName(absl::string_view name) {
  if (name == "f32") return at::kFloat;
  if (name == "f16") return at::kHalf;
  if (name == "bf16") return at::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype '", name, "': expected f32, f16 or bf16"));
}

std::string DtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "f32";
    case at::kHalf:
      return "f16";
    case at::kBFloat16:
      return "bf16";
    default:
      return "other";
  }
}

at::ScalarType DefaultDtypeFor(const at::Device& device) {
  return device.is_cuda() ? at::kHalf : at::kFloat;
}

StagePrecision StagePrecision::ForModelDtype(at::ScalarType dtype) {
  return StagePrecision{dtype, at::kFloat, at::kFloat};
}

absl::Status CheckDtypeSupported(const at::Device& device,
                                 at::ScalarType dtype) {
  absl::Status status = CallTorchStatus("dtype check", [&] {
    c10::InferenceMode inference;
    const auto options = at::TensorOptions().device(device).dtype(dtype);
    const at::Tensor x = at::ones({1, 4, 4, 4}, options);
    at::Tensor y = at::conv2d(x, at::ones({4, 4, 3, 3}, options),
                              at::zeros({4}, options), 1, 1);
    y = at::group_norm(y, 2, at::ones({4}, options), at::zeros({4}, options));
    y = at::upsample_nearest2d(y, {8, 8});
    const at::Tensor tokens = y.flatten(2).transpose(1, 2);  // [1, 64, 4]
    at::Tensor scores =
        at::softmax(at::bmm(tokens, tokens.transpose(1, 2)), -1);
    at::Tensor out = at::layer_norm(at::bmm(scores, tokens), {4});
    out = at::linear(out, at::ones({4, 4}, options));
    (void)out.sum().to(at::kFloat).item<float>();
    return absl::OkStatus();
  });
  if (status.ok()) return status;
  return absl::FailedPreconditionError(absl::StrCat(
      DtypeName(dtype), " on ", device.str(),
      " is not supported by this LibTorch (", status.message(),
      "); serve this device in f32", device.is_cpu() ? " or bf16" : ""));
}

}  // namespace ldm
