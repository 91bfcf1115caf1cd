// A LoRA adapter for the tiny test models, in the layouts the server reads:
// updates of the first attention blocks' query projections (Linear), their
// proj_in (1x1 Conv2d) and the first resnets' conv1 (3x3 Conv2d, as
// LoCon adapters have), with random halves large enough to change an
// image.
#ifndef LDMSERVE_TESTS_LDM_LORA_TEST_UTIL_H_
#define LDMSERVE_TESTS_LDM_LORA_TEST_UTIL_H_

#include <ATen/ATen.h>

#include <map>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/ldm/latent_diffusion.h"

namespace ldm::testing {

struct TestLora {
  struct Layer {
    std::string weight_name;     // CompVis: "model.diffusion_model...weight".
    std::string diffusers_path;  // "down_blocks.0.attentions.0.proj_in".
    at::Tensor down, up;
  };
  std::vector<Layer> layers;

  // kohya: lora_unet_<path with '_'>.lora_down/.lora_up/.alpha.
  std::map<std::string, at::Tensor> Kohya(double alpha) const {
    std::map<std::string, at::Tensor> tensors;
    for (const Layer& layer : layers) {
      const std::string module =
          "lora_unet_" +
          absl::StrReplaceAll(layer.diffusers_path, {{".", "_"}});
      tensors[module + ".lora_down.weight"] = layer.down;
      tensors[module + ".lora_up.weight"] = layer.up;
      tensors[module + ".alpha"] = at::scalar_tensor(alpha);
    }
    return tensors;
  }
  // PEFT: unet.<path>.lora_A/.lora_B, no alpha (= rank), so the up half
  // carries alpha / rank to be the same adapter as Kohya(alpha).
  std::map<std::string, at::Tensor> Peft(double alpha) const {
    std::map<std::string, at::Tensor> tensors;
    for (const Layer& layer : layers) {
      const double scale = alpha / static_cast<double>(layer.down.size(0));
      tensors["unet." + layer.diffusers_path + ".lora_A.weight"] = layer.down;
      tensors["unet." + layer.diffusers_path + ".lora_B.weight"] =
          layer.up * scale;
    }
    return tensors;
  }
};

// CompVis input block n is diffusers down block i, attention j where
// n - 1 = i * (num_res_blocks + 1) + j (the diffusers conversion scripts).
inline TestLora MakeTestLora(LatentDiffusion& model, int64_t rank,
                             uint64_t seed) {
  TestLora lora;
  const int64_t per_level = model.config().unet.num_res_blocks + 1;
  const std::regex adapted(
      R"(model\.diffusion_model\.input_blocks\.(\d+)\.((1)\.(transformer_blocks\.0\.attn1\.to_q|proj_in)|0\.in_layers\.2)\.weight)");
  at::manual_seed(seed);
  for (const auto& [name, weight] : model.MutableParameters()) {
    std::smatch match;
    if (!std::regex_match(name, match, adapted)) continue;
    const int64_t block = std::stoll(match[1]) - 1;
    const bool attention = match[3].matched;
    TestLora::Layer layer;
    layer.weight_name = name;
    layer.diffusers_path = absl::StrCat(
        "down_blocks.", block / per_level,
        attention ? ".attentions." : ".resnets.", block % per_level, ".",
        attention ? match[4].str() : std::string("conv1"));
    std::vector<int64_t> down_shape = {rank, weight.size(1)};
    std::vector<int64_t> up_shape = {weight.size(0), rank};
    if (weight.dim() == 4) {
      down_shape.insert(down_shape.end(), {weight.size(2), weight.size(3)});
      up_shape.insert(up_shape.end(), {1, 1});
    }
    layer.down = at::randn(down_shape) * 0.5;
    layer.up = at::randn(up_shape) * 0.5;
    lora.layers.push_back(std::move(layer));
  }
  return lora;
}

}  // namespace ldm::testing

#endif  // LDMSERVE_TESTS_LDM_LORA_TEST_UTIL_H_
