// ldmtool: offline model utilities (no server needed).
//
//   ldmtool init-random --config CONFIG.json --seed S --out W.safetensors
//                       [--dtype f32|f16|bf16]
//       builds the model of CONFIG with seeded random weights and saves it
//       under the reference key names.
//   ldmtool inspect WEIGHTS.safetensors [--configs DIR]
//       lists tensors (name, dtype, shape), parameter counts per component,
//       and the model family: the configs in DIR (default models/configs)
//       that build exactly its UNet and autoencoder keys and shapes.
//   ldmtool reproduce --set DIR --out FILE.safetensors
//       computes every output of the golden set DIR (see
//       ../shared/golden/README.md) through the production code and writes
//       them under the golden key names.
//   ldmtool compare --golden GOLDEN.safetensors --actual FILE.safetensors
//       prints rel_max per key against the README's tolerances; exit 1 on
//       any failure.
//   ldmtool tokenize --tokenizer DIR [--padded] PROMPT...
//       prints each prompt's CLIP BPE ids on one line (the 77-id SD v1 form
//       with --padded), for debugging prompts.
//   ldmtool txt2img --config C --weights W --prompt P [--steps N] [--seed S]
//                   [--n N] [--device cpu|cuda] [--dtype f32|f16|bf16]
//                   --out X.ppm
//       runs a whole job alone through the engine twice (the second timed)
//       and writes the first image as binary PPM.
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/ldm/allocator.h"
#include "server/ldm/checkpoint.h"
#include "server/ldm/clip_tokenizer.h"
#include "server/ldm/image_tensor.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/model_family.h"
#include "server/ldm/precision.h"
#include "server/ldm/safetensors.h"
#include "server/ldm/torch_boundary.h"
#include "tools/cli_util.h"
#include "tools/reference/golden_reproduction.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage:\n"
               "  ldmtool init-random --config C --seed S --out W\n"
               "                      [--dtype f32|f16|bf16]\n"
               "  ldmtool inspect W [--configs DIR]\n"
               "  ldmtool txt2img --config C --weights W --prompt P\n"
               "                  [--steps N] [--seed S] [--cfg X] [--n N]\n"
               "                  [--device D] [--dtype f32|f16|bf16]\n"
               "                  --out IMAGE.ppm\n");
  return 2;
}

using ldmtools::ParseOptions;

int Error(const absl::Status& status) {
  std::fprintf(stderr, "ldmtool: %s\n", std::string(status.message()).c_str());
  return 1;
}

int InitRandom(std::map<std::string, std::string> options) {
  if (!options.count("config") || !options.count("out")) return Usage();
  auto config = ldm::ReadModelConfig(options["config"]);
  if (!config.ok()) return Error(config.status());
  const uint64_t seed =
      options.count("seed") ? std::stoull(options["seed"]) : 0;
  auto model = ldm::LatentDiffusion::CreateRandom(*config, seed);
  if (!model.ok()) return Error(model.status());
  absl::StatusOr<at::ScalarType> dtype =
      ldm::ParseDtypeName(options.count("dtype") ? options["dtype"] : "f32");
  if (!dtype.ok()) return Error(dtype.status());
  if (auto saved = (*model)->Save(options["out"], *dtype); !saved.ok()) {
    return Error(saved);
  }
  std::printf("%s: %lld parameters, seed %llu\n", options["out"].c_str(),
              static_cast<long long>((*model)->NumParameters()),
              static_cast<unsigned long long>(seed));
  return 0;
}

int Inspect(const std::string& path, const std::string& config_dir) {
  auto file = ldm::Checkpoint::Open(path);
  if (!file.ok()) return Error(file.status());
  std::map<std::string, int64_t> per_component;
  for (const auto& [name, entry] : (*file)->tensors()) {
    int64_t count = 1;
    for (int64_t d : entry.shape) count *= d;
    // model.diffusion_model / first_stage_model / cond_stage_model / ...
    const size_t dot = name.find('.');
    const size_t second = name.find('.', dot + 1);
    std::string component = name.substr(0, dot);
    if (component == "model" && second != std::string::npos) {
      component = name.substr(0, second);
    }
    per_component[component] += count;
    std::printf("%s\t%s\t[%s]\n", name.c_str(), c10::toString(entry.dtype),
                absl::StrJoin(entry.shape, ", ").c_str());
  }
  for (const auto& [component, count] : per_component) {
    std::printf("# %s: %lld parameters\n", component.c_str(),
                static_cast<long long>(count));
  }
  auto family = ldm::DetectFamily(**file, path, config_dir);
  std::printf(
      "# family: %s\n",
      family.ok()
          ? family->name.c_str()
          : absl::StrCat("unknown: ", family.status().message()).c_str());
  return 0;
}

// ldmtool tokenize --tokenizer DIR [--padded] PROMPT...: one line of ids per
// prompt.
int Tokenize(int argc, char** argv) {
  std::string dir;
  bool padded = false;
  std::vector<std::string> prompts;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--tokenizer" && i + 1 < argc) {
      dir = argv[++i];
    } else if (arg == "--padded") {
      padded = true;
    } else {
      prompts.push_back(arg);
    }
  }
  if (dir.empty()) return Usage();
  auto tokenizer = ldm::ClipTokenizer::Load(dir);
  if (!tokenizer.ok()) return Error(tokenizer.status());
  for (const std::string& prompt : prompts) {
    const std::vector<int64_t> ids =
        padded ? (*tokenizer)->EncodePadded(prompt).ids
               : (*tokenizer)->Encode(prompt);
    std::printf("%s\n", absl::StrJoin(ids, " ").c_str());
  }
  return 0;
}

int Reproduce(std::map<std::string, std::string> options) {
  if (!options.count("set") || !options.count("out")) return Usage();
  auto outputs = ldm::reference::ReproduceGoldenSet(options["set"]);
  if (!outputs.ok()) return Error(outputs.status());
  if (auto saved = ldm::WriteSafetensors(options["out"], *outputs);
      !saved.ok()) {
    return Error(saved);
  }
  std::printf("%s: %zu tensors\n", options["out"].c_str(), outputs->size());
  return 0;
}

int Compare(std::map<std::string, std::string> options) {
  if (!options.count("golden") || !options.count("actual")) return Usage();
  auto golden = ldm::SafetensorsFile::Open(options["golden"]);
  if (!golden.ok()) return Error(golden.status());
  auto actual_file = ldm::SafetensorsFile::Open(options["actual"]);
  if (!actual_file.ok()) return Error(actual_file.status());
  std::map<std::string, at::Tensor> actual;
  for (const auto& [name, entry] : (*actual_file)->entries()) {
    actual[name] = (*actual_file)->Get(name).value();
  }
  int failures = 0;
  for (const auto& c : ldm::reference::CompareWithGolden(**golden, actual)) {
    std::printf("%-4s %-28s error %.3g (tolerance %.3g)%s%s\n",
                c.passed ? "ok" : "FAIL", c.key.c_str(), c.error, c.tolerance,
                c.detail.empty() ? "" : "  ", c.detail.c_str());
    failures += c.passed ? 0 : 1;
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}

int TextToImage(std::map<std::string, std::string> options) {
  if (!options.count("config") || !options.count("weights") ||
      !options.count("out")) {
    return Usage();
  }
  ldm::LoadOptions load;
  if (options.count("device")) {
    auto device =
        ldm::CallTorch("device", [&] { return at::Device(options["device"]); });
    if (!device.ok()) return Error(device.status());
    load.device = *device;
  }
  if (options.count("dtype")) {
    absl::StatusOr<at::ScalarType> dtype =
        ldm::ParseDtypeName(options["dtype"]);
    if (!dtype.ok()) return Error(dtype.status());
    load.dtype = *dtype;
  }
  auto model =
      ldm::LatentDiffusion::Load(options["config"], options["weights"], load);
  if (!model.ok()) return Error(model.status());
  ldm::GenerationRequest job;
  job.prompt = options["prompt"];
  if (options.count("steps")) job.sampler.steps = std::stoi(options["steps"]);
  if (options.count("seed")) job.seed = std::stoull(options["seed"]);
  if (options.count("cfg")) {
    job.sampler.guidance_scale = std::stof(options["cfg"]);
  }
  if (options.count("n")) job.num_images = std::stoi(options["n"]);
  // The first run warms up (allocators, kernels); the second is timed.
  auto images = ldm::RunJob(**model, job);
  if (!images.ok()) return Error(images.status());
  const auto start = std::chrono::steady_clock::now();
  images = ldm::RunJob(**model, job);
  if (!images.ok()) return Error(images.status());
  std::printf(
      "txt2img: %d image(s), %d steps on %s in %.3f s\n", job.num_images,
      job.sampler.steps,
      options.count("device") ? options["device"].c_str() : "cpu",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count());
  return ldmtools::WritePpm(options["out"], ldm::Uint8ImagesTensor(*images)[0])
             ? 0
             : 1;
}

}  // namespace

int main(int argc, char** argv) {
  ldm::KeepFreedTensorMemory();
  if (argc < 2) return Usage();
  const std::string command = argv[1];
  {
    // --threads N (default 2) for every subcommand.
    auto all = ParseOptions(argc, argv, 2);
    at::set_num_threads(all.count("threads") ? std::stoi(all["threads"]) : 2);
  }
  if (command == "init-random") return InitRandom(ParseOptions(argc, argv, 2));
  if (command == "inspect" && argc >= 3) {
    auto options = ParseOptions(argc, argv, 3);
    return Inspect(argv[2],
                   options.count("configs")
                       ? options["configs"]
                       : std::string(LDMSERVE_SOURCE_DIR) + "/models/configs");
  }
  if (command == "txt2img") return TextToImage(ParseOptions(argc, argv, 2));
  if (command == "reproduce") return Reproduce(ParseOptions(argc, argv, 2));
  if (command == "tokenize") return Tokenize(argc, argv);
  if (command == "compare") return Compare(ParseOptions(argc, argv, 2));
  return Usage();
}
