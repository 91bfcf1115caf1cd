// schedbench: the scheduler's batching modes side by side, in process. The
// service's own Scheduler and workers under the load loop of `ldmctl bench`
// (client/load_loop.h), without gRPC, so that it builds wherever the runtime
// does: here, and on a GPU machine against its PyTorch
// (-DLDMSERVE_BUILD_SERVICE=OFF -DLDMSERVE_BUILD_RUNTIME=ON), where it runs a
// CUDA worker.
//
//   schedbench [--config models/shapes-txt2img/config.json]
//              [--weights models/shapes-txt2img/weights.safetensors]
//              [--device cpu|cuda:0] [--dtype f32|f16] [--threads N]
//              [--modes none,request,step] [--concurrency 8] [--rate R]
//              [--duration 20] [--steps 10,25,50] [--max-batch 8]
//              [--batch-invariant 0|1] [--prompt "..."] [--seed 1]
//
// Closed loop (--concurrency clients) or open loop (--rate requests/s,
// Poisson), each request one image with its step count drawn from --steps.
// Per mode one line: images/s, latency p50/p95/p99 (from arrival to the
// decoded image), mean images per UNet call and ms per call, errors, and on
// CUDA the caching allocator's peak. Each mode starts with a warm-up that is
// not counted.
#include <ATen/Parallel.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/load_loop.h"
#include "server/ldm/allocator.h"
#include "server/ldm/device_memory.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/layers.h"
#include "server/ldm/precision.h"
#include "server/runtime/scheduler.h"
#include "tools/cli_util.h"

namespace {

// Waits for a job's one terminal event; ignores the rest.
class WaitingSink : public ldmserve::JobSink {
 public:
  void OnQueued(int /*position*/) override {}
  void OnStarted(absl::Duration /*queue_time*/) override {}
  void OnProgress(const ldmserve::ProgressEvent& /*event*/) override {}
  void OnResult(ldmserve::JobResult result) override {
    images_ = static_cast<int>(result.images.size());
    done_.Notify();
  }
  void OnError(absl::Status status) override {
    status_ = std::move(status);
    done_.Notify();
  }
  // Blocks until the job ended; its status code name and images.
  ldmctl::Outcome Wait() {
    done_.WaitForNotification();
    ldmctl::Outcome outcome;
    outcome.code = absl::StatusCodeToString(status_.code());
    outcome.images = status_.ok() ? images_ : 0;
    return outcome;
  }

 private:
  absl::Notification done_;
  // Written once before done_ is notified, read after.
  absl::Status status_;
  int images_ = 0;
};

// Sums the UNet calls of one mode's run.
class CallCounter : public ldmserve::SchedulerObserver {
 public:
  void OnQueueWait(const std::string& /*model*/,
                   absl::Duration /*wait*/) override {}
  void OnDenoiseCall(const ldmserve::WorkerId& /*worker*/,
                     const std::string& /*model*/, int /*jobs*/, int images,
                     absl::Duration duration) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    images_ += images;
    call_time_ += duration;
  }
  void OnStage(const ldmserve::WorkerId& /*worker*/, const char* /*stage*/,
               absl::Duration /*duration*/) override {}
  void Reset() {
    absl::MutexLock lock(&mu_);
    calls_ = 0;
    images_ = 0;
    call_time_ = absl::ZeroDuration();
  }
  double ImagesPerCall() const {
    absl::MutexLock lock(&mu_);
    return calls_ > 0 ? static_cast<double>(images_) / calls_ : 0;
  }
  double MsPerCall() const {
    absl::MutexLock lock(&mu_);
    return calls_ > 0 ? absl::ToDoubleMilliseconds(call_time_) / calls_ : 0;
  }

 private:
  mutable absl::Mutex mu_;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t images_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration call_time_ ABSL_GUARDED_BY(mu_);
};

std::vector<int> ParseInts(const std::string& list) {
  std::vector<int> values;
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    int value = 0;
    if (!absl::SimpleAtoi(item, &value) || value <= 0) return {};
    values.push_back(value);
  }
  return values;
}

absl::StatusOr<ldmserve::Batching> ParseBatching(absl::string_view mode) {
  if (mode == "none") return ldmserve::Batching::kNone;
  if (mode == "request") return ldmserve::Batching::kRequest;
  if (mode == "step") return ldmserve::Batching::kStep;
  return absl::InvalidArgumentError(
      absl::StrCat("--modes: '", mode, "' is not none, request or step"));
}

struct BenchOptions {
  std::string device = "cpu";
  std::string prompt = "a red circle above a blue square";
  int max_batch = 8;
  ldmctl::LoadOptions load;
};

// One mode: a warm-up, then the measured load. Prints one line.
void RunMode(const ldm::LatentDiffusion& model, const BenchOptions& options,
             const std::string& mode_name, ldmserve::Batching mode) {
  CallCounter counter;
  ldmserve::SchedulerOptions scheduler_options;
  scheduler_options.queue_size = 1024;
  scheduler_options.max_batch_images = options.max_batch;
  scheduler_options.batching = mode;
  scheduler_options.worker_devices = {model.device().str()};
  scheduler_options.observer = &counter;
  ldmserve::Scheduler scheduler(scheduler_options);

  const ldm::ModelConfig& config = model.config();
  auto run_one = [&](const ldmctl::LoadOptions& load, int64_t index,
                     absl::Time arrival) {
    const ldmctl::PlannedRequest plan = ldmctl::PlanRequest(load, index);
    ldmserve::JobSpec spec;
    spec.model_name = "bench";
    spec.request.prompt = options.prompt;
    spec.request.seed = plan.seed;
    spec.request.sampler.steps = plan.steps;
    if (config.default_guidance_scale > 0) {
      spec.request.sampler.guidance_scale =
          static_cast<float>(config.default_guidance_scale);
    }
    spec.geometry =
        ldm::CheckRequest(model.capabilities(), spec.request).value();
    auto sink = std::make_shared<WaitingSink>();
    auto job = std::make_shared<ldmserve::Job>(
        absl::StrCat(index), std::move(spec),
        std::vector<const ldm::LatentDiffusion*>{&model}, sink,
        absl::InfiniteFuture());
    ldmctl::Outcome outcome;
    if (absl::Status admitted = scheduler.Submit(job); !admitted.ok()) {
      outcome.code = absl::StatusCodeToString(admitted.code());
    } else {
      outcome = sink->Wait();
    }
    outcome.latency_seconds = absl::ToDoubleSeconds(absl::Now() - arrival);
    return outcome;
  };

  // Warm-up: two jobs per client from the same mix (the allocator's pools,
  // cuDNN's choices, every batch size the mode reaches), then the counters
  // start over.
  ldmctl::LoadOptions warm_up = options.load;
  warm_up.rate = 0;
  warm_up.max_requests = 2 * std::max(1, options.load.concurrency);
  warm_up.duration = absl::Seconds(60);
  ldmctl::RunLoadLoop(warm_up, [&](int64_t index, absl::Time arrival) {
    return run_one(warm_up, index, arrival);
  });
  counter.Reset();
  const c10::Device device = model.device();
  if (device.is_cuda()) (void)ldm::ResetCudaMemoryPeaks(device);

  const ldmctl::LoadReport report =
      ldmctl::RunLoadLoop(options.load, [&](int64_t index, absl::Time arrival) {
        return run_one(options.load, index, arrival);
      });
  std::string memory = "-";
  if (absl::StatusOr<ldm::DeviceMemory> used = ldm::CudaMemory(device);
      used.ok()) {
    memory = absl::StrCat(used->peak_allocated_bytes >> 20, "/",
                          used->peak_reserved_bytes >> 20);
  }
  std::printf("%-8s %9.3f %8.3f %8.3f %8.3f %12.2f %8.2f %7d %12s\n",
              mode_name.c_str(), report.ImagesPerSecond(),
              report.Percentile(50), report.Percentile(95),
              report.Percentile(99), counter.ImagesPerCall(),
              counter.MsPerCall(), report.requests - report.ok, memory.c_str());
  std::fflush(stdout);
  scheduler.Shutdown(absl::Seconds(60));
}

int Usage(const std::string& why) {
  std::fprintf(stderr,
               "schedbench: %s\nusage: schedbench [--config C] [--weights W] "
               "[--device cpu|cuda:N] [--dtype f32|f16] [--threads N] "
               "[--modes none,request,step] [--concurrency N | --rate R] "
               "[--duration S] [--steps 10,25,50] [--max-batch N] "
               "[--batch-invariant 0|1] [--prompt P] [--seed S]\n",
               why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const auto flags = ldmtools::ParseOptions(argc, argv, 1);
  auto flag = [&](const std::string& name, const std::string& fallback) {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  };
  const std::string shipped =
      std::string(LDMSERVE_SOURCE_DIR) + "/models/shapes-txt2img/";
  BenchOptions options;
  options.device = flag("device", "cpu");
  options.prompt = flag("prompt", options.prompt);
  int threads = 0, duration = 0, batch_invariant = 0, seed = 0;
  double rate = 0;
  if (!absl::SimpleAtoi(flag("concurrency", "8"), &options.load.concurrency) ||
      !absl::SimpleAtod(flag("rate", "0"), &rate) ||
      !absl::SimpleAtoi(flag("duration", "20"), &duration) ||
      !absl::SimpleAtoi(flag("max-batch", "8"), &options.max_batch) ||
      !absl::SimpleAtoi(flag("threads", "0"), &threads) ||
      !absl::SimpleAtoi(flag("batch-invariant", "0"), &batch_invariant) ||
      !absl::SimpleAtoi(flag("seed", "1"), &seed) ||
      options.load.concurrency < 1 || duration < 1 || options.max_batch < 1 ||
      rate < 0) {
    return Usage("a numeric flag is malformed or out of range");
  }
  options.load.rate = rate;
  options.load.max_in_flight = 256;
  options.load.duration = absl::Seconds(duration);
  options.load.seed = static_cast<uint64_t>(seed);
  options.load.steps = ParseInts(flag("steps", "10,25,50"));
  if (options.load.steps.empty()) return Usage("--steps: positive integers");
  std::vector<std::pair<std::string, ldmserve::Batching>> modes;
  for (absl::string_view name :
       absl::StrSplit(flag("modes", "none,request,step"), ',')) {
    absl::StatusOr<ldmserve::Batching> mode = ParseBatching(name);
    if (!mode.ok()) return Usage(mode.status().ToString());
    const std::string mode_name(name);
    modes.emplace_back(mode_name, *mode);
  }
  const std::string dtype = flag("dtype", "f32");
  if (dtype != "f32" && dtype != "f16") return Usage("--dtype: f32 or f16");

  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(threads > 0 ? threads : std::max(1, cores - 1));
  at::set_num_interop_threads(1);
  ldm::KeepFreedTensorMemory();
  ldm::SetBatchInvariant(batch_invariant != 0);
  ldm::LoadOptions load;
  try {
    load.device = c10::Device(options.device);
  } catch (const std::exception&) {
    return Usage("--device: " + options.device + " is not a device");
  }
  absl::StatusOr<at::ScalarType> parsed_dtype = ldm::ParseDtypeName(dtype);
  if (!parsed_dtype.ok())
    return Usage(std::string(parsed_dtype.status().message()));
  load.dtype = *parsed_dtype;
  auto model = ldm::LatentDiffusion::Load(
      flag("config", shipped + "config.json"),
      flag("weights", shipped + "weights.safetensors"), load);
  if (!model.ok()) {
    std::fprintf(stderr, "schedbench: %s\n", model.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "# device %s, dtype %s, threads %d, %s, steps %s, max batch %d, "
      "batch-invariant %d, %d s per mode\n",
      options.device.c_str(), dtype.c_str(), at::get_num_threads(),
      rate > 0
          ? absl::StrCat("open loop ", rate, " requests/s").c_str()
          : absl::StrCat("closed loop ", options.load.concurrency, " clients")
                .c_str(),
      flag("steps", "10,25,50").c_str(), options.max_batch, batch_invariant,
      duration);
  std::printf("%-8s %9s %8s %8s %8s %12s %8s %7s %12s\n", "mode", "images/s",
              "p50_s", "p95_s", "p99_s", "images/call", "call_ms", "errors",
              "peak_MiB");
  for (const auto& [name, mode] : modes) RunMode(**model, options, name, mode);
  return 0;
}
