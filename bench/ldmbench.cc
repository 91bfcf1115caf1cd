// ldmbench: engine speed and memory, printed as a table.
//
//   ldmbench [--config models/configs/sd-v1.json] [--sizes 256,512]
//            [--device cpu|cuda] [--dtype f32|f16|bf16] [--repeats 3]
//            [--threads N] [--batches 1,4,8] [--batch-invariant 0|1]
//            [--fused-attention 0|1] [--cuda-graphs 0|1] [--peak 0|1]
//            [--channels-last 0|1] [--cached-mib 2048] [--lora-rank R]
//   ldmbench --load WEIGHTS.safetensors --config CONFIG.json [other flags]
//       loads a checkpoint through the real loader, reports the load time
//       and the process's peak RSS against the file's size (run it in a
//       fresh process: peak RSS is per process), then measures that model.
//
// For each config (repeatable; default: the shipped shapes-txt2img at its
// native size and SD v1 at 512) and image size it builds the model with
// seeded random weights (or loads --load), then times one UNet call at batch
// 1 (no guidance) and batch 2 (a CFG pair), and one autoencoder decode,
// reporting the median of --repeats runs after a warm-up, the parameter
// bytes, the process RSS, and each phase's peak RSS above the RSS it began
// with (on Linux: activations plus what the allocators keep). Each figure's
// FLOPs (matrix products and convolutions, counted per layer in the warm-up
// run) give its GFLOP/s; on the CPU the machine's float32 FMA peak and a 2048^3
// GEMM are measured in the same run, before and after the models (--peak 0
// skips them), and each figure is also printed as a fraction of that peak;
// on CUDA the peak is an 8192^3 matrix product in the model's dtype. UNet
// calls go through the denoiser's UNetRunner, as the server's do: on CUDA
// padded to their row bucket and replayed from CUDA graphs (--cuda-graphs
// 0: eager), the capture made in an untimed call before each figure.
// --channels-last 1 stores the UNet's convolution weights channels-last
// (NHWC), which cuDNN's convolutions then follow: to measure it.
// Figures go to docs/benchmarks.md with the machine's name.
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/machine_peak.h"
#include "server/ldm/allocator.h"
#include "server/ldm/device_memory.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/layers.h"
#include "server/ldm/lora.h"
#include "server/ldm/precision.h"
#include "server/ldm/torch_boundary.h"
#include "server/ldm/unet_runner.h"

namespace {

double CurrentRssMiB() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * sysconf(_SC_PAGESIZE) /
         (1 << 20);
}

double PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// Starts the peak RSS afresh from the current RSS (Linux >= 4.0), so that a
// phase's own peak can be read; false where the kernel does not allow it.
bool ResetPeakRss() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
  clear_refs.close();
  return !clear_refs.fail();
}

// A phase's peak memory above where it began: the process's RSS on the CPU
// (activations and what the allocators keep), the caching allocator's
// tensors on CUDA. Negative where it cannot be read.
class PhasePeak {
 public:
  explicit PhasePeak(const c10::Device& device) : device_(device) {
    if (device_.is_cuda()) {
      const absl::StatusOr<ldm::DeviceMemory> memory = ldm::CudaMemory(device_);
      readable_ = memory.ok() && ldm::ResetCudaMemoryPeaks(device_).ok();
      if (readable_) start_mib_ = memory->allocated_bytes / 1048576.0;
    } else {
      start_mib_ = CurrentRssMiB();
      readable_ = ResetPeakRss();
    }
  }

  double AboveStartMiB() const {
    if (!readable_) return -1;
    if (!device_.is_cuda()) return PeakRssMiB() - start_mib_;
    const absl::StatusOr<ldm::DeviceMemory> memory = ldm::CudaMemory(device_);
    return memory.ok() ? memory->peak_allocated_bytes / 1048576.0 - start_mib_
                       : -1;
  }

 private:
  c10::Device device_;
  bool readable_ = false;
  double start_mib_ = 0;
};

struct Timing {
  double ms = 0;               // Median wall time.
  int64_t flops = 0;           // Matrix and convolution work of one run.
  double peak_above_mib = -1;  // PhasePeak's figure.
  // GFLOP/s, and the fraction of `peak_gflops` that is.
  double Gflops() const { return flops / ms / 1e6; }
};

// Median wall time in ms of `fn` over `repeats` runs after one warm-up, in
// which its FLOPs are counted; `fn` must synchronise (read a value back) so
// device work is counted.
template <typename Fn>
Timing Time(const c10::Device& device, int repeats, Fn&& fn) {
  Timing timing;
  const PhasePeak peak(device);
  ldm::StartCountingFlops();
  fn();
  timing.flops = ldm::StopCountingFlops();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start)
                        .count());
  }
  std::sort(times.begin(), times.end());
  timing.ms = times[times.size() / 2];
  timing.peak_above_mib = peak.AboveStartMiB();
  return timing;
}

// The machine's FMA peak and GEMM rate, printed; returns the peak.
double PrintMachinePeak(const char* when) {
  const ldmbench::FmaPeak peak = ldmbench::MeasureFmaPeak();
  const double gemm = ldmbench::MeasureGemmGflops();
  std::printf(
      "machine %s: f32 FMA peak %.1f GFLOP/s (%s, %d threads), f32 GEMM "
      "2048^3 %.1f GFLOP/s (%.0f%% of peak)\n",
      when, peak.gflops, peak.isa.c_str(), peak.threads, gemm,
      100 * gemm / peak.gflops);
  std::fflush(stdout);
  return peak.gflops;
}

struct Options {
  std::string load;
  std::vector<std::string> configs;
  std::vector<int64_t> sizes;
  std::string device = "cpu";
  std::string dtype = "f32";
  int repeats = 3;
  int threads = 0;
  std::vector<int64_t> batches;  // Images per guided call; empty = skip.
  bool batch_invariant = false;
  bool fused_attention = true;
  bool cuda_graphs = true;
  bool channels_last = false;
  bool peak = true;  // Measure the CPU's peak before and after (CPU only).
  // > 0: also time the guided UNet call with a LoRA of this rank on every
  // projection of its transformer blocks (what kohya's SD adapters cover).
  int64_t lora_rank = 0;
};

// Random updates of `rank` on every Linear and 1x1 Conv2d of the UNet's
// transformer blocks, as a LoRA file would bind them.
ldm::BoundLoras TransformerLora(ldm::LatentDiffusion& model, int64_t rank) {
  const std::regex projection(
      R"(model\.diffusion_model\..*\.((transformer_blocks\.\d+\.(attn\d\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)))|proj_in|proj_out)\.weight)");
  ldm::BoundLoras bound;
  for (const auto& [name, unused] : model.MutableParameters()) {
    if (!std::regex_match(name, projection)) continue;
    const at::Tensor* weight = model.Parameter(name);
    std::vector<int64_t> down = {rank, weight->size(1)};
    std::vector<int64_t> up = {weight->size(0), rank};
    if (weight->dim() == 4) {
      down.insert(down.end(), {weight->size(2), weight->size(3)});
      up.insert(up.end(), {1, 1});
    }
    bound.updates[weight].push_back({at::randn(down, weight->options()) * 0.01,
                                     at::randn(up, weight->options()) * 0.01,
                                     1.0});
  }
  return bound;
}

// Parses "1,4,8"; unparsable items are skipped.
std::vector<int64_t> ParseIntList(absl::string_view list) {
  std::vector<int64_t> values;
  for (absl::string_view item : absl::StrSplit(list, ',')) {
    int64_t parsed = 0;
    if (absl::SimpleAtoi(item, &parsed)) values.push_back(parsed);
  }
  return values;
}

// Loads `options.load` through the real loader and prints the load time and
// the process's peak RSS against the file's size (meaningful in a fresh
// process: peak RSS is per process).
absl::StatusOr<std::unique_ptr<ldm::LatentDiffusion>> LoadAndReport(
    const Options& options, const std::string& config,
    const ldm::LoadOptions& load) {
  const double rss_before = CurrentRssMiB();
  const auto start = std::chrono::steady_clock::now();
  auto model = ldm::LatentDiffusion::Load(config, options.load, load);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (!model.ok()) return model.status();
  std::ifstream file(options.load, std::ios::binary | std::ios::ate);
  const double file_mib = static_cast<double>(file.tellg()) / (1 << 20);
  const double param_mib = static_cast<double>((*model)->NumParameters()) *
                           c10::elementSize(load.dtype) / (1 << 20);
  std::printf(
      "load %s: %.2f s, file %.0f MiB, parameters %.0f MiB, RSS before %.0f "
      "MiB, after %.0f MiB, peak %.0f MiB (peak - before = %.3f x "
      "parameters)\n",
      options.load.c_str(), seconds, file_mib, param_mib, rss_before,
      CurrentRssMiB(), PeakRssMiB(), (PeakRssMiB() - rss_before) / param_mib);
  std::fflush(stdout);
  return model;
}

int Run(const Options& options) {
  ldm::LoadOptions load;
  load.device = at::Device(options.device);
  load.dtype = ldm::ParseDtypeName(options.dtype).value();
  load.channels_last = options.channels_last;
  ldm::SetBatchInvariant(options.batch_invariant);
  ldm::SetFusedAttention(options.fused_attention);
  ldm::SetCudaGraphs(options.cuda_graphs);
  const bool on_cpu = load.device.is_cpu() && options.peak;
  const bool on_cuda = load.device.is_cuda();
  std::printf(
      "threads %d, device %s, dtype %s, repeats %d, batch-invariant %d, "
      "fused attention %s, CUDA graphs %s, channels-last %d\n",
      at::get_num_threads(), options.device.c_str(), options.dtype.c_str(),
      options.repeats, options.batch_invariant,
      !ldm::FusedAttentionAvailable() ? "n/a (LibTorch < 2.1)"
      : options.fused_attention       ? "on (CUDA)"
                                      : "off",
      !ldm::CudaGraphsAvailable() ? "n/a (no CUDA LibTorch)"
      : !on_cuda                  ? "n/a (CPU)"
      : options.cuda_graphs       ? "on"
                                  : "off",
      options.channels_last);
  double peak = on_cpu ? PrintMachinePeak("before") : 0;
  const char* peak_name = "FMA peak";
  if (on_cuda && options.peak) {
    peak = ldmbench::MeasureGemmGflops(
        8192, 5, at::TensorOptions().device(load.device).dtype(load.dtype));
    peak_name = "matrix peak";
    std::printf("machine: %s GEMM 8192^3 %.1f TFLOP/s (the matrix peak)\n",
                options.dtype.c_str(), peak / 1000);
  }
  std::printf("%-14s %5s %10s %10s %12s %12s %12s %12s %10s %10s\n", "model",
              "size", "params(M)", "param MiB", "text cfg ms", "unet b1 ms",
              "unet cfg ms", "decode ms", "RSS MiB", "peak MiB");
  for (const std::string& path : options.configs) {
    auto config = ldm::ReadModelConfig(path);
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
      return 1;
    }
    const double rss_before = CurrentRssMiB();
    auto model = options.load.empty()
                     ? ldm::LatentDiffusion::CreateRandom(*config, 1, load)
                     : LoadAndReport(options, path, load);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
      return 1;
    }
    const double param_mib = static_cast<double>((*model)->NumParameters()) *
                             c10::elementSize(load.dtype) / (1 << 20);
    const double rss_model = CurrentRssMiB() - rss_before;
    std::vector<int64_t> sizes = options.sizes;
    if (sizes.empty()) sizes = {config->native_height()};
    c10::InferenceMode inference;
    // A guided request's text stage: its prompt and the empty one, in one
    // encoder call. -1 where the model has no text encoder or tokenizer.
    double text_cfg = -1;
    if (config->clip || config->text_encoder) {
      const std::vector<std::string> prompts = {
          "a photograph of an astronaut riding a horse on mars", ""};
      if ((*model)->EncodeText(prompts).ok()) {
        text_cfg = Time(load.device, options.repeats, [&] {
                     (*model)->EncodeText(prompts)->context.sum().item<float>();
                   }).ms;
      }
    }
    const int64_t f = config->ae.DownsamplingFactor();
    for (int64_t size : sizes) {
      const auto tensor_options =
          at::TensorOptions().device(load.device).dtype(load.dtype);
      const int64_t latent = size / f;
      const int64_t ctx_dim = config->unet.context_dim;
      const ldm::UNetRunner& runner = (*model)->denoiser().unet_runner();
      auto unet_call = [&](int64_t batch) {
        at::Tensor x = at::randn(
            {batch, config->unet.in_channels, latent, latent}, tensor_options);
        at::Tensor t =
            at::full({batch}, 500.0f, at::TensorOptions().device(load.device));
        at::Tensor context =
            ctx_dim > 0
                ? at::randn({batch, config->ctx_len, ctx_dim}, tensor_options)
                : at::Tensor();
        auto call = [&] {
          runner.Run({x, t, context, {}}).sum().item<float>();
        };
        call();  // Captures the call's graph (uncounted, untimed).
        return Time(load.device, options.repeats, call);
      };
      const Timing unet_b1_timing = unet_call(1);
      const Timing unet_cfg_timing = unet_call(2);
      at::Tensor z =
          at::randn({1, config->ae.embed_dim, latent, latent},
                    tensor_options.dtype((*model)->precision().first_stage));
      const Timing decode_timing = Time(load.device, options.repeats, [&] {
        (*model)->first_stage().autoencoder().Decode(z).sum().item<float>();
      });
      const double unet_b1 = unet_b1_timing.ms;
      const double unet_cfg = unet_cfg_timing.ms;
      const double decode = decode_timing.ms;
      std::printf(
          "%-14s %5lld %10.1f %10.1f %12.1f %12.1f %12.1f %12.1f %10.0f "
          "%10.0f\n",
          config->name.c_str(), static_cast<long long>(size),
          (*model)->NumParameters() / 1e6, param_mib, text_cfg, unet_b1,
          unet_cfg, decode, rss_model, PeakRssMiB());
      const ldm::CachedTensorMemory cached = ldm::CachedTensorMemoryStats();
      std::printf(
          "  freed tensor memory kept: %.0f MiB, %lld reuses, %lld new\n",
          cached.cached_bytes / 1048576.0, static_cast<long long>(cached.hits),
          static_cast<long long>(cached.misses));
      // FLOPs counted per layer (matrix products and convolutions).
      for (const auto& [name, timing] :
           {std::pair<const char*, const Timing*>{"unet b1", &unet_b1_timing},
            {"unet cfg", &unet_cfg_timing},
            {"decode", &decode_timing}}) {
        std::printf("  %-9s %8.1f GFLOP %9.1f GFLOP/s", name,
                    timing->flops / 1e9, timing->Gflops());
        if (peak > 0) {
          std::printf("  %5.1f%% of the %s", 100 * timing->Gflops() / peak,
                      peak_name);
        }
        if (timing->peak_above_mib >= 0) {
          std::printf("  peak %s +%.0f MiB", on_cuda ? "allocated" : "RSS",
                      timing->peak_above_mib);
        }
        std::printf("\n");
      }
      if (options.lora_rank > 0) {
        const ldm::BoundLoras lora =
            TransformerLora(**model, options.lora_rank);
        double with_lora = 0;
        {
          ldm::ScopedLowRankUpdates active(&lora.updates);
          with_lora = unet_call(2).ms;
        }
        // Measured again after, side by side: the machine is shared.
        const double without = unet_call(2).ms;
        std::printf(
            "  unet cfg with a rank-%lld LoRA on %zu layers: %.1f ms, "
            "without: %.1f ms (%.3f x)\n",
            static_cast<long long>(options.lora_rank), lora.updates.size(),
            with_lora, without, with_lora / without);
      }
      for (int64_t images : options.batches) {
        const Timing batched = unet_call(2 * images);
        std::printf(
            "  guided call of %2lld images: %9.1f ms, %7.2f ms per "
            "image-step (%.2f x the 1-image cost), peak +%.0f MiB (%.0f "
            "MiB per image)",
            static_cast<long long>(images), batched.ms, batched.ms / images,
            batched.ms / images / unet_cfg, batched.peak_above_mib,
            batched.peak_above_mib / images);
        if (peak > 0) {
          std::printf(", %.1f%% of the %s", 100 * batched.Gflops() / peak,
                      peak_name);
        }
        std::printf("\n");
      }
      if (on_cuda) {
        const absl::Status graph_error = runner.graph_error();
        std::printf(
            "  guided steps/s (1 image): %.1f; CUDA graphs captured: "
            "%lld%s%s\n",
            1000 / unet_cfg, static_cast<long long>(runner.captured_graphs()),
            graph_error.ok() ? "" : "; ",
            std::string(graph_error.message()).c_str());
      }
      std::fflush(stdout);
    }
  }
  if (on_cpu) PrintMachinePeak("after");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  int64_t cached_mib = 2048;
  if (argc % 2 == 0) {
    std::fprintf(stderr,
                 "usage: ldmbench [--FLAG VALUE]... (the flags are listed at "
                 "the top of bench/ldmbench.cc)\n");
    return 2;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--load") {
      options.load = value;
    } else if (flag == "--config") {
      options.configs.push_back(value);
    } else if (flag == "--sizes") {
      options.sizes = ParseIntList(value);
    } else if (flag == "--batches") {
      options.batches = ParseIntList(value);
    } else if (flag == "--batch-invariant") {
      options.batch_invariant = value == "1" || value == "true";
    } else if (flag == "--fused-attention") {
      options.fused_attention = value == "1" || value == "true";
    } else if (flag == "--channels-last") {
      options.channels_last = value == "1" || value == "true";
    } else if (flag == "--cuda-graphs") {
      options.cuda_graphs = value == "1" || value == "true";
    } else if (flag == "--cached-mib") {
      cached_mib = std::stoll(value);
    } else if (flag == "--lora-rank") {
      options.lora_rank = std::stoll(value);
    } else if (flag == "--peak") {
      options.peak = value == "1" || value == "true";
    } else if (flag == "--device") {
      options.device = value;
    } else if (flag == "--dtype") {
      if (!ldm::ParseDtypeName(value).ok()) {
        std::fprintf(stderr, "ldmbench: --dtype must be f32, f16 or bf16\n");
        return 2;
      }
      options.dtype = value;
    } else if (flag == "--repeats") {
      options.repeats = std::max(1, std::stoi(value));
    } else if (flag == "--threads") {
      options.threads = std::stoi(value);
    } else {
      std::fprintf(stderr, "ldmbench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  // Before any tensor exists (flags are parsed first for its size).
  ldm::KeepFreedTensorMemory(static_cast<size_t>(cached_mib) << 20);
  at::set_num_threads(options.threads > 0
                          ? options.threads
                          : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  if (!options.load.empty() && options.configs.size() != 1) {
    std::fprintf(stderr, "ldmbench: --load needs one --config\n");
    return 2;
  }
  if (options.configs.empty()) {
    options.configs = {
        std::string(LDMSERVE_SOURCE_DIR) + "/models/shapes-txt2img/config.json",
        std::string(LDMSERVE_SOURCE_DIR) + "/models/configs/sd-v1.json"};
  }
  absl::Status status = ldm::CallTorchStatus("ldmbench", [&] {
    return Run(options) == 0 ? absl::OkStatus() : absl::InternalError("failed");
  });
  if (!status.ok()) {
    std::fprintf(stderr, "ldmbench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
