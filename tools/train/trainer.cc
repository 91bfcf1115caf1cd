#include "tools/train/trainer.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/parallel.h"
#include "server/common/status_macros.h"
#include "server/ldm/autoencoder.h"
#include "server/ldm/image_tensor.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/parameters.h"
#include "server/ldm/safetensors.h"
#include "server/ldm/sampler.h"
#include "server/ldm/text_encoder.h"
#include "server/ldm/torch_boundary.h"
#include "tools/shapes/shapes_world.h"
#include "tools/train/shapes_batch.h"

namespace ldmtrain {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kAutoencoderPrefix[] = "first_stage_model";
constexpr char kStateFile[] = "train_state.safetensors";
constexpr char kAutoencoderFile[] = "ae.safetensors";
constexpr double kAdamBeta1 = 0.9;
constexpr double kAdamBeta2 = 0.999;
constexpr double kAdamEpsilon = 1e-8;
constexpr double kMaxGradNorm = 1.0;
// The paper's KL weight for its f=4 KL autoencoders.
constexpr double kKlWeight = 1e-6;
constexpr int kEvaluationImages = 256;
constexpr double kInitialLogVariance = -10.0;
// The guidance the text-conditioned models are served at (their model cards
// give the quality scores measured at it); SD's 7.5 is tuned for SD.
constexpr double kTextGuidanceScale = 4.0;

// The stream of step `step` of a run seeded with `seed`.
uint64_t StepSeed(uint64_t seed, int64_t step, uint64_t stream) {
  shapes::ShapesRng mixer(seed * 0x100000001B3ull ^
                          static_cast<uint64_t>(step) * 0x9E3779B97F4A7C15ull ^
                          stream);
  return mixer.Next();
}

std::string TaskName(Task task) {
  switch (task) {
    case Task::kAutoencoder:
      return "ae";
    case Task::kTextToImage:
      return "txt2img";
    case Task::kInpaint:
      return "inpaint";
    case Task::kSuperResolution:
      return "sr";
  }
  return "";
}

ldm::AutoencoderConfig PresetAutoencoder() {
  ldm::AutoencoderConfig ae;
  ae.kind = ldm::AutoencoderKind::kKl;
  // 64 channels at every level: with 32 at full resolution, GroupNorm's 32
  // groups hold one channel each, an instance norm, and the decoder turns
  // small objects into speckled blobs. Measured side by side on this CPU
  // (batch 16, 420 s each): held-out PSNR 27.2 dB vs 25.5 dB for
  // ch 32 / ch_mult [1, 2, 2], which 244 k images on a GPU took only to 27.
  ae.ch = 64;
  ae.ch_mult = {1, 1, 1};
  ae.num_res_blocks = 1;
  ae.resolution = shapes::kImageSize;
  ae.z_channels = 4;
  ae.embed_dim = 4;
  ae.double_z = true;
  return ae;
}

// Adam (no weight decay) with global-norm gradient clipping and an
// exponential moving average of the weights.
class AdamWithEma {
 public:
  AdamWithEma(const std::map<std::string, at::Tensor>& parameters,
              double ema_decay)
      : ema_decay_(ema_decay) {
    c10::NoGradGuard no_grad;
    for (auto& [name, parameter] : parameters) {
      parameter.requires_grad_(true);
      slots_.push_back({name, parameter, at::zeros_like(parameter),
                        at::zeros_like(parameter), parameter.clone()});
    }
  }

  // One update with the multi-tensor (_foreach) kernels: a few launches per
  // step instead of several per parameter, which is what bounds small
  // models on a GPU.
  void Step(double learning_rate) {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> parameters, grads, m, v, ema;
    for (Slot& slot : slots_) {
      if (!slot.parameter.grad().defined()) {
        // A parameter the loss never reaches is a wiring bug; say so once.
        if (t_ == 0) {
          std::printf("warning: no gradient for %s\n", slot.name.c_str());
        }
        continue;
      }
      parameters.push_back(slot.parameter);
      grads.push_back(slot.parameter.grad());
      m.push_back(slot.m);
      v.push_back(slot.v);
      ema.push_back(slot.ema);
    }
    if (grads.empty()) return;
    const double norm =
        at::stack(at::_foreach_norm(grads)).norm().item<double>();
    if (norm > kMaxGradNorm) at::_foreach_mul_(grads, kMaxGradNorm / norm);
    ++t_;
    const double correction1 = 1 - std::pow(kAdamBeta1, t_);
    const double correction2 = 1 - std::pow(kAdamBeta2, t_);
    at::_foreach_mul_(m, kAdamBeta1);
    at::_foreach_add_(m, grads, 1 - kAdamBeta1);
    at::_foreach_mul_(v, kAdamBeta2);
    at::_foreach_addcmul_(v, grads, grads, 1 - kAdamBeta2);
    std::vector<at::Tensor> denominator = at::_foreach_div(v, correction2);
    at::_foreach_sqrt_(denominator);
    at::_foreach_add_(denominator, kAdamEpsilon);
    at::_foreach_addcdiv_(parameters, m, denominator,
                          -learning_rate / correction1);
    const double decay = std::min(ema_decay_, (1.0 + t_) / (10.0 + t_));
    at::_foreach_mul_(ema, decay);
    at::_foreach_add_(ema, parameters, 1 - decay);
    for (Slot& slot : slots_) slot.parameter.mutable_grad().reset();
  }

  void AddState(std::map<std::string, at::Tensor>& out) const {
    for (const Slot& slot : slots_) {
      out["param." + slot.name] = slot.parameter.detach();
      out["ema." + slot.name] = slot.ema;
      out["adam_m." + slot.name] = slot.m;
      out["adam_v." + slot.name] = slot.v;
    }
  }

  absl::Status LoadState(const ldm::SafetensorsFile& file) {
    c10::NoGradGuard no_grad;
    for (Slot& slot : slots_) {
      for (auto [prefix, tensor] :
           {std::pair<std::string, at::Tensor*>{"param.", &slot.parameter},
            {"ema.", &slot.ema},
            {"adam_m.", &slot.m},
            {"adam_v.", &slot.v}}) {
        LDM_ASSIGN_OR_RETURN(at::Tensor saved, file.Get(prefix + slot.name));
        tensor->copy_(saved);
      }
    }
    return absl::OkStatus();
  }

  // The EMA weights, under their parameter names (for export).
  std::map<std::string, at::Tensor> EmaWeights() const {
    std::map<std::string, at::Tensor> weights;
    for (const Slot& slot : slots_) weights[slot.name] = slot.ema;
    return weights;
  }

  // Writes the EMA weights into the parameters (once training is over).
  void CopyEmaIntoParameters() {
    c10::NoGradGuard no_grad;
    for (Slot& slot : slots_) slot.parameter.copy_(slot.ema);
  }

  int64_t t() const { return t_; }
  void set_t(int64_t t) { t_ = t; }

 private:
  struct Slot {
    std::string name;
    at::Tensor parameter, m, v, ema;
  };
  std::vector<Slot> slots_;
  double ema_decay_;
  int64_t t_ = 0;
};

// Warm-up, then cosine decay to a tenth by step `horizon`.
double LearningRate(const TrainOptions& options, int64_t step,
                    int64_t horizon) {
  if (step < options.warmup_steps) {
    return options.learning_rate * (step + 1) / options.warmup_steps;
  }
  const double progress = static_cast<double>(step - options.warmup_steps) /
                          std::max<int64_t>(1, horizon - options.warmup_steps);
  return options.learning_rate *
         (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * std::min(1.0, progress))));
}

struct Batch {
  std::vector<shapes::Scene> scenes;
  at::Tensor images;  // [B, 3, 64, 64] on the device
  std::vector<std::string> captions;
  // With an outline weight: each scene's OutlineBandMask.
  std::vector<std::vector<uint8_t>> outline_bands;
};

Batch SampleBatch(shapes::ShapesRng& rng, const TrainOptions& options) {
  Batch batch;
  for (int64_t i = 0; i < options.batch_size; ++i) {
    batch.scenes.push_back(
        shapes::SampleScene(rng, options.two_object_fraction));
    batch.captions.push_back(rng.Chance(options.caption_dropout)
                                 ? std::string()
                                 : batch.scenes.back().caption);
  }
  // Rendering (and the outline bands) are the data loader's cost: spread
  // them over LibTorch's thread count (server/common/parallel.h says why
  // not at::parallel_for). Each scene is its own, so the batch is the same
  // however it is split.
  std::vector<std::vector<uint8_t>> pixels(batch.scenes.size());
  const bool bands = options.outline_weight > 0;
  if (bands) batch.outline_bands.resize(batch.scenes.size());
  ldmserve::ParallelFor(options.batch_size, at::get_num_threads(),
                        [&](int64_t begin, int64_t end) {
                          for (int64_t i = begin; i < end; ++i) {
                            pixels[i] = shapes::RenderScene(batch.scenes[i]);
                            if (bands)
                              batch.outline_bands[i] =
                                  OutlineBandMask(batch.scenes[i]);
                          }
                        });
  batch.images = ImagesToTensor(pixels).to(options.device);
  return batch;
}

// A standalone autoencoder under the checkpoint's key names.
struct StandaloneAutoencoder {
  explicit StandaloneAutoencoder(const at::Device& device)
      : registry(device),
        model(PresetAutoencoder(),
              ldm::ParamScope(&registry, "").Sub(kAutoencoderPrefix)) {}
  ldm::ParameterRegistry registry;
  ldm::Autoencoder model;
};

absl::Status LoadAutoencoderWeights(
    const std::string& dir,
    const std::map<std::string, at::Tensor>& parameters) {
  const std::string path = (std::filesystem::path(dir) / kAutoencoderFile);
  LDM_ASSIGN_OR_RETURN(auto file, ldm::SafetensorsFile::Open(path));
  c10::NoGradGuard no_grad;
  for (auto& [name, tensor] : parameters) {
    if (!absl::StartsWith(name, kAutoencoderPrefix)) continue;
    LDM_ASSIGN_OR_RETURN(at::Tensor saved, file->Get(name));
    if (saved.sizes() != tensor.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": shape of ", name, " differs from the preset"));
    }
    tensor.copy_(saved);
  }
  return absl::OkStatus();
}

// L1 as the paper, plus L2, which weighs the large errors at the objects'
// edges (what PSNR measures) more; per pixel value, so the log reads as an
// L1 distance.
at::Tensor ReconstructionLoss(const at::Tensor& images,
                              const at::Tensor& reconstruction) {
  const at::Tensor error = images - reconstruction;
  return (error.abs() + error.pow(2)).mean();
}

// Reconstruction PSNR (posterior mean) over the first held-out scenes.
double HeldOutPsnr(const ldm::Autoencoder& autoencoder, at::Device device) {
  c10::NoGradGuard no_grad;
  std::vector<std::vector<uint8_t>> pixels;
  pixels.reserve(kEvaluationImages);
  for (int i = 0; i < kEvaluationImages; ++i) {
    pixels.push_back(shapes::RenderScene(shapes::HeldOutScene(i)));
  }
  const at::Tensor images = ImagesToTensor(pixels).to(device);
  const at::Tensor reconstruction = autoencoder.Decode(
      ldm::Autoencoder::Posterior(autoencoder.EncodeMoments(images)).mean);
  return Psnr(ldm::RoundToUint8Images(images),
              ldm::RoundToUint8Images(reconstruction));
}

class TrainingRun {
 public:
  TrainingRun(Task task, TrainOptions options)
      : task_(task), options_(std::move(options)), start_(Clock::now()) {}

  absl::Status Run() {
    std::filesystem::create_directories(options_.out_dir);
    return task_ == Task::kAutoencoder ? TrainAutoencoder() : TrainDiffusion();
  }

 private:
  std::string OutPath(const std::string& file) const {
    return (std::filesystem::path(options_.out_dir) / file).string();
  }

  double Elapsed() const {
    return std::chrono::duration<double>(Clock::now() - start_).count();
  }

  // Resumes from OUT/train_state.safetensors if present; returns the step
  // to start from.
  absl::StatusOr<int64_t> Resume(AdamWithEma& optimizer,
                                 std::map<std::string, std::string>* meta) {
    const std::string path = OutPath(kStateFile);
    if (!std::filesystem::exists(path)) return 0;
    LDM_ASSIGN_OR_RETURN(auto file, ldm::SafetensorsFile::Open(path));
    LDM_RETURN_IF_ERROR(optimizer.LoadState(*file));
    *meta = file->metadata();
    const int64_t step = std::stoll(meta->at("step"));
    optimizer.set_t(step);
    std::printf("resumed %s at step %lld\n", path.c_str(),
                static_cast<long long>(step));
    return step;
  }

  absl::Status SaveState(const AdamWithEma& optimizer, int64_t step,
                         std::map<std::string, std::string> meta) {
    std::map<std::string, at::Tensor> tensors;
    optimizer.AddState(tensors);
    meta["step"] = std::to_string(step);
    meta["task"] = TaskName(task_);
    return ldm::WriteSafetensors(OutPath(kStateFile), tensors, meta);
  }

  // Runs `train_step(batch, rng, generator) -> loss` until the steps or the
  // time budget run out, logging and saving along the way. Returns the
  // last step done.
  template <typename StepFn>
  absl::StatusOr<int64_t> Loop(AdamWithEma& optimizer, int64_t first_step,
                               const std::map<std::string, std::string>& meta,
                               StepFn train_step) {
    int64_t step = first_step;
    at::Tensor loss_sum;
    int64_t logged_steps = 0;
    auto window_start = Clock::now();
    // With a time budget, the learning-rate schedule ends where the budget
    // will: the horizon is re-estimated from the measured step rate.
    int64_t horizon = options_.steps;
    constexpr int64_t kRateProbeSteps = 50;
    const auto probe_start = Clock::now();
    for (; step < options_.steps; ++step) {
      if (options_.max_seconds > 0 && Elapsed() > options_.max_seconds) {
        std::printf("time budget of %.0f s reached at step %lld\n",
                    options_.max_seconds, static_cast<long long>(step));
        break;
      }
      if (options_.max_seconds > 0 && step == first_step + kRateProbeSteps) {
        const double per_step =
            std::chrono::duration<double>(Clock::now() - probe_start).count() /
            kRateProbeSteps;
        const auto reachable = static_cast<int64_t>(
            step + (options_.max_seconds - Elapsed()) / per_step);
        horizon = std::min(options_.steps, reachable);
        std::printf("%.1f ms per step: schedule ends at step %lld\n",
                    1000 * per_step, static_cast<long long>(horizon));
      }
      const double learning_rate = LearningRate(options_, step, horizon);
      LDM_ASSIGN_OR_RETURN(
          at::Tensor loss, ldm::CallTorch("train step", [&] {
            // Step `step`'s data and noise: functions of
            // (seed, step) alone, so a resumed run draws
            // what the uninterrupted one would have.
            shapes::ShapesRng rng(StepSeed(options_.seed, step, 0));
            const Batch batch = SampleBatch(rng, options_);
            at::Generator generator =
                ldm::MakeGenerator(StepSeed(options_.seed, step, 1));
            at::Tensor value = train_step(batch, rng, generator);
            value.backward();
            optimizer.Step(learning_rate);
            return value.detach();
          }));
      loss_sum = loss_sum.defined() ? loss_sum + loss : loss;
      ++logged_steps;
      if ((step + 1) % options_.log_every == 0 || step + 1 == options_.steps) {
        const double seconds =
            std::chrono::duration<double>(Clock::now() - window_start).count();
        std::printf(
            "step %lld/%lld loss %.5f lr %.2e %.1f img/s elapsed %.0f s\n",
            static_cast<long long>(step + 1),
            static_cast<long long>(options_.steps),
            loss_sum.item<double>() / logged_steps, learning_rate,
            logged_steps * options_.batch_size / seconds, Elapsed());
        std::fflush(stdout);
        loss_sum = at::Tensor();
        logged_steps = 0;
        window_start = Clock::now();
      }
      if ((step + 1) % options_.save_every == 0) {
        LDM_RETURN_IF_ERROR(SaveState(optimizer, step + 1, meta));
      }
    }
    LDM_RETURN_IF_ERROR(SaveState(optimizer, step, meta));
    return step;
  }

  absl::Status TrainAutoencoder() {
    StandaloneAutoencoder ae(options_.device);
    ae.registry.InitRandom(options_.seed);
    ae.registry.To(options_.device, at::kFloat);
    {
      // The posterior starts nearly deterministic. From logvar = 0, Adam
      // moves the bias about one learning rate per step, so with the
      // paper's tiny KL weight the decoder would spend the whole run
      // learning to read noisy latents (blobs and speckles).
      c10::NoGradGuard no_grad;
      ae.registry
          .Named("")[std::string(kAutoencoderPrefix) + ".quant_conv.bias"]
          .slice(0, PresetAutoencoder().embed_dim)
          .fill_(kInitialLogVariance);
    }
    AdamWithEma optimizer(ae.registry.Named(""), options_.ema_decay);
    std::map<std::string, std::string> meta;
    LDM_ASSIGN_OR_RETURN(const int64_t first, Resume(optimizer, &meta));
    std::printf("autoencoder: %lld parameters\n",
                static_cast<long long>(ae.registry.NumElements()));
    const ldm::Autoencoder& model = ae.model;
    const auto latent_options =
        at::TensorOptions().dtype(at::kFloat).device(options_.device);
    const int64_t latent_side =
        shapes::kImageSize / PresetAutoencoder().DownsamplingFactor();
    LDM_ASSIGN_OR_RETURN(
        const int64_t last,
        Loop(optimizer, first, meta,
             [&](const Batch& batch, shapes::ShapesRng& rng,
                 at::Generator& generator) {
               const ldm::DiagonalGaussian posterior =
                   ldm::Autoencoder::Posterior(
                       model.EncodeMoments(batch.images));
               const at::Tensor noise = ldm::StandardNormal(
                   {options_.batch_size, PresetAutoencoder().embed_dim,
                    latent_side, latent_side},
                   generator, latent_options);
               const at::Tensor reconstruction =
                   model.Decode(posterior.SampleWith(noise));
               const at::Tensor kl =
                   0.5 *
                   (posterior.mean.pow(2) + posterior.logvar.exp() - 1.0 -
                    posterior.logvar)
                       .sum() /
                   static_cast<double>(batch.images.numel());
               return ReconstructionLoss(batch.images, reconstruction) +
                      kKlWeight * kl;
             }));
    (void)last;
    optimizer.CopyEmaIntoParameters();
    LDM_RETURN_IF_ERROR(ldm::CallTorchStatus("save", [&] {
      return ldm::WriteSafetensors(OutPath(kAutoencoderFile),
                                   ae.registry.Named(""));
    }));
    return ldm::CallTorchStatus("evaluate", [&] {
      std::printf("autoencoder: held-out PSNR %.2f dB over %d images\n",
                  HeldOutPsnr(model, options_.device), kEvaluationImages);
      return absl::OkStatus();
    });
  }

  // The paper's scale_factor: 1 / std of the autoencoder's latents (posterior
  // samples) over a batch of training images.
  absl::StatusOr<double> MeasureScaleFactor() {
    StandaloneAutoencoder ae(options_.device);
    ae.registry.To(options_.device, at::kFloat);
    LDM_RETURN_IF_ERROR(LoadAutoencoderWeights(options_.autoencoder_dir,
                                               ae.registry.Named("")));
    return ldm::CallTorch("scale factor", [&] {
      c10::NoGradGuard no_grad;
      shapes::ShapesRng rng(StepSeed(options_.seed, -1, 0));
      TrainOptions big = options_;
      big.batch_size = kEvaluationImages;
      const Batch batch = SampleBatch(rng, big);
      at::Generator generator =
          ldm::MakeGenerator(StepSeed(options_.seed, -1, 1));
      const ldm::DiagonalGaussian posterior =
          ldm::Autoencoder::Posterior(ae.model.EncodeMoments(batch.images));
      const at::Tensor latents = posterior.SampleWith(ldm::StandardNormal(
          posterior.mean.sizes(), generator, posterior.mean.options()));
      return 1.0 / latents.std().item<double>();
    });
  }

  absl::Status TrainDiffusion() {
    if (options_.autoencoder_dir.empty()) {
      return absl::InvalidArgumentError("--ae DIR (the autoencoder) is needed");
    }
    const std::string name = options_.model_name.empty()
                                 ? "shapes-" + TaskName(task_)
                                 : options_.model_name;
    if (options_.prediction != "eps" && options_.prediction != "v") {
      return absl::InvalidArgumentError("--prediction: eps or v");
    }
    if (options_.outline_weight < 0) {
      return absl::InvalidArgumentError("--outline-weight: >= 0");
    }
    if (options_.two_object_fraction < 0 || options_.two_object_fraction > 1) {
      return absl::InvalidArgumentError("--two-objects: a share in [0, 1]");
    }
    if (options_.pixel_loss_weight < 0 ||
        options_.pixel_loss_max_timestep < 1) {
      return absl::InvalidArgumentError(
          "--pixel-loss: a weight >= 0; --pixel-loss-max-timestep: >= 1");
    }
    ldm::ModelConfig config = PresetConfig(task_, name);
    config.parameterization = options_.prediction == "v"
                                  ? ldm::Parameterization::kV
                                  : ldm::Parameterization::kEps;
    std::shared_ptr<const ldm::SafetensorsFile> init_file;
    if (!options_.init_weights.empty()) {
      LDM_ASSIGN_OR_RETURN(init_file,
                           ldm::SafetensorsFile::Open(options_.init_weights));
    }
    std::map<std::string, std::string> meta;
    const std::string state_path = OutPath(kStateFile);
    if (std::filesystem::exists(state_path)) {
      LDM_ASSIGN_OR_RETURN(auto file, ldm::SafetensorsFile::Open(state_path));
      config.scale_factor = std::stod(file->metadata().at("scale_factor"));
      // States written before --prediction existed are eps runs.
      const auto saved = file->metadata().find("prediction");
      const std::string saved_prediction =
          saved == file->metadata().end() ? "eps" : saved->second;
      if (saved_prediction != options_.prediction) {
        return absl::InvalidArgumentError(
            absl::StrCat(state_path, " is a --prediction ", saved_prediction,
                         " run; resume it with the same"));
      }
    } else if (init_file != nullptr) {
      // A continued model keeps the latent scale it learnt (a new
      // measurement differs by about 1% from batch to batch).
      LDM_ASSIGN_OR_RETURN(at::Tensor stored, init_file->Get("scale_factor"));
      config.scale_factor = stored.to(at::kDouble).item<double>();
    } else {
      LDM_ASSIGN_OR_RETURN(config.scale_factor, MeasureScaleFactor());
    }
    std::printf("%s: scale_factor %.5f\n", name.c_str(), config.scale_factor);

    ldm::LoadOptions load;
    load.device = options_.device;
    LDM_ASSIGN_OR_RETURN(
        std::unique_ptr<ldm::LatentDiffusion> model,
        ldm::LatentDiffusion::CreateRandom(config, options_.seed, load));
    std::map<std::string, at::Tensor> parameters = model->MutableParameters();
    LDM_RETURN_IF_ERROR(
        LoadAutoencoderWeights(options_.autoencoder_dir, parameters));
    std::map<std::string, at::Tensor> trainable;
    for (auto& [key, tensor] : parameters) {
      if (!absl::StartsWith(key, kAutoencoderPrefix)) trainable[key] = tensor;
    }
    if (init_file != nullptr) {
      c10::NoGradGuard no_grad;
      // Layers the weights lack (attention added at a resolution, say)
      // start fresh; their output projection at zero, as the reference
      // initialises it, so that each begins as the identity and the model
      // computes what the weights did.
      int64_t fresh = 0;
      for (auto& [key, tensor] : trainable) {
        if (!init_file->Contains(key)) {
          if (absl::StrContains(key, ".proj_out.")) tensor.zero_();
          ++fresh;
          continue;
        }
        LDM_ASSIGN_OR_RETURN(at::Tensor saved, init_file->Get(key));
        if (saved.sizes() != tensor.sizes()) {
          return absl::InvalidArgumentError(absl::StrCat(
              options_.init_weights, ": shape of ", key, " differs"));
        }
        tensor.copy_(saved);
      }
      std::printf("%s: started from %s (%lld tensors new)\n", name.c_str(),
                  options_.init_weights.c_str(), static_cast<long long>(fresh));
    }
    AdamWithEma optimizer(trainable, options_.ema_decay);
    LDM_ASSIGN_OR_RETURN(const int64_t first, Resume(optimizer, &meta));
    meta["scale_factor"] = absl::StrCat(config.scale_factor);
    meta["prediction"] = options_.prediction;
    int64_t trainable_count = 0;
    for (const auto& [key, tensor] : trainable) {
      trainable_count += tensor.numel();
    }
    std::printf("%s: %lld parameters, %lld trained\n", name.c_str(),
                static_cast<long long>(model->NumParameters()),
                static_cast<long long>(trainable_count));

    const ldm::Autoencoder& ae = model->first_stage().autoencoder();
    const ldm::UNetModel& unet = model->denoiser().unet();
    const ldm::WordConditioner* words = model->word_conditioner();
    const ldm::TextTransformer* text =
        words != nullptr ? &words->transformer() : nullptr;
    const ldm::WordTokenizer* tokenizer =
        words != nullptr ? &words->tokenizer() : nullptr;
    const auto float_options =
        at::TensorOptions().dtype(at::kFloat).device(options_.device);
    const at::Tensor alphas_cumprod =
        at::tensor(model->denoiser().schedule().alphas_cumprod_f64())
            .to(options_.device, at::kFloat);
    const int64_t side = config.latent_height;
    const int64_t channels = config.ae.embed_dim;
    const int64_t b = options_.batch_size;
    const double scale = config.scale_factor;

    LDM_ASSIGN_OR_RETURN(
        const int64_t last,
        Loop(optimizer, first, meta,
             [&](const Batch& batch, shapes::ShapesRng& rng,
                 at::Generator& generator) {
               auto noise = [&] {
                 return ldm::StandardNormal({b, channels, side, side},
                                            generator, float_options);
               };
               auto encode = [&](const at::Tensor& images) {
                 return scale *
                        ldm::Autoencoder::Posterior(ae.EncodeMoments(images))
                            .SampleWith(noise());
               };
               at::Tensor latents, concat;
               {
                 c10::NoGradGuard no_grad;
                 latents = encode(batch.images);
                 if (task_ == Task::kInpaint) {
                   std::vector<std::vector<uint8_t>> masks;
                   for (const shapes::Scene& scene : batch.scenes) {
                     masks.push_back(RandomInpaintMask(scene, rng));
                   }
                   const at::Tensor mask =
                       MasksToTensor(masks).to(options_.device);
                   // As LatentDiffusion::PrepareInpaint builds it (hybrid: the
                   // mask first, then the masked image's latent).
                   concat = at::cat(
                       {at::upsample_nearest2d(mask, {side, side}),
                        encode(batch.images * (mask < 0.5).to(at::kFloat))},
                       1);
                 } else if (task_ == Task::kSuperResolution) {
                   concat = DownsampleBicubic(batch.images);
                 }
               }
               const at::Tensor timesteps =
                   at::randint(0, config.timesteps, {b}, generator,
                               at::TensorOptions().dtype(at::kLong))
                       .to(options_.device);
               const at::Tensor epsilon = noise();
               const at::Tensor alpha =
                   alphas_cumprod.index_select(0, timesteps).view({b, 1, 1, 1});
               const at::Tensor noised =
                   alpha.sqrt() * latents + (1.0 - alpha).sqrt() * epsilon;
               const at::Tensor target =
                   config.parameterization == ldm::Parameterization::kV
                       ? alpha.sqrt() * epsilon - (1.0 - alpha).sqrt() * latents
                       : epsilon;
               const at::Tensor input =
                   concat.defined() ? at::cat({noised, concat}, 1) : noised;
               at::Tensor context;
               if (text != nullptr) {
                 std::vector<int64_t> ids;
                 for (const std::string& caption : batch.captions) {
                   const auto encoding = tokenizer->Encode(caption);
                   ids.insert(ids.end(), encoding.ids.begin(),
                              encoding.ids.end());
                 }
                 context = text->Forward(
                     at::tensor(ids).view({b, -1}).to(options_.device));
               }
               const at::Tensor prediction =
                   unet.Forward(input, timesteps, context);
               at::Tensor squared_error = (prediction - target).pow(2);
               if (options_.outline_weight > 0) {
                 squared_error =
                     squared_error *
                     (1.0 +
                      options_.outline_weight *
                          at::adaptive_avg_pool2d(
                              MasksToTensor(batch.outline_bands), {side, side})
                              .to(options_.device));
               }
               at::Tensor loss = squared_error.mean();
               if (options_.pixel_loss_weight > 0) {
                 const at::Tensor rows =
                     (timesteps < options_.pixel_loss_max_timestep)
                         .nonzero()
                         .squeeze(1);
                 if (rows.numel() > 0) {
                   const at::Tensor a = alpha.index_select(0, rows);
                   const at::Tensor x_t = noised.index_select(0, rows);
                   const at::Tensor output = prediction.index_select(0, rows);
                   const at::Tensor x0 =
                       config.parameterization == ldm::Parameterization::kV
                           ? a.sqrt() * x_t - (1.0 - a).sqrt() * output
                           : (x_t - (1.0 - a).sqrt() * output) / a.sqrt();
                   // Weighted by the rows' share, so the term's scale does
                   // not depend on how many rows drew a low t.
                   loss = loss + options_.pixel_loss_weight *
                                     static_cast<double>(rows.numel()) /
                                     static_cast<double>(b) *
                                     ReconstructionLoss(
                                         batch.images.index_select(0, rows),
                                         ae.Decode(x0 / scale));
                 }
               }
               return loss;
             }));
    (void)last;
    optimizer.CopyEmaIntoParameters();
    LDM_RETURN_IF_ERROR(model->Save(OutPath("weights.safetensors"), at::kHalf));
    std::ofstream(OutPath("config.json")) << ldm::ModelConfigToJson(config);
    std::printf("%s: wrote %s and config.json\n", name.c_str(),
                OutPath("weights.safetensors").c_str());
    return absl::OkStatus();
  }

  Task task_;
  TrainOptions options_;
  Clock::time_point start_;
};

}  // namespace

ldm::ModelConfig PresetConfig(Task task, const std::string& name) {
  ldm::ModelConfig config;
  config.name = name;
  // The paper's f4 LDMs' schedule, not SD's 0.00085-0.012: with SD's, 7% of
  // the signal survives at t = T, and on flat-coloured 16x16 latents that is
  // enough for a model to read the background colour off the "noise" in
  // training, then draw colours at random from pure noise when sampling
  // (Lin et al. 2023). Here sqrt(alphas_cumprod[T-1]) is 0.012.
  config.linear_start = 0.0015;
  config.linear_end = 0.0195;
  config.timesteps = 1000;
  config.ae = PresetAutoencoder();
  const int64_t side = shapes::kImageSize / config.ae.DownsamplingFactor();
  config.latent_height = side;
  config.latent_width = side;
  const int64_t channels = config.ae.embed_dim;

  ldm::UNetConfig& unet = config.unet;
  unet.in_channels = channels;
  unet.out_channels = channels;
  unet.model_channels = 64;
  unet.channel_mult = {1, 1, 1};
  unet.num_res_blocks = 1;
  // Cross-attention at every level, 16x16 included: a large object is 3
  // latent pixels across at 8x8, too few to tell a triangle from a circle,
  // and with the text entering only there the model drew every shape as
  // the same blob.
  unet.attention_resolutions = {1, 2, 4};
  unet.num_head_channels = 32;
  unet.use_spatial_transformer = true;
  unet.legacy = false;
  unet.transformer_depth = 1;

  ldm::TextEncoderConfig text;
  text.vocab = {"<pad>", "<unk>"};
  for (const std::string& word : shapes::Vocabulary()) {
    text.vocab.push_back(word);
  }
  text.dim = 128;
  text.depth = 2;
  text.heads = 4;
  text.max_length = 16;
  config.ctx_len = text.max_length;

  switch (task) {
    case Task::kAutoencoder:
    case Task::kTextToImage:
      config.kind = ldm::ModelKind::kTextToImage;
      config.default_guidance_scale = kTextGuidanceScale;
      config.conditioning_key = ldm::ConditioningKey::kCrossAttention;
      unet.context_dim = text.dim;
      config.text_encoder = text;
      break;
    case Task::kInpaint:
      config.kind = ldm::ModelKind::kInpaint;
      config.default_guidance_scale = kTextGuidanceScale;
      config.conditioning_key = ldm::ConditioningKey::kHybrid;
      unet.in_channels = 2 * channels + 1;
      unet.context_dim = text.dim;
      config.text_encoder = text;
      break;
    case Task::kSuperResolution:
      config.kind = ldm::ModelKind::kSuperResolution;
      config.default_eta = 1.0;  // As the paper samples its SR models.
      config.conditioning_key = ldm::ConditioningKey::kConcat;
      unet.in_channels = channels + 3;
      unet.context_dim = 0;
      unet.use_spatial_transformer = false;
      unet.attention_resolutions = {4};
      break;
  }
  return config;
}

absl::Status Train(Task task, const TrainOptions& options) {
  TrainingRun run(task, options);
  return run.Run();
}

}  // namespace ldmtrain
