// The task pipelines of a LatentDiffusion: how each task prepares its
// images for the denoising loop (PrepareJob), how a job is finished (decode,
// paste-back) and previewed.
#include <c10/core/InferenceMode.h>

#include <variant>

#include "server/common/status_macros.h"
#include "server/ldm/image_tensor.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/torch_boundary.h"

namespace ldm {
namespace {

// A fixed latent -> RGB projection for previews. For 4-channel latents these
// are the widely used coefficients fitted for SD v1's autoencoder; other
// channel counts use the channel mean as grey.
at::Tensor PreviewProjection(int64_t channels) {
  if (channels == 4) {
    return at::tensor({0.298f, 0.207f, 0.208f, 0.187f, 0.286f, 0.173f, -0.158f,
                       0.189f, 0.264f, -0.184f, -0.271f, -0.473f})
        .reshape({4, 3});
  }
  return at::full({channels, 3}, 1.0f / static_cast<float>(channels));
}

}  // namespace

absl::StatusOr<LatentDiffusion::InpaintConditioning>
LatentDiffusion::PrepareInpaint(const at::Tensor& image, const at::Tensor& mask,
                                const at::Tensor& noise) const {
  InpaintConditioning result;
  LDM_RETURN_IF_ERROR(CallTorchStatus("inpaint conditioning", [&] {
    c10::InferenceMode inference;
    const at::Tensor device_mask = mask.to(options_.device, at::kFloat);
    result.masked_image =
        image.to(options_.device, at::kFloat) * (device_mask < 0.5);
    result.mask_latent =
        at::upsample_nearest2d(device_mask, {noise.size(2), noise.size(3)});
    return absl::OkStatus();
  }));
  LDM_ASSIGN_OR_RETURN(result.masked_image_latent,
                       first_stage_->EncodeImages(result.masked_image, noise));
  LDM_RETURN_IF_ERROR(CallTorchStatus("inpaint conditioning", [&] {
    c10::InferenceMode inference;
    // runwayml's SD inpainting (hybrid) puts the mask first; the paper's
    // concat-conditioned LDM inpainting model the masked image's latent.
    result.c_concat =
        config_.conditioning_key == ConditioningKey::kHybrid
            ? at::cat({result.mask_latent, result.masked_image_latent}, 1)
            : at::cat({result.masked_image_latent, result.mask_latent}, 1);
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<RgbImage> LatentDiffusion::Preview(
    const PreparedJob& job) const {
  LDM_ASSIGN_OR_RETURN(at::Tensor image, CallTorch("preview", [&] {
                         c10::InferenceMode inference;
                         const at::Tensor& latent =
                             job.images.front().sampler->predicted_x0();
                         at::Tensor x = latent.to(at::kCPU, at::kFloat)[0];
                         at::Tensor rgb = at::einsum(
                             "chw,cr->rhw", {x, PreviewProjection(x.size(0))});
                         return ToUint8Images(rgb.unsqueeze(0));
                       }));
  LDM_ASSIGN_OR_RETURN(std::vector<RgbImage> images,
                       RgbImagesFromTensor(image));
  return std::move(images.front());
}

namespace {

// A generator for an image's encoder noise, independent of its sampler's.
at::Generator EncoderGenerator(uint64_t image_seed) {
  return MakeGenerator(image_seed ^ 0x9E3779B97F4A7C15ull);
}

}  // namespace

absl::StatusOr<PreparedJob> LatentDiffusion::PrepareJob(
    const GenerationRequest& request) const {
  return PrepareJobWithText(request, nullptr);
}

std::vector<absl::StatusOr<PreparedJob>> LatentDiffusion::PrepareJobs(
    absl::Span<const GenerationRequest* const> requests) const {
  std::vector<absl::StatusOr<PreparedJob>> prepared;
  if (!has_text_encoder() || requests.size() < 2) {
    for (const GenerationRequest* request : requests) {
      prepared.push_back(PrepareJob(*request));
    }
    return prepared;
  }
  // Each job's two rows, [uncond; cond], in one encoder call for all.
  std::vector<PromptGroup> groups;
  for (const GenerationRequest* request : requests) {
    groups.push_back(PromptGroup{{request->negative_prompt, request->prompt},
                                 request->clip_skip});
  }
  const absl::StatusOr<std::vector<TextConditioning>> text =
      text_->EncodeGroups(groups, options_.device, precision_.unet);
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!text.ok()) {
      prepared.push_back(text.status());
      continue;
    }
    prepared.push_back(PrepareJobWithText(*requests[i], &(*text)[i]));
  }
  return prepared;
}

absl::StatusOr<PreparedJob> LatentDiffusion::PrepareJobWithText(
    const GenerationRequest& request, const TextConditioning* text) const {
  PreparedJob job;
  LDM_ASSIGN_OR_RETURN(job.geometry, CheckRequest(capabilities_, request));
  TextConditioning encoded;
  if (has_text_encoder()) {
    if (text == nullptr) {
      LDM_ASSIGN_OR_RETURN(encoded,
                           EncodeText({request.negative_prompt, request.prompt},
                                      request.clip_skip));
      text = &encoded;
    }
    job.warnings = text->warnings;
  }
  LDM_RETURN_IF_ERROR(CallTorchStatus("prepare", [&] {
    at::Tensor cond, uncond;
    if (has_text_encoder()) {
      cond = text->context.slice(0, 1, 2);
      uncond = text->context.slice(0, 0, 1);
    }
    return PrepareImages(request, cond, uncond, job);
  }));
  return job;
}

absl::Status LatentDiffusion::PrepareImages(const GenerationRequest& request,
                                            const at::Tensor& cond,
                                            const at::Tensor& uncond,
                                            PreparedJob& job) const {
  const int64_t height = job.geometry.latent_height;
  const int64_t width = job.geometry.latent_width;
  const Task task = TaskOf(request.task);
  // The task's pixels as tensors, once per job.
  at::Tensor pixels, repaint, low_res;
  if (const auto* image_to_image = std::get_if<ImageToImage>(&request.task)) {
    LDM_ASSIGN_OR_RETURN(pixels, ImageTensor(image_to_image->init_image));
  } else if (const auto* inpaint = std::get_if<Inpaint>(&request.task)) {
    LDM_ASSIGN_OR_RETURN(pixels, ImageTensor(inpaint->image));
    LDM_ASSIGN_OR_RETURN(repaint, MaskTensor(inpaint->mask));
    job.paste_back = *inpaint;
  } else if (const auto* upscale =
                 std::get_if<SuperResolution>(&request.task)) {
    LDM_ASSIGN_OR_RETURN(low_res, ImageTensor(upscale->low_res_image));
    low_res = low_res.to(options_.device, at::kFloat);
  }
  const bool dedicated_inpaint = config_.kind == ModelKind::kInpaint;

  const at::TensorOptions latent_options =
      at::TensorOptions().dtype(at::kFloat).device(options_.device);
  for (int i = 0; i < request.num_images; ++i) {
    const uint64_t seed = ImageSeed(request.seed, i);
    at::Generator encoder_generator = EncoderGenerator(seed);
    auto encoder_noise = [&] {
      c10::InferenceMode inference;
      return StandardNormal({1, config_.ae.embed_dim, height, width},
                            encoder_generator, latent_options);
    };
    at::Tensor concat, init_latent;
    std::optional<ImageTask::Blend> blend;
    switch (task) {
      case Task::kTextToImage:
        break;
      case Task::kImageToImage: {
        LDM_ASSIGN_OR_RETURN(
            init_latent, first_stage_->EncodeImages(pixels, encoder_noise()));
        break;
      }
      case Task::kInpaint: {
        const at::Tensor noise = encoder_noise();
        if (dedicated_inpaint) {
          LDM_ASSIGN_OR_RETURN(InpaintConditioning prep,
                               PrepareInpaint(pixels, repaint, noise));
          concat = prep.c_concat;
          break;
        }
        LDM_ASSIGN_OR_RETURN(at::Tensor known,
                             first_stage_->EncodeImages(pixels, noise));
        c10::InferenceMode inference;
        const at::Tensor repaint_latent = at::upsample_nearest2d(
            repaint.to(options_.device), {height, width});
        blend = ImageTask::Blend{1 - repaint_latent, known,
                                 MakeGenerator(seed ^ 0xD1B54A32D192ED03ull)};
        break;
      }
      case Task::kSuperResolution:
        concat = low_res;
        break;
    }
    LDM_ASSIGN_OR_RETURN(
        ImageTask image,
        denoiser_->NewImageTask(seed, height, width, request.sampler, cond,
                                uncond, concat, init_latent));
    image.blend = std::move(blend);
    job.images.push_back(std::move(image));
  }
  return absl::OkStatus();
}

namespace {

// The kept pixels of `input` over `image` (same size; else left as it is).
void PasteKeptPixels(const Inpaint& input, RgbImage& image) {
  if (image.width != input.image.width || image.height != input.image.height) {
    return;
  }
  const std::vector<uint8_t>& repaint = input.mask.repaint;
  for (size_t pixel = 0; pixel < repaint.size(); ++pixel) {
    if (repaint[pixel] != 0) continue;
    for (size_t c = 0; c < 3; ++c) {
      image.pixels[3 * pixel + c] = input.image.pixels[3 * pixel + c];
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<std::vector<RgbImage>>> LatentDiffusion::FinishJobs(
    absl::Span<const PreparedJob* const> jobs) const {
  std::vector<at::Tensor> latents;
  for (const PreparedJob* job : jobs) {
    for (const ImageTask& image : job->images) {
      latents.push_back(image.sampler->latent());
    }
  }
  LDM_ASSIGN_OR_RETURN(at::Tensor decoded,
                       first_stage_->DecodeToImages(latents));
  LDM_ASSIGN_OR_RETURN(std::vector<RgbImage> images,
                       RgbImagesFromTensor(decoded));
  std::vector<std::vector<RgbImage>> finished;
  auto next = images.begin();
  for (const PreparedJob* job : jobs) {
    const auto end = next + static_cast<int64_t>(job->images.size());
    std::vector<RgbImage> own(std::make_move_iterator(next),
                              std::make_move_iterator(end));
    next = end;
    if (job->paste_back) {
      for (RgbImage& image : own) PasteKeptPixels(*job->paste_back, image);
    }
    finished.push_back(std::move(own));
  }
  return finished;
}

absl::StatusOr<std::vector<RgbImage>> RunJob(const LatentDiffusion& model,
                                             const GenerationRequest& request) {
  LDM_ASSIGN_OR_RETURN(PreparedJob job, model.PrepareJob(request));
  std::vector<ImageTask*> pointers;
  for (ImageTask& task : job.images) pointers.push_back(&task);
  while (!job.done()) {
    LDM_RETURN_IF_ERROR(model.DenoiseStep(pointers));
  }
  const PreparedJob* jobs[] = {&job};
  LDM_ASSIGN_OR_RETURN(std::vector<std::vector<RgbImage>> images,
                       model.FinishJobs(jobs));
  return std::move(images.front());
}

}  // namespace ldm
