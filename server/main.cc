// ldmserve: serves latent diffusion models over gRPC.
//
//   ldmserve --listen=127.0.0.1:50051 --metrics-listen=127.0.0.1:9464 \
//            --models=models/registry.json
//
// Every flag may also come from the environment as LDMSERVE_<FLAG>
// (LDMSERVE_LISTEN, LDMSERVE_QUEUE_SIZE, ...); the command line wins.
//
// SIGTERM/SIGINT: health turns NOT_SERVING, new calls get UNAVAILABLE,
// running jobs get --drain-timeout seconds to finish, then the process exits
// 0.
#include <ATen/Parallel.h>
#include <glog/logging.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/common/flag_dashes.h"
#include "server/ldm/allocator.h"
#include "server/ldm/layers.h"
#include "server/ldm/precision.h"
#include "server/ldm/unet_runner.h"
#include "server/runtime/devices.h"
#include "server/service/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC address (host:port; port 0 picks a free one)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address; empty disables it");
ABSL_FLAG(std::string, models, LDMSERVE_DEFAULT_REGISTRY,
          "model registry file (JSON)");
ABSL_FLAG(int, threads, 0,
          "intra-op threads for LibTorch; 0 = one per core but one (left to "
          "gRPC and the streams), or every core when a model of 100 M "
          "parameters or more is served");
ABSL_FLAG(int, queue_size, 64, "jobs that may wait in the queue");
ABSL_FLAG(int, max_batch, 8, "images per denoising call");
ABSL_FLAG(std::string, devices, "cpu",
          "where workers run and models load: cpu, cuda:0, ... comma "
          "separated (cpu,cuda:0 works too); one worker per CUDA device");
ABSL_FLAG(std::string, dtype, "auto",
          "models' dtype where the registry names none: auto (f16 on CUDA, "
          "f32 on the CPU), f32, f16 or bf16; the autoencoder and text "
          "encoder stay f32 unless the registry says otherwise");
ABSL_FLAG(int, workers, 1,
          "CPU workers (for --devices=cpu), each running its own batches "
          "(LibTorch's --threads are shared by all); small models serve "
          "more with more workers and fewer threads");
ABSL_FLAG(int64_t, max_batch_latent_pixels, 0,
          "latent pixels (images x h x w) per denoising call; 0 = no limit");
ABSL_FLAG(std::string, batching, "step",
          "step: jobs join and leave at step boundaries; request: jobs that "
          "queue together run together; none: one job at a time");
ABSL_FLAG(double, priority_aging, 10,
          "seconds of waiting that raise a queued job's priority one level "
          "(so low priorities are delayed, never starved); 0 = never");
ABSL_FLAG(double, drain_timeout, 30,
          "seconds running jobs get to finish on SIGTERM");
ABSL_FLAG(bool, batch_invariant, true,
          "results bit-identical however jobs are batched: on the CPU each "
          "image is computed on its own (costs throughput; see "
          "docs/benchmarks.md); on CUDA denoising calls are padded to fixed "
          "row buckets and cuDNN kept to deterministic algorithms, so an "
          "image is bit-identical for a given bucket");
ABSL_FLAG(bool, decode_stream, true,
          "CUDA workers decode finished jobs on a stream of their own, "
          "beside the denoising steps rather than between them");
ABSL_FLAG(bool, cuda_graphs, true,
          "replay each UNet call on CUDA from a graph captured once per "
          "shape and row bucket (where LibTorch has CUDA graphs)");
ABSL_FLAG(int64_t, tensor_cache_mib, 2048,
          "freed tensor blocks of 1 MiB or more kept for reuse, at most this "
          "many MiB and never more than the most memory tensors were using "
          "(large models: their activations are not faulted in again on "
          "every call); 0 = none");
// Request limits (ServiceLimits' defaults); a request over one gets
// INVALID_ARGUMENT naming the field and the limit.
ABSL_FLAG(int64_t, max_pixels, ldmserve::ServiceLimits().max_pixels,
          "largest width x height of an image a request may ask for");
ABSL_FLAG(int, max_steps, ldmserve::ServiceLimits().max_steps,
          "most sampling steps a request may ask for");
ABSL_FLAG(int, max_images, ldmserve::ServiceLimits().max_images,
          "most images one request may ask for");
ABSL_FLAG(int, max_prompt_bytes, ldmserve::ServiceLimits().max_prompt_bytes,
          "longest prompt or negative prompt, in bytes");
ABSL_FLAG(int, max_image_bytes, ldmserve::ServiceLimits().max_image_bytes,
          "largest encoded input image (PNG) or mask, in bytes");
ABSL_FLAG(int, max_image_side, ldmserve::ServiceLimits().max_image_side,
          "largest width or height of an input image or mask, read from its "
          "header before decoding");
ABSL_FLAG(int, max_message_mib,
          ldmserve::ServiceLimits().max_message_bytes >> 20,
          "largest request message, in MiB (larger: RESOURCE_EXHAUSTED "
          "before parsing)");
// Security (docs/security.md).
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (plaintext without; "
          "a warning when not on loopback)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: clients must present a certificate it signed "
          "(mTLS)");
ABSL_FLAG(std::string, auth_tokens, "",
          "file of NAME TOKEN [MAX_JOBS] lines: every call needs "
          "'authorization: Bearer TOKEN' (health and reflection stay open); "
          "reread on SIGHUP");
ABSL_FLAG(int, token_max_jobs, 8,
          "with --auth-tokens: a client's Generate calls in flight where its "
          "line names no MAX_JOBS");
ABSL_FLAG(double, job_retention, 600,
          "seconds a finished job (and its result) stays findable by GetJob, "
          "WatchJob and ListJobs");
ABSL_FLAG(int64_t, job_retention_mib, 256,
          "memory for finished jobs' results; beyond it the oldest results "
          "are dropped (the jobs stay listed)");
ABSL_FLAG(std::string, lora_dir, "",
          "folder of LoRA adapters (NAME.safetensors, kohya or diffusers "
          "layout) requests may apply by NAME; empty = none");
ABSL_FLAG(int64_t, lora_cache_mib, 1024,
          "memory for LoRA adapters kept after use (the most recently used "
          "stay)");
ABSL_FLAG(bool, model_admin, false,
          "allow the LoadModel and UnloadModel RPCs (with --auth-tokens, only "
          "for --admin-clients)");
ABSL_FLAG(std::string, model_dir, "",
          "the folder LoadModel reads weights from; empty = the folder of "
          "--models");
ABSL_FLAG(std::vector<std::string>, admin_clients, {},
          "with --auth-tokens: the clients (token names) that may load and "
          "unload models; empty = every client with a token");
ABSL_FLAG(int64_t, model_memory_mb, 0,
          "MiB of model weights each device may hold, checked by LoadModel; "
          "0 = 80% of the device's memory (the container's limit on the "
          "CPU), -1 = no bound");
ABSL_FLAG(int, max_finished_jobs, 1000,
          "finished jobs kept; beyond it the oldest are forgotten");
ABSL_FLAG(std::string, port_file, "",
          "write the bound gRPC port here once listening (for tests)");

namespace {

// Sets each of ldmserve's flags named by an LDMSERVE_<FLAG> environment
// variable (containers are configured by environment). Run before the
// command line is parsed, so that a flag given there wins. A variable that
// names no flag is reported and ignored: Kubernetes itself sets
// LDMSERVE_SERVICE_HOST and the like for a Service named ldmserve.
absl::Status ApplyEnvironmentFlags(char** environment) {
  const std::string kPrefix = "LDMSERVE_";
  // absl reports a flag's file normalised, not as __FILE__: compare with
  // one flag known to be defined here.
  const std::string this_file = absl::FindCommandLineFlag("listen")->Filename();
  for (char** entry = environment; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const size_t equals = text.find('=');
    if (!absl::StartsWith(text, kPrefix) || equals == std::string::npos) {
      continue;
    }
    const std::string variable = text.substr(0, equals);
    const std::string name =
        absl::AsciiStrToLower(variable.substr(kPrefix.size()));
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    // Only the flags defined here: not absl's own (--flagfile, ...).
    if (flag == nullptr || flag->Filename() != this_file) {
      std::fprintf(stderr, "ldmserve: ignoring %s: no flag --%s\n",
                   variable.c_str(),
                   absl::StrReplaceAll(name, {{"_", "-"}}).c_str());
      continue;
    }
    std::string error;
    if (!flag->ParseFrom(text.substr(equals + 1), &error)) {
      return absl::InvalidArgumentError(absl::StrCat(variable, ": ", error));
    }
  }
  return absl::OkStatus();
}

// The request limits from their flags; each must be positive and fit.
absl::Status ReadLimitFlags(ldmserve::ServiceLimits* limits) {
  struct Limit {
    const char* flag;
    int64_t value;
    int64_t most;
  };
  const Limit checked[] = {
      {"--max-pixels", absl::GetFlag(FLAGS_max_pixels), int64_t{1} << 32},
      {"--max-steps", absl::GetFlag(FLAGS_max_steps), 10000},
      {"--max-images", absl::GetFlag(FLAGS_max_images), 64},
      {"--max-prompt-bytes", absl::GetFlag(FLAGS_max_prompt_bytes), 1 << 20},
      {"--max-image-bytes", absl::GetFlag(FLAGS_max_image_bytes), 1 << 30},
      {"--max-image-side", absl::GetFlag(FLAGS_max_image_side), 1 << 16},
      {"--max-message-mib", absl::GetFlag(FLAGS_max_message_mib), 1024},
  };
  for (const Limit& limit : checked) {
    if (limit.value < 1 || limit.value > limit.most) {
      return absl::InvalidArgumentError(absl::StrCat(
          limit.flag, " must be in [1, ", limit.most, "], not ", limit.value));
    }
  }
  limits->max_pixels = static_cast<uint64_t>(absl::GetFlag(FLAGS_max_pixels));
  limits->max_steps = static_cast<uint32_t>(absl::GetFlag(FLAGS_max_steps));
  limits->max_images = static_cast<uint32_t>(absl::GetFlag(FLAGS_max_images));
  limits->max_prompt_bytes =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_max_prompt_bytes));
  limits->max_image_bytes =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_max_image_bytes));
  limits->max_image_side =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_max_image_side));
  limits->max_message_bytes =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_max_message_mib)) << 20;
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves latent diffusion models over gRPC (ldm.v1.ImageSynthesisService)."
      "\nUsage: ldmserve [--listen=HOST:PORT] [--metrics-listen=HOST:PORT] "
      "[--models=registry.json]");
  if (absl::Status from_environment = ApplyEnvironmentFlags(environ);
      !from_environment.ok()) {
    std::fprintf(stderr, "ldmserve: %s\n",
                 std::string(from_environment.message()).c_str());
    return 2;
  }
  std::vector<std::string> storage;
  std::vector<char*> args = ldmserve::NormalizeFlagDashes(argc, argv, &storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  FLAGS_logtostderr = true;
  if (absl::GetFlag(FLAGS_tensor_cache_mib) < 0) {
    std::fprintf(stderr, "ldmserve: --tensor-cache-mib must be >= 0\n");
    return 2;
  }
  ldm::KeepFreedTensorMemory(
      static_cast<size_t>(absl::GetFlag(FLAGS_tensor_cache_mib)) << 20);
  google::InitGoogleLogging(argv[0]);

  // Signals are taken by sigwait below, never by a handler: block them
  // before any thread starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto entries =
      ldmserve::ModelRegistry::ReadRegistryFile(absl::GetFlag(FLAGS_models));
  if (!entries.ok()) {
    std::fprintf(stderr, "ldmserve: %s\n",
                 std::string(entries.status().message()).c_str());
    return 2;
  }
  // LibTorch's thread pools are process-global: set once, here, by the
  // served models' size unless asked (DefaultIntraOpThreads says why; on 2
  // cores a 25-step shapes job took 0.58 s with 2 threads, 0.18 s with 1).
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const int threads = absl::GetFlag(FLAGS_threads) > 0
                          ? absl::GetFlag(FLAGS_threads)
                          : ldmserve::DefaultIntraOpThreads(*entries, cores);
  at::set_num_threads(threads);
  at::set_num_interop_threads(1);
  LOG(INFO) << "intra-op threads: " << threads << " of " << cores << " cores";
  ldm::SetBatchInvariant(absl::GetFlag(FLAGS_batch_invariant));
  ldm::SetCudaGraphs(absl::GetFlag(FLAGS_cuda_graphs));
  ldmserve::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.scheduler.queue_size = absl::GetFlag(FLAGS_queue_size);
  options.scheduler.max_batch_images = absl::GetFlag(FLAGS_max_batch);
  options.scheduler.decode_on_side_stream = absl::GetFlag(FLAGS_decode_stream);
  if (absl::GetFlag(FLAGS_workers) < 1) {
    std::fprintf(stderr, "ldmserve: --workers must be >= 1\n");
    return 2;
  }
  auto devices = ldmserve::ParseDevices(absl::GetFlag(FLAGS_devices),
                                        ldmserve::CudaDeviceCount());
  if (!devices.ok()) {
    std::fprintf(stderr, "ldmserve: %s\n",
                 std::string(devices.status().message()).c_str());
    return 2;
  }
  options.devices = *devices;
  options.dtype = absl::GetFlag(FLAGS_dtype);
  if (options.dtype != "auto" && !ldm::ParseDtypeName(options.dtype).ok()) {
    std::fprintf(stderr, "ldmserve: --dtype must be auto, f32, f16 or bf16\n");
    return 2;
  }
  options.scheduler.worker_devices =
      ldmserve::WorkerDevices(*devices, absl::GetFlag(FLAGS_workers));
  options.scheduler.max_batch_latent_pixels =
      absl::GetFlag(FLAGS_max_batch_latent_pixels);
  const std::string batching = absl::GetFlag(FLAGS_batching);
  if (batching == "step") {
    options.scheduler.batching = ldmserve::Batching::kStep;
  } else if (batching == "request") {
    options.scheduler.batching = ldmserve::Batching::kRequest;
  } else if (batching == "none") {
    options.scheduler.batching = ldmserve::Batching::kNone;
  } else {
    std::fprintf(stderr,
                 "ldmserve: --batching must be step, request or none\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_priority_aging) < 0) {
    std::fprintf(stderr, "ldmserve: --priority-aging must be >= 0\n");
    return 2;
  }
  options.scheduler.priority_aging =
      absl::Seconds(absl::GetFlag(FLAGS_priority_aging));
  if (absl::Status limits = ReadLimitFlags(&options.limits); !limits.ok()) {
    std::fprintf(stderr, "ldmserve: %s\n",
                 std::string(limits.message()).c_str());
    return 2;
  }
  options.tls.cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key = absl::GetFlag(FLAGS_tls_key);
  options.tls.client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens);
  options.token_max_jobs = absl::GetFlag(FLAGS_token_max_jobs);
  if (absl::GetFlag(FLAGS_job_retention) < 0 ||
      absl::GetFlag(FLAGS_job_retention_mib) < 0 ||
      absl::GetFlag(FLAGS_max_finished_jobs) < 0) {
    std::fprintf(stderr,
                 "ldmserve: --job-retention, --job-retention-mib and "
                 "--max-finished-jobs must be >= 0\n");
    return 2;
  }
  options.job_retention.time =
      absl::Seconds(absl::GetFlag(FLAGS_job_retention));
  options.job_retention.result_bytes =
      static_cast<size_t>(absl::GetFlag(FLAGS_job_retention_mib)) << 20;
  options.job_retention.max_finished_jobs =
      absl::GetFlag(FLAGS_max_finished_jobs);
  options.lora_dir = absl::GetFlag(FLAGS_lora_dir);
  if (absl::GetFlag(FLAGS_lora_cache_mib) < 0) {
    std::fprintf(stderr, "ldmserve: --lora-cache-mib must be >= 0\n");
    return 2;
  }
  options.lora_cache_bytes = absl::GetFlag(FLAGS_lora_cache_mib) << 20;
  options.model_admin.enabled = absl::GetFlag(FLAGS_model_admin);
  std::filesystem::path registry_dir =
      std::filesystem::path(absl::GetFlag(FLAGS_models)).parent_path();
  if (registry_dir.empty()) registry_dir = ".";
  options.model_admin.model_dir = absl::GetFlag(FLAGS_model_dir).empty()
                                      ? registry_dir.string()
                                      : absl::GetFlag(FLAGS_model_dir);
  options.model_admin.configs_dir = entries->empty()
                                        ? (registry_dir / "configs").string()
                                        : entries->front().configs_dir;
  options.model_admin.admin_clients = absl::GetFlag(FLAGS_admin_clients);
  options.model_memory_bytes = absl::GetFlag(FLAGS_model_memory_mb) > 0
                                   ? absl::GetFlag(FLAGS_model_memory_mb) << 20
                                   : absl::GetFlag(FLAGS_model_memory_mb);
  auto server = ldmserve::LdmServer::Start(
      options, std::make_unique<ldmserve::ModelRegistry>(*std::move(entries)));
  if (!server.ok()) {
    std::fprintf(stderr, "ldmserve: %s\n",
                 std::string(server.status().message()).c_str());
    return 2;
  }
  LOG(INFO) << "listening on " << options.listen << " (port "
            << (*server)->port() << "), metrics on port "
            << (*server)->metrics_port();
  if (const std::string port_file = absl::GetFlag(FLAGS_port_file);
      !port_file.empty()) {
    const std::string temporary = port_file + ".tmp";
    std::ofstream(temporary) << (*server)->port() << "\n";
    std::rename(temporary.c_str(), port_file.c_str());
  }
  if (absl::Status loaded = (*server)->LoadModels(); !loaded.ok()) {
    std::fprintf(stderr, "ldmserve: %s\n",
                 std::string(loaded.message()).c_str());
    (*server)->Shutdown(absl::ZeroDuration());
    return 2;
  }
  LOG(INFO) << "serving";

  int signal_number = 0;
  // SIGHUP rereads the tokens; SIGTERM and SIGINT drain and stop.
  while (sigwait(&signals, &signal_number) == 0 && signal_number == SIGHUP) {
    absl::StatusOr<int> clients = (*server)->ReloadAuthTokens();
    if (clients.ok()) {
      LOG(INFO) << "SIGHUP: " << *clients << " clients in --auth-tokens";
    } else {
      LOG(WARNING) << "SIGHUP: tokens unchanged: " << clients.status();
    }
  }
  LOG(INFO) << "signal " << signal_number << ": draining (up to "
            << absl::GetFlag(FLAGS_drain_timeout) << " s)";
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_drain_timeout)));
  LOG(INFO) << "stopped";
  return 0;
}
