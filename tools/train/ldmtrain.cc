// ldmtrain: trains the shipped shapes models (the paper's two stages at toy
// scale) and draws their sample grids.
//
//   ldmtrain ae      --out DIR [training flags]
//   ldmtrain txt2img --ae AE_DIR --out DIR [training flags]
//   ldmtrain inpaint --ae AE_DIR --out DIR [training flags]
//   ldmtrain sr      --ae AE_DIR --out DIR [training flags]
//       training flags: --steps N --batch N --lr X --warmup N --ema X
//       --seed S --max-seconds T --log-every N --save-every N
//       --device cpu|cuda --threads N --name NAME
//       --init WEIGHTS (diffusion stages: start from exported weights)
//       --prediction eps|v (diffusion stages: what the UNet predicts)
//       --pixel-loss W --pixel-loss-max-timestep T (diffusion stages: add
//       the decoded x0 prediction's pixel loss below T; trainer.h)
//       --outline-weight W (diffusion stages: extra loss weight on the
//       band around the objects' outlines; trainer.h)
//       --two-objects F (diffusion stages: the share of two-object scenes,
//       default the dataset's 0.4)
//       Rerunning with the same --out resumes from DIR/train_state.
//   ldmtrain sample --model DIR --out GRID.ppm [--steps N] [--cfg X]
//                   [--what ae]
//       a grid of samples through the real pipelines: txt2img prompts,
//       inpainting (input | mask | result) or super-resolution
//       (low-res | bicubic | model | truth), by the model's kind; with
//       --what ae, held-out images and their autoencoder reconstructions.
#include <ATen/Parallel.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "server/common/status_macros.h"
#include "server/ldm/allocator.h"
#include "server/ldm/image_tensor.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/torch_boundary.h"
#include "tools/cli_util.h"
#include "tools/shapes/shapes_world.h"
#include "tools/train/shapes_batch.h"
#include "tools/train/trainer.h"

namespace {

using ldmtools::ParseOptions;

int Usage() {
  std::fprintf(stderr,
               "usage:\n"
               "  ldmtrain ae|txt2img|inpaint|sr --out DIR [--ae AE_DIR] "
               "[--steps N] [--batch N] [--lr X] [--seed S] "
               "[--max-seconds T] [--device cpu|cuda] [--threads N]\n"
               "  ldmtrain sample --model DIR --out GRID.ppm [--steps N] "
               "[--cfg X]\n");
  return 2;
}

int Error(const absl::Status& status) {
  std::fprintf(stderr, "ldmtrain: %s\n", std::string(status.message()).c_str());
  return 1;
}

const std::vector<std::string>& GridPrompts() {
  static const std::vector<std::string> prompts = {
      "a red circle at the left",
      "a blue square at the right",
      "a yellow triangle at the top",
      "a green diamond at the bottom",
      "a large purple circle in the center",
      "a small orange square at the left on a black background",
      "a white triangle in the center on a blue background",
      "a black diamond at the right on a yellow background",
      "a red circle above a blue square",
      "a green triangle left of a white circle",
      "a yellow square below a purple diamond",
      "a orange circle right of a red triangle",
      "a large blue diamond at the top on a white background",
      "a small green circle at the bottom on a red background",
      "a purple square in the center on a orange background",
      "a white diamond at the left on a green background"};
  return prompts;
}

// Rows of equally sized uint8 [H, W, 3] tiles -> one image, 2 px gaps.
at::Tensor Grid(const std::vector<std::vector<at::Tensor>>& rows) {
  const int64_t tile = rows[0][0].size(0);
  const int64_t gap = 2;
  const auto columns = static_cast<int64_t>(rows[0].size());
  const auto count = static_cast<int64_t>(rows.size());
  at::Tensor grid =
      at::full({count * (tile + gap) + gap, columns * (tile + gap) + gap, 3},
               128, at::kByte);
  for (int64_t r = 0; r < count; ++r) {
    for (int64_t c = 0; c < columns; ++c) {
      grid.slice(0, gap + r * (tile + gap), gap + r * (tile + gap) + tile)
          .slice(1, gap + c * (tile + gap), gap + c * (tile + gap) + tile)
          .copy_(rows[r][c]);
    }
  }
  return grid;
}

absl::StatusOr<at::Tensor> SampleGrid(const ldm::LatentDiffusion& model,
                                      int steps, float cfg,
                                      bool autoencoder_only) {
  std::vector<std::vector<at::Tensor>> rows;
  ldm::GenerationRequest request;
  request.sampler.steps = steps;
  request.sampler.guidance_scale = cfg;
  request.sampler.eta = model.config().default_eta;  // What serving uses.
  const ldm::ModelKind kind = model.config().kind;
  if (autoencoder_only) {
    // Held-out images and their reconstructions (posterior mean), in pairs.
    for (int r = 0; r < 4; ++r) {
      std::vector<at::Tensor> row;
      for (int c = 0; c < 2; ++c) {
        const at::Tensor truth = ldmtrain::ImagesToTensor(
            {shapes::RenderScene(shapes::HeldOutScene(r * 2 + c))});
        LDM_ASSIGN_OR_RETURN(
            at::Tensor latent,
            model.first_stage().EncodeImages(
                truth, at::zeros({1, model.config().ae.embed_dim, 16, 16})));
        LDM_ASSIGN_OR_RETURN(at::Tensor decoded,
                             model.first_stage().DecodeLatents(latent));
        row.push_back(ldm::RoundToUint8Images(truth)[0]);
        row.push_back(ldm::RoundToUint8Images(decoded)[0]);
      }
      rows.push_back(std::move(row));
    }
  } else if (kind == ldm::ModelKind::kTextToImage) {
    std::vector<at::Tensor> row;
    for (size_t i = 0; i < GridPrompts().size(); ++i) {
      request.prompt = GridPrompts()[i];
      request.seed = i;
      LDM_ASSIGN_OR_RETURN(std::vector<ldm::RgbImage> images,
                           ldm::RunJob(model, request));
      row.push_back(ldm::Uint8ImagesTensor(images)[0]);
      if (row.size() == 4) rows.push_back(std::move(row)), row.clear();
    }
  } else if (kind == ldm::ModelKind::kInpaint) {
    for (int i = 0; i < 4; ++i) {
      const ldmtrain::InpaintCase probe = ldmtrain::MakeInpaintCase(i);
      request.prompt = probe.prompt;
      request.seed = i;
      request.task = ldm::Inpaint{{64, 64, probe.image}, {64, 64, probe.mask}};
      LDM_ASSIGN_OR_RETURN(std::vector<ldm::RgbImage> images,
                           ldm::RunJob(model, request));
      const at::Tensor image = ldmtrain::ImagesToTensor({probe.image});
      const at::Tensor shown = ldm::RoundToUint8Images(
          image * (1 - ldmtrain::MasksToTensor({probe.mask})));
      rows.push_back({ldm::RoundToUint8Images(image)[0], shown[0],
                      ldm::Uint8ImagesTensor(images)[0]});
      std::printf("inpaint row %d: %s\n", i, probe.prompt.c_str());
    }
  } else {
    for (int i = 0; i < 4; ++i) {
      const at::Tensor truth = ldmtrain::ImagesToTensor(
          {shapes::RenderScene(shapes::HeldOutScene(i))});
      const at::Tensor low_res = ldmtrain::DownsampleBicubic(truth);
      request.task = ldm::SuperResolution{ldm::RgbImageFromTensor(low_res)};
      request.seed = i;
      LDM_ASSIGN_OR_RETURN(std::vector<ldm::RgbImage> images,
                           ldm::RunJob(model, request));
      rows.push_back(
          {ldm::RoundToUint8Images(
               at::upsample_nearest2d(low_res, {64, 64}))[0],
           ldm::RoundToUint8Images(ldmtrain::UpsampleBicubic(low_res))[0],
           ldm::Uint8ImagesTensor(images)[0],
           ldm::RoundToUint8Images(truth)[0]});
    }
  }
  return ldm::CallTorch("grid", [&] { return Grid(rows); });
}

int Sample(std::map<std::string, std::string> options) {
  if (!options.count("model") || !options.count("out")) return Usage();
  const std::filesystem::path dir = options["model"];
  auto model = ldm::LatentDiffusion::Load(
      (dir / "config.json").string(), (dir / "weights.safetensors").string());
  if (!model.ok()) return Error(model.status());
  const int steps = options.count("steps") ? std::stoi(options["steps"]) : 25;
  const float cfg = options.count("cfg") ? std::stof(options["cfg"]) : 5.0f;
  auto grid = SampleGrid(**model, steps, cfg, options["what"] == "ae");
  if (!grid.ok()) return Error(grid.status());
  return ldmtools::WritePpm(options["out"], *grid) ? 0 : 1;
}

int Train(ldmtrain::Task task, std::map<std::string, std::string> options) {
  if (!options.count("out")) return Usage();
  ldmtrain::TrainOptions train;
  train.out_dir = options["out"];
  train.autoencoder_dir = options["ae"];
  train.model_name = options["name"];
  train.init_weights = options["init"];
  if (options.count("steps")) train.steps = std::stoll(options["steps"]);
  if (options.count("batch")) train.batch_size = std::stoll(options["batch"]);
  if (options.count("lr")) train.learning_rate = std::stod(options["lr"]);
  if (options.count("warmup")) {
    train.warmup_steps = std::stoll(options["warmup"]);
  }
  if (options.count("prediction")) train.prediction = options["prediction"];
  if (options.count("pixel-loss")) {
    train.pixel_loss_weight = std::stod(options["pixel-loss"]);
  }
  if (options.count("pixel-loss-max-timestep")) {
    train.pixel_loss_max_timestep =
        std::stoll(options["pixel-loss-max-timestep"]);
  }
  if (options.count("outline-weight")) {
    train.outline_weight = std::stod(options["outline-weight"]);
  }
  if (options.count("two-objects")) {
    train.two_object_fraction = std::stod(options["two-objects"]);
  }
  if (options.count("ema")) train.ema_decay = std::stod(options["ema"]);
  if (options.count("seed")) train.seed = std::stoull(options["seed"]);
  if (options.count("max-seconds")) {
    train.max_seconds = std::stod(options["max-seconds"]);
  }
  if (options.count("log-every")) {
    train.log_every = std::stoll(options["log-every"]);
  }
  if (options.count("save-every")) {
    train.save_every = std::stoll(options["save-every"]);
  }
  if (options.count("device")) train.device = at::Device(options["device"]);
  if (auto status = ldmtrain::Train(task, train); !status.ok()) {
    return Error(status);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ldm::KeepFreedTensorMemory();
  if (argc < 2) return Usage();
  const std::string command = argv[1];
  auto options = ParseOptions(argc, argv, 2);
  at::set_num_threads(options.count("threads") ? std::stoi(options["threads"])
                                               : 2);
  if (command == "ae") return Train(ldmtrain::Task::kAutoencoder, options);
  if (command == "txt2img") return Train(ldmtrain::Task::kTextToImage, options);
  if (command == "inpaint") return Train(ldmtrain::Task::kInpaint, options);
  if (command == "sr") return Train(ldmtrain::Task::kSuperResolution, options);
  if (command == "sample") return Sample(options);
  return Usage();
}
