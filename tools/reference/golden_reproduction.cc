#include "tools/reference/golden_reproduction.h"

#include <c10/core/InferenceMode.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/torch_boundary.h"

namespace ldm::reference {
namespace {

// The harness fields of a golden config.json (not model architecture).
struct Harness {
  std::string kind;
  std::string conditioning_key;
  double guidance = 1.0;
  int steps = 5;
  int ddpm_steps = 20;
  double img2img_strength = 0.6;
};

absl::StatusOr<Harness> ReadHarness(const std::string& path) {
  LDM_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  const nlohmann::json root =
      nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  }
  Harness harness;
  harness.kind = root.value("kind", "txt2img");
  harness.conditioning_key = root.value("conditioning_key", "crossattn");
  harness.guidance = root.value("guidance", 1.0);
  harness.steps = root.value("steps", 5);
  harness.ddpm_steps = root.value("ddpm_steps", 20);
  harness.img2img_strength = root.value("img2img_strength", 0.6);
  return harness;
}

// One sampler chain run the reference way, recording what the golden files
// hold.
struct Chain {
  std::vector<at::Tensor> model_t, model_out, guided, x_inter, pred_x0;
};

absl::StatusOr<Chain> RunChain(const LatentDiffusion& model, ImageTask& task,
                               const at::Tensor& noises) {
  Chain chain;
  chain.x_inter.push_back(task.sampler->latent());
  ImageTask* tasks[] = {&task};
  int calls = 0;
  while (!task.sampler->done()) {
    const int step = task.sampler->steps_done();
    if (noises.defined()) task.sampler->SetNextNoise(noises[step]);
    LatentDiffusion::StepTrace trace;
    LDM_RETURN_IF_ERROR(model.DenoiseStep(tasks, &trace));
    chain.model_t.push_back(trace.timesteps.to(at::kLong));
    chain.model_out.push_back(trace.unet_output);
    chain.guided.push_back(trace.guided);
    ++calls;
    if (task.sampler->steps_done() > step) {
      chain.x_inter.push_back(task.sampler->latent());
      chain.pred_x0.push_back(task.sampler->predicted_x0());
    }
  }
  return chain;
}

void Put(std::map<std::string, at::Tensor>* out, const std::string& prefix,
         const Chain& chain, bool guided_model_out = false) {
  (*out)[prefix + ".model_t"] = at::stack(chain.model_t);
  (*out)[prefix + ".model_out"] =
      at::stack(guided_model_out ? chain.guided : chain.model_out);
  (*out)[prefix + ".x_inter"] = at::stack(chain.x_inter);
  if (!chain.pred_x0.empty()) {
    (*out)[prefix + ".pred_x0"] = at::stack(chain.pred_x0);
  }
}

void PutSchedule(std::map<std::string, at::Tensor>* out,
                 const std::string& prefix, const DdimSampler& ddim) {
  (*out)[prefix + ".timesteps"] = at::tensor(ddim.timesteps());
  (*out)[prefix + ".alphas"] = at::tensor(ddim.alphas());
  (*out)[prefix + ".alphas_prev"] = at::tensor(ddim.alphas_prev());
  (*out)[prefix + ".sigmas"] = at::tensor(ddim.sigmas());
}

absl::Status PutImages(const LatentDiffusion& model,
                       std::map<std::string, at::Tensor>* out,
                       const std::string& prefix, const at::Tensor& latent) {
  LDM_ASSIGN_OR_RETURN(at::Tensor image,
                       model.first_stage().DecodeLatents(latent));
  (*out)[prefix + ".image"] = image;
  (*out)[prefix + ".image_u8"] = ToUint8Images(image);
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, at::Tensor>> Reproduce(
    const std::string& dir) {
  LDM_ASSIGN_OR_RETURN(Harness harness, ReadHarness(dir + "/config.json"));
  LDM_ASSIGN_OR_RETURN(std::unique_ptr<LatentDiffusion> model,
                       LatentDiffusion::Load(dir + "/config.json",
                                             dir + "/weights.safetensors"));
  LDM_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> golden,
                       SafetensorsFile::Open(dir + "/golden.safetensors"));
  auto get = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    LDM_ASSIGN_OR_RETURN(at::Tensor tensor, golden->Get(name));
    return tensor.clone();
  };
  auto optional = [&](const std::string& name) {
    return golden->Contains(name) ? golden->Get(name)->clone() : at::Tensor();
  };
  c10::InferenceMode inference;
  std::map<std::string, at::Tensor> out;
  const ModelConfig& config = model->config();
  const bool crossattn = harness.conditioning_key == "crossattn" ||
                         harness.conditioning_key == "hybrid";
  const bool concat = harness.conditioning_key == "concat" ||
                      harness.conditioning_key == "hybrid";

  // The concat conditioning: the inpaint preparation, or the low-res image.
  at::Tensor c_concat;
  if (harness.conditioning_key == "hybrid") {
    LDM_ASSIGN_OR_RETURN(at::Tensor image, get("inpaint.image"));
    LDM_ASSIGN_OR_RETURN(at::Tensor mask, get("inpaint.mask"));
    LDM_ASSIGN_OR_RETURN(at::Tensor noise, get("inpaint.posterior_noise"));
    LDM_ASSIGN_OR_RETURN(LatentDiffusion::InpaintConditioning prep,
                         model->PrepareInpaint(image, mask, noise));
    out["inpaint.masked_image"] = prep.masked_image;
    out["inpaint.mask_latent"] = prep.mask_latent;
    out["inpaint.masked_image_latent"] = prep.masked_image_latent;
    out["inpaint.c_concat"] = prep.c_concat;
    c_concat = prep.c_concat;
  } else if (concat) {
    LDM_ASSIGN_OR_RETURN(c_concat, get("inputs.lr_image"));
  }

  // (a) The UNet, and its low-amplitude twin.
  LDM_ASSIGN_OR_RETURN(at::Tensor x_noisy, get("inputs.x_noisy"));
  LDM_ASSIGN_OR_RETURN(at::Tensor timesteps, get("inputs.timesteps"));
  const at::Tensor context =
      crossattn ? optional("inputs.context") : at::Tensor();
  LDM_RETURN_IF_ERROR(CallTorchStatus("unet", [&] {
    const at::Tensor unet_x =
        c_concat.defined() ? at::cat({x_noisy, c_concat}, 1) : x_noisy;
    out["unet.x"] = unet_x;
    out["unet.t_emb"] =
        TimestepEmbedding(timesteps, config.unet.model_channels);
    out["unet.out"] =
        model->denoiser().unet().Forward(unet_x, timesteps, context);
    out["unet.lowamp.x"] = 1e-3 * unet_x;
    out["unet.lowamp.out"] = model->denoiser().unet().Forward(
        out["unet.lowamp.x"], timesteps, context);
    return absl::OkStatus();
  }));

  // (b) The autoencoder.
  LDM_ASSIGN_OR_RETURN(at::Tensor encode_x, get("ae.encode.x"));
  LDM_ASSIGN_OR_RETURN(at::Tensor encode_noise, get("ae.encode.noise"));
  LDM_ASSIGN_OR_RETURN(at::Tensor lowamp_x, get("ae.lowamp.encode.x"));
  LDM_ASSIGN_OR_RETURN(at::Tensor z_scaled, get("ae.decode.z_scaled"));
  LDM_ASSIGN_OR_RETURN(at::Tensor lowamp_z, get("ae.lowamp.decode.z"));
  LDM_RETURN_IF_ERROR(CallTorchStatus("autoencoder", [&] {
    const Autoencoder& ae = model->first_stage().autoencoder();
    const at::Tensor moments = ae.EncodeMoments(encode_x);
    const DiagonalGaussian posterior = Autoencoder::Posterior(moments);
    out["ae.encode.moments"] = moments;
    out["ae.encode.mean"] = posterior.mean;
    out["ae.encode.logvar"] = posterior.logvar;
    out["ae.encode.std"] = posterior.Std();
    out["ae.encode.sample"] = posterior.SampleWith(encode_noise);
    out["ae.lowamp.encode.moments"] = ae.EncodeMoments(lowamp_x);
    out["ae.decode.z"] = (1.0 / config.scale_factor) * z_scaled;
    out["ae.lowamp.decode.out"] = ae.Decode(lowamp_z);
    return absl::OkStatus();
  }));
  LDM_ASSIGN_OR_RETURN(
      out["ae.encode.z_scaled"],
      model->first_stage().EncodeImages(encode_x, encode_noise));
  LDM_ASSIGN_OR_RETURN(out["ae.decode.out"],
                       model->first_stage().DecodeLatents(z_scaled));

  // (c) The samplers, from the same x_T with CFG as in txt2img.py.
  LDM_ASSIGN_OR_RETURN(at::Tensor x_T, get("inputs.x_T"));
  const at::Tensor cond =
      crossattn ? optional("inputs.cond_context") : at::Tensor();
  const bool guided = crossattn && harness.guidance != 1.0;
  const at::Tensor uncond =
      guided ? optional("inputs.uncond_context") : at::Tensor();
  const DiffusionSchedule& schedule = model->denoiser().schedule();
  const std::vector<int64_t> ddim_timesteps =
      DdimTimesteps(schedule.timesteps(), harness.steps);
  auto make_task = [&](std::unique_ptr<Sampler> sampler) {
    ImageTask task;
    task.sampler = std::move(sampler);
    task.cond = cond;
    task.uncond = uncond;
    task.concat = c_concat;
    task.guidance_scale = static_cast<float>(harness.guidance);
    return task;
  };
  for (const auto& [prefix, eta] :
       {std::pair<std::string, double>{"ddim", 0.0}, {"ddim_eta1", 1.0}}) {
    auto sampler = std::make_unique<DdimSampler>(schedule, ddim_timesteps, eta,
                                                 x_T, MakeGenerator(0));
    PutSchedule(&out, prefix, *sampler);
    ImageTask task = make_task(std::move(sampler));
    const at::Tensor noises =
        eta != 0.0 ? optional(prefix + ".noise") : at::Tensor();
    LDM_ASSIGN_OR_RETURN(Chain chain, RunChain(*model, task, noises));
    Put(&out, prefix, chain);
    if (prefix == "ddim") {
      LDM_RETURN_IF_ERROR(
          PutImages(*model, &out, prefix, chain.x_inter.back()));
    }
  }

  // PLMS and DDPM: the reference cannot batch dict conditionings (hybrid).
  if (harness.conditioning_key != "hybrid") {
    const DdimSampler scalars(schedule, ddim_timesteps, 0.0, x_T,
                              MakeGenerator(0));
    PutSchedule(&out, "plms", scalars);
    ImageTask plms = make_task(std::make_unique<PlmsSampler>(
        schedule, ddim_timesteps, x_T, MakeGenerator(0)));
    LDM_ASSIGN_OR_RETURN(Chain plms_chain, RunChain(*model, plms, {}));
    Put(&out, "plms", plms_chain);
    LDM_RETURN_IF_ERROR(
        PutImages(*model, &out, "plms", plms_chain.x_inter.back()));

    std::vector<int64_t> ddpm_timesteps;
    for (int t = harness.ddpm_steps - 1; t >= 0; --t) {
      ddpm_timesteps.push_back(t);
    }
    out["ddpm.timesteps"] = at::tensor(ddpm_timesteps);
    ImageTask ddpm = make_task(std::make_unique<DdpmSampler>(
        schedule, ddpm_timesteps, x_T, MakeGenerator(0)));
    LDM_ASSIGN_OR_RETURN(Chain ddpm_chain,
                         RunChain(*model, ddpm, optional("ddpm.noise")));
    Put(&out, "ddpm", ddpm_chain, /*guided_model_out=*/true);
    out.erase("ddpm.model_t");
    out.erase("ddpm.pred_x0");
  }

  // img2img (scripts/img2img.py) on text-conditioned models.
  if (harness.conditioning_key == "crossattn") {
    LDM_ASSIGN_OR_RETURN(at::Tensor init_image, get("img2img.init_image"));
    LDM_ASSIGN_OR_RETURN(at::Tensor posterior_noise,
                         get("img2img.posterior_noise"));
    LDM_ASSIGN_OR_RETURN(at::Tensor noise, get("img2img.encode_noise"));
    LDM_ASSIGN_OR_RETURN(
        at::Tensor init_latent,
        model->first_stage().EncodeImages(init_image, posterior_noise));
    const int t_enc =
        static_cast<int>(harness.img2img_strength * harness.steps);
    const DdimSampler encoder(schedule, ddim_timesteps, 0.0, init_latent,
                              MakeGenerator(0));
    // The reference's off-by-one: noised to index t_enc, decoded from
    // index t_enc - 1.
    const at::Tensor z_enc = encoder.NoiseTo(t_enc, init_latent, noise);
    ImageTask task = make_task(std::make_unique<DdimSampler>(
        schedule, ddim_timesteps, 0.0, z_enc, MakeGenerator(0), t_enc));
    std::vector<int64_t> decode_timesteps, indices;
    for (int index = t_enc - 1; index >= 0; --index) {
      decode_timesteps.push_back(ddim_timesteps[index]);
      indices.push_back(index);
    }
    LDM_ASSIGN_OR_RETURN(Chain chain, RunChain(*model, task, {}));
    out["img2img.init_latent"] = init_latent;
    out["img2img.z_enc"] = z_enc;
    out["img2img.t_enc"] = at::tensor(int64_t{t_enc}).reshape({});
    out["img2img.timesteps"] = at::tensor(decode_timesteps);
    out["img2img.indices"] = at::tensor(indices);
    out["img2img.x_inter"] = at::stack(std::vector<at::Tensor>(
        chain.x_inter.begin() + 1, chain.x_inter.end()));
    LDM_RETURN_IF_ERROR(
        PutImages(*model, &out, "img2img", chain.x_inter.back()));
  }
  return out;
}

bool IsGoldenInput(const std::string& key) {
  return absl::StartsWith(key, "inputs.") || absl::StrContains(key, ".dbg.") ||
         absl::EndsWith(key, ".noise") || absl::EndsWith(key, "_noise") ||
         key == "ae.encode.x" || key == "ae.lowamp.encode.x" ||
         key == "ae.decode.z_scaled" || key == "ae.lowamp.decode.z" ||
         key == "img2img.init_image" || key == "inpaint.image" ||
         key == "inpaint.mask";
}

double ToleranceFor(const std::string& key) {
  if (absl::EndsWith(key, ".alphas") || absl::EndsWith(key, ".alphas_prev") ||
      absl::EndsWith(key, ".sigmas")) {
    return 1e-6;
  }
  if (absl::StartsWith(key, "unet.") || absl::StartsWith(key, "ae.") ||
      absl::StartsWith(key, "inpaint.")) {
    return 1e-4;
  }
  return 1e-3;  // Sampler chains.
}

}  // namespace

absl::StatusOr<std::map<std::string, at::Tensor>> ReproduceGoldenSet(
    const std::string& set_dir) {
  absl::StatusOr<std::map<std::string, at::Tensor>> result;
  absl::Status status = CallTorchStatus("reproduce " + set_dir, [&] {
    result = Reproduce(set_dir);
    return result.status();
  });
  if (!status.ok()) return status;
  return result;
}

std::vector<KeyComparison> CompareWithGolden(
    const SafetensorsFile& golden,
    const std::map<std::string, at::Tensor>& actual) {
  std::vector<KeyComparison> comparisons;
  for (const auto& [key, entry] : golden.entries()) {
    if (IsGoldenInput(key)) continue;
    KeyComparison c;
    c.key = key;
    auto it = actual.find(key);
    at::Tensor expected = golden.Get(key).value();
    if (it == actual.end()) {
      c.detail = "not computed";
      comparisons.push_back(c);
      continue;
    }
    const at::Tensor got = it->second.to(at::kCPU);
    if (got.sizes() != expected.sizes()) {
      c.detail = absl::StrCat("shape ", c10::str(got.sizes()),
                              " != ", c10::str(expected.sizes()));
      comparisons.push_back(c);
      continue;
    }
    if (absl::EndsWith(key, "_u8")) {
      // At most 1 level off on at most 0.5 % of the pixels.
      const at::Tensor diff = (got.to(at::kInt) - expected.to(at::kInt)).abs();
      c.tolerance = 0.005;
      c.error = diff.gt(0).to(at::kDouble).mean().item<double>();
      c.passed = diff.max().item<int>() <= 1 && c.error <= c.tolerance;
      if (diff.max().item<int>() > 1) {
        c.detail = absl::StrCat("max diff ", diff.max().item<int>(), " levels");
      }
    } else if (!at::isFloatingType(expected.scalar_type())) {
      c.tolerance = 0;
      c.passed = at::equal(got.to(expected.scalar_type()), expected);
      c.error = c.passed ? 0 : 1;
    } else {
      const at::Tensor e = expected.to(at::kDouble);
      const double scale = e.abs().max().item<double>();
      c.tolerance = ToleranceFor(key);
      c.error = (got.to(at::kDouble) - e).abs().max().item<double>() /
                (scale > 0 ? scale : 1.0);
      c.passed = c.error <= c.tolerance;
    }
    comparisons.push_back(c);
  }
  return comparisons;
}

}  // namespace ldm::reference
