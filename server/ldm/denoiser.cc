#include "server/ldm/denoiser.h"

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <utility>
#include <vector>

#include "server/common/status_macros.h"
#include "server/ldm/device_streams.h"
#include "server/ldm/layers.h"
#include "server/ldm/torch_boundary.h"

namespace ldm {

Denoiser::Denoiser(const UNetConfig& config, const ParamScope& scope,
                   DiffusionSchedule schedule,
                   Parameterization parameterization, at::Device device,
                   at::ScalarType dtype)
    : unet_(std::make_unique<UNetModel>(config, scope)),
      unet_runner_(std::make_unique<UNetRunner>(*unet_)),
      schedule_(std::move(schedule)),
      parameterization_(parameterization),
      latent_channels_(config.out_channels),
      device_(device),
      dtype_(dtype) {}

absl::StatusOr<ImageTask> Denoiser::NewImageTask(
    uint64_t seed, int64_t latent_height, int64_t latent_width,
    const SamplerOptions& sampler, at::Tensor cond, at::Tensor uncond,
    at::Tensor concat, const at::Tensor& init_latent) const {
  ImageTask task;
  LDM_RETURN_IF_ERROR(CallTorchStatus("new image task", [&]() -> absl::Status {
    c10::InferenceMode inference;
    // x_T first, then the sampler's own draws, from the image's generator.
    at::Generator generator = MakeGenerator(seed);
    at::Tensor noise = StandardNormal(
        {1, latent_channels_, latent_height, latent_width}, generator,
        at::TensorOptions().dtype(at::kFloat).device(device_));
    LDM_ASSIGN_OR_RETURN(task.sampler,
                         MakeSampler(sampler, schedule_, std::move(noise),
                                     std::move(generator), init_latent));
    return absl::OkStatus();
  }));
  task.cond = std::move(cond);
  const bool guided = sampler.guidance_scale != 1.0f && uncond.defined();
  task.uncond = guided ? std::move(uncond) : at::Tensor();
  task.concat = std::move(concat);
  task.guidance_scale = sampler.guidance_scale;
  return task;
}

absl::Status Denoiser::Step(absl::Span<ImageTask* const> tasks,
                            StepTrace* trace) const {
  if (tasks.empty()) return absl::OkStatus();
  return CallTorchStatus("denoise step", [&] {
    c10::InferenceMode inference;
    for (ImageTask* task : tasks) {
      if (!task->blend || !task->sampler->at_step_start()) continue;
      ImageTask::Blend& blend = *task->blend;
      const at::Tensor noise = StandardNormal(
          blend.known.sizes(), blend.generator, blend.known.options());
      const at::Tensor noised =
          task->sampler->NoisedToCurrentLevel(blend.known, noise);
      task->sampler->ReplaceLatent(noised * blend.keep +
                                   task->sampler->latent() * (1 - blend.keep));
    }
    std::vector<at::Tensor> inputs, contexts, labels;
    std::vector<float> timesteps;
    for (ImageTask* task : tasks) {
      at::Tensor x = task->sampler->model_input();
      if (task->concat.defined()) x = at::cat({x, task->concat}, 1);
      const float t = static_cast<float>(task->sampler->timestep());
      const int64_t rows = x.size(0);
      if (task->uncond.defined()) {
        // [uncond; cond], the order of the reference's batched CFG call.
        inputs.push_back(x);
        contexts.push_back(task->uncond);
        if (task->uncond_class_labels.defined()) {
          labels.push_back(task->uncond_class_labels);
        }
        timesteps.insert(timesteps.end(), rows, t);
      }
      inputs.push_back(x);
      if (task->cond.defined()) contexts.push_back(task->cond);
      if (task->class_labels.defined()) labels.push_back(task->class_labels);
      timesteps.insert(timesteps.end(), rows, t);
    }
    at::Tensor class_labels;
    if (!labels.empty()) {
      if (labels.size() != inputs.size()) {
        return absl::InvalidArgumentError(
            "denoise step: class labels must be given for every row");
      }
      class_labels = at::cat(labels, 0).to(device_);
    }
    // Rows whose contexts have one length share a UNet call: runs of
    // consecutive entries (a long prompt's chunks make its context longer).
    std::vector<std::pair<int64_t, int64_t>> runs;
    std::vector<at::Tensor> run_contexts;
    {
      int64_t row = 0;
      for (size_t i = 0; i < inputs.size(); ++i) {
        const int64_t rows = inputs[i].size(0);
        const bool joins =
            !runs.empty() && (contexts.empty() ||
                              contexts[i].size(1) == contexts[i - 1].size(1));
        if (joins) {
          runs.back().second = row + rows;
        } else {
          runs.emplace_back(row, row + rows);
        }
        row += rows;
      }
    }
    if (!contexts.empty()) {
      if (contexts.size() != inputs.size()) {
        return absl::InvalidArgumentError(
            "denoise step: some tasks have a context and some do not");
      }
      const at::Tensor all =
          runs.size() == 1 ? at::cat(contexts, 0) : at::Tensor();
      size_t entry = 0;
      for (const auto& [begin, end] : runs) {
        if (all.defined()) {
          run_contexts.push_back(all);
          continue;
        }
        std::vector<at::Tensor> members;
        for (int64_t row = begin; row < end; ++entry) {
          row += contexts[entry].size(0);
          members.push_back(contexts[entry]);
        }
        run_contexts.push_back(at::cat(members, 0));
      }
    }
    // Asynchronously on CUDA: a plain copy from the host would wait for the
    // GPU to finish the previous step before this one could be queued.
    at::Tensor t =
        FromHost(at::tensor(timesteps),
                 at::TensorOptions().dtype(at::kFloat).device(device_));
    // The sampler's float32 state in, the UNet's dtype through it, float32
    // out (no-ops for a float32 model).
    at::Tensor input = at::cat(inputs, 0).to(dtype_);
    auto rows_of = [](const at::Tensor& x, int64_t begin, int64_t end) {
      return x.defined() ? x.slice(0, begin, end) : x;
    };
    std::vector<at::Tensor> run_outputs;
    for (size_t r = 0; r < runs.size(); ++r) {
      // Plain names: lambdas may not capture structured bindings in C++17.
      const int64_t run_begin = runs[r].first;
      const int64_t run_end = runs[r].second;
      const at::Tensor context =
          run_contexts.empty() ? at::Tensor() : run_contexts[r].to(dtype_);
      run_outputs.push_back(unet_runner_->Run(
          {rows_of(input, run_begin, run_end), rows_of(t, run_begin, run_end),
           context, rows_of(class_labels, run_begin, run_end)}));
    }
    at::Tensor out = (run_outputs.size() == 1 ? run_outputs.front()
                                              : at::cat(run_outputs, 0))
                         .to(at::kFloat);
    std::vector<at::Tensor> guided;
    int64_t row = 0;
    for (ImageTask* task : tasks) {
      const int64_t rows = task->sampler->model_input().size(0);
      at::Tensor prediction;
      if (task->uncond.defined()) {
        at::Tensor e_uncond = out.slice(0, row, row + rows);
        at::Tensor e_cond = out.slice(0, row + rows, row + 2 * rows);
        prediction = e_uncond + task->guidance_scale * (e_cond - e_uncond);
        row += 2 * rows;
      } else {
        prediction = out.slice(0, row, row + rows);
        row += rows;
      }
      if (parameterization_ == Parameterization::kV) {
        // eps = sqrt(a) v + sqrt(1 - a) x_t (the reference's
        // predict_eps_from_z_and_v); linear, so guidance may come first.
        const double a = schedule_.AlphaCumprodAt(task->sampler->timestep());
        prediction = std::sqrt(a) * prediction +
                     std::sqrt(1.0 - a) * task->sampler->model_input();
      }
      if (trace != nullptr) guided.push_back(prediction);
      task->sampler->Step(prediction);
    }
    if (trace != nullptr) {
      // One context when every row shares its length (else none).
      const at::Tensor context = run_contexts.size() == 1
                                     ? run_contexts.front().to(dtype_)
                                     : at::Tensor();
      *trace = StepTrace{input, t, context, out, at::cat(guided, 0)};
    }
    // The one host synchronisation of a step (device_streams.h says why).
    WaitForDevice(device_);
    return absl::OkStatus();
  });
}

}  // namespace ldm
