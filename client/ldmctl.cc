// ldmctl: talks to an ldmserve over gRPC.
//
//   ldmctl [--addr=HOST:PORT] txt2img --prompt "a red circle" --steps 25 \
//          --seed 1 --out out.png
//   ldmctl img2img --image in.png --strength 0.6 --prompt "..." --out out.png
//   ldmctl inpaint --image in.png --mask mask.png --prompt "..." --out out.png
//   ldmctl upscale --image small.png --out big.png
//   ldmctl txt2img --prompt "..." --format jpeg --quality 85   # out.jpg
//   ldmctl img2img --image photo.jpg --resize scale --prompt "..."
//   ldmctl models
//   ldmctl health          # exit 0 only when SERVING
//   ldmctl txt2img --detach --prompt "..."   # prints the job id, exits
//   ldmctl jobs            # running, queued and recently finished jobs
//   ldmctl job get|watch|cancel JOB_ID   # watch saves the result (--out)
//   ldmctl bench --concurrency 4 --duration 30 --steps 10,20,50 --json s.json
//   ldmctl --tls-ca ca.pem --addr host:50051 models   # TLS (see --help)
//   LDMSERVE_TOKEN=... ldmctl txt2img ...             # a bearer token
//   ldmctl bench --rate 2 --requests 100 --prompt "a red circle"
//       load: closed loop (--concurrency) or open loop (--rate, Poisson);
//       prints throughput, latency p50/p95/p99 and errors by status; exit 0
//       only if every request succeeded
//
// Errors print one line "ldmctl: CODE: message"; the exit code is 10 + the
// gRPC status code (so 11 = CANCELLED, 13 = INVALID_ARGUMENT, ...), 2 for
// usage errors.
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/load_generator.h"
#include "ldm/v1/image_synthesis.grpc.pb.h"
#include "server/common/flag_dashes.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051", "server address");
ABSL_FLAG(bool, tls, false,
          "connect over TLS, trusting the system's CAs (implied by --tls-ca)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle to verify the server with: connect over TLS");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate chain, for a server that asks for one "
          "(mTLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "the name the server's certificate must carry, when --addr is "
          "another (an IP address, a port-forward)");
ABSL_FLAG(std::string, token, "",
          "bearer token for a server with --auth-tokens (default: "
          "$LDMSERVE_TOKEN, which keeps it out of the process list)");
ABSL_FLAG(std::string, load_balancing, "",
          "gRPC load-balancing policy, e.g. round_robin to spread requests "
          "over every address a dns:/// name resolves to (a Kubernetes "
          "headless Service); empty = gRPC's default, pick_first");
ABSL_FLAG(std::string, model, "", "model name; empty = server default");
ABSL_FLAG(std::string, prompt, "", "what to draw");
ABSL_FLAG(std::string, negative, "", "negative prompt");
ABSL_FLAG(std::string, steps, "0",
          "denoising steps; 0 = server default (bench: a list, e.g. "
          "10,20,50, drawn per request)");
ABSL_FLAG(double, cfg, 0, "guidance scale; 0 = server default");
ABSL_FLAG(double, eta, -1,
          "DDIM eta in [0, 1]; -1 = the model's default (1 for "
          "super-resolution models, else 0)");
ABSL_FLAG(std::string, sampler, "ddim",
          "ddim | plms | ddpm | euler_a | dpmpp_2m | euler | heun | lms | "
          "dpmpp_2m_sde | dpmpp_2s_a | unipc");
ABSL_FLAG(std::string, schedule, "",
          "Euler-family samplers' noise levels: uniform (default) | karras | "
          "exponential");
ABSL_FLAG(uint64_t, seed, 0, "seed; 0 = server picks");
ABSL_FLAG(std::vector<std::string>, lora, {},
          "LoRA adapters of the server's --lora-dir: NAME:WEIGHT,... (WEIGHT "
          "defaults to 1; `ldmctl models` lists them)");
ABSL_FLAG(int, clip_skip, 0,
          "CLIP models: the encoder layer read (1 = last, 2 = penultimate); "
          "0 = the model's own");
ABSL_FLAG(int, priority, 0, "scheduling priority in [-10, 10]; higher first");
ABSL_FLAG(int, n, 1, "number of images");
ABSL_FLAG(int, width, 0, "width in pixels; 0 = model native");
ABSL_FLAG(int, height, 0, "height in pixels; 0 = model native");
ABSL_FLAG(double, timeout, 0, "deadline in seconds; 0 = none");
ABSL_FLAG(std::string, image, "",
          "img2img/inpaint/upscale: the input image (PNG, JPEG or WebP)");
ABSL_FLAG(std::string, mask, "", "inpaint: the mask image, white = repaint");
ABSL_FLAG(std::string, resize, "",
          "img2img/inpaint/upscale: fit an input whose sides are not "
          "multiples of the model's: scale, crop or pad; empty = refuse it");
ABSL_FLAG(std::string, format, "png",
          "result encoding: png, jpeg, webp or webp_lossless");
ABSL_FLAG(int, quality, 0, "jpeg/webp: quality 1..100; 0 = the server's 90");
ABSL_FLAG(double, strength, 0, "img2img: (0, 1]; 0 = server default 0.75");
ABSL_FLAG(uint32_t, scale, 0, "upscale: factor; 0 = the model's");
ABSL_FLAG(std::string, previews, "",
          "write the server's previews (latent projections) to this folder "
          "as step-N.png");
ABSL_FLAG(int, preview_every, 5, "with --previews: a preview every N steps");
ABSL_FLAG(int, concurrency, 1, "bench: clients in flight (closed loop)");
ABSL_FLAG(double, rate, 0,
          "bench: requests per second, Poisson arrivals (open loop); 0 = "
          "closed loop");
ABSL_FLAG(double, duration, 10, "bench: seconds during which requests start");
ABSL_FLAG(int, requests, 0, "bench: at most this many requests; 0 = no limit");
ABSL_FLAG(
    std::string, tasks, "txt2img",
    "bench: tasks drawn per request, from txt2img,img2img,inpaint,upscale "
    "(image tasks use --image/--mask)");
ABSL_FLAG(int, max_in_flight, 64, "bench: open-loop cap on open calls");
ABSL_FLAG(std::string, json, "", "bench: also write the summary as JSON here");
ABSL_FLAG(bool, detach, false,
          "txt2img...: print the job id once queued and exit; the job runs "
          "on (ldmctl job watch|get|cancel JOB_ID)");
// ldmctl model load|unload (the server must run with --model-admin).
ABSL_FLAG(std::string, family, "",
          "model load: the architecture (a config of the server's configs "
          "folder, sd-v1, ...); empty = detected from the weights");
ABSL_FLAG(std::string, config, "",
          "model load: the architecture as a config file, relative to the "
          "server's model folder (instead of --family)");
ABSL_FLAG(std::string, dtype, "",
          "model load: the UNet's dtype (f32, f16, bf16); empty = the "
          "server's");
ABSL_FLAG(std::vector<std::string>, devices, {},
          "model load: where copies load (cpu, cuda:0, ...); empty = every "
          "device of the server");
ABSL_FLAG(bool, ema, false, "model load: the checkpoint's EMA UNet weights");
ABSL_FLAG(bool, cancel_jobs, false,
          "model unload: cancel the model's jobs instead of letting them "
          "finish");
ABSL_FLAG(std::string, out, "",
          "output file; with several images use {i} and/or {seed}; empty = "
          "out.png, out.jpg or out.webp as the result is encoded");

namespace {

constexpr int kUsageError = 2;

int ExitCodeFor(const grpc::Status& status) {
  return status.ok() ? 0 : 10 + static_cast<int>(status.error_code());
}

int Fail(const grpc::Status& status) {
  std::fprintf(stderr, "ldmctl: %s: %s\n",
               ldmctl::StatusCodeName(status.error_code()),
               status.error_message().c_str());
  return ExitCodeFor(status);
}

void SetDeadline(grpc::ClientContext* context) {
  const double timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout > 0) {
    context->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
  }
}

std::string OutputPath(const std::string& pattern, int index, uint64_t seed,
                       int count) {
  std::string path = absl::StrReplaceAll(
      pattern, {{"{i}", absl::StrCat(index)}, {"{seed}", absl::StrCat(seed)}});
  if (count > 1 && path == pattern) {
    // Several images and no placeholder: number them before the extension.
    const size_t dot = path.rfind('.');
    const std::string suffix = absl::StrCat("-", index);
    path = dot == std::string::npos || dot < path.rfind('/') + 1
               ? path + suffix
               : path.substr(0, dot) + suffix + path.substr(dot);
  }
  return path;
}

bool ReadFile(const std::string& path, std::string* bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  bytes->assign(std::istreambuf_iterator<char>(in), {});
  return true;
}

// Fills the task of `request` for `command`; false (with a message) on bad
// flags.
bool BuildTask(const std::string& command, ldm::v1::GenerateRequest* request) {
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  const std::string negative = absl::GetFlag(FLAGS_negative);
  auto read_image = [](const std::string& flag, const std::string& path,
                       std::string* bytes) {
    if (path.empty() || !ReadFile(path, bytes)) {
      std::fprintf(stderr, "ldmctl: %s: cannot read '%s' (a PNG file)\n",
                   flag.c_str(), path.c_str());
      return false;
    }
    return true;
  };
  if (command == "txt2img") {
    ldm::v1::TextToImage* task = request->mutable_text_to_image();
    task->set_prompt(prompt);
    task->set_negative_prompt(negative);
    if (absl::GetFlag(FLAGS_width) > 0) {
      task->set_width(absl::GetFlag(FLAGS_width));
    }
    if (absl::GetFlag(FLAGS_height) > 0) {
      task->set_height(absl::GetFlag(FLAGS_height));
    }
    return true;
  }
  if (command == "img2img") {
    ldm::v1::ImageToImage* task = request->mutable_image_to_image();
    task->set_prompt(prompt);
    task->set_negative_prompt(negative);
    task->set_strength(static_cast<float>(absl::GetFlag(FLAGS_strength)));
    return read_image("--image", absl::GetFlag(FLAGS_image),
                      task->mutable_init_image());
  }
  if (command == "inpaint") {
    ldm::v1::Inpaint* task = request->mutable_inpaint();
    task->set_prompt(prompt);
    task->set_negative_prompt(negative);
    return read_image("--image", absl::GetFlag(FLAGS_image),
                      task->mutable_image()) &&
           read_image("--mask", absl::GetFlag(FLAGS_mask),
                      task->mutable_mask());
  }
  ldm::v1::SuperResolution* task = request->mutable_super_resolution();
  task->set_scale(absl::GetFlag(FLAGS_scale));
  return read_image("--image", absl::GetFlag(FLAGS_image),
                    task->mutable_low_res_image());
}

// The comma-separated --steps values (one for a single request, a mix for
// bench); empty on a malformed list.
std::vector<int> StepsList() {
  std::vector<int> steps;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_steps), ',')) {
    int value = 0;
    if (!absl::SimpleAtoi(part, &value) || value < 0) return {};
    steps.push_back(value);
  }
  return steps;
}

// Model, sampler, seed and image count from the flags; false on bad flags.
bool FillSettings(ldm::v1::GenerateRequest* request) {
  request->set_model(absl::GetFlag(FLAGS_model));
  ldm::v1::SamplerSettings* sampler = request->mutable_sampler();
  const std::string kind = absl::GetFlag(FLAGS_sampler);
  if (kind == "ddim") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_DDIM);
  } else if (kind == "plms") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_PLMS);
  } else if (kind == "ddpm") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_DDPM);
  } else if (kind == "euler_a") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_EULER_ANCESTRAL);
  } else if (kind == "dpmpp_2m") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M);
  } else if (kind == "euler") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_EULER);
  } else if (kind == "heun") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_HEUN);
  } else if (kind == "lms") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_LMS);
  } else if (kind == "dpmpp_2m_sde") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M_SDE);
  } else if (kind == "dpmpp_2s_a") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2S_ANCESTRAL);
  } else if (kind == "unipc") {
    sampler->set_kind(ldm::v1::SAMPLER_KIND_UNI_PC);
  } else {
    std::fprintf(stderr, "ldmctl: unknown --sampler %s\n", kind.c_str());
    return false;
  }
  const std::string sigmas = absl::GetFlag(FLAGS_schedule);
  if (sigmas == "karras") {
    sampler->set_sigma_schedule(ldm::v1::SIGMA_SCHEDULE_KARRAS);
  } else if (sigmas == "exponential") {
    sampler->set_sigma_schedule(ldm::v1::SIGMA_SCHEDULE_EXPONENTIAL);
  } else if (!sigmas.empty() && sigmas != "uniform") {
    std::fprintf(stderr, "ldmctl: unknown --schedule %s\n", sigmas.c_str());
    return false;
  }
  const std::vector<int> steps = StepsList();
  if (steps.empty()) {
    std::fprintf(stderr, "ldmctl: --steps: expected N or N,N,...\n");
    return false;
  }
  sampler->set_steps(steps[0]);
  sampler->set_guidance_scale(static_cast<float>(absl::GetFlag(FLAGS_cfg)));
  if (absl::GetFlag(FLAGS_eta) >= 0) {
    sampler->set_eta(static_cast<float>(absl::GetFlag(FLAGS_eta)));
  }
  request->set_seed(absl::GetFlag(FLAGS_seed));
  request->set_num_images(absl::GetFlag(FLAGS_n));
  request->set_priority(absl::GetFlag(FLAGS_priority));
  if (absl::GetFlag(FLAGS_clip_skip) < 0) {
    std::fprintf(stderr, "ldmctl: --clip-skip: 0 or more\n");
    return false;
  }
  if (absl::GetFlag(FLAGS_clip_skip) > 0) {
    request->set_clip_skip(
        static_cast<uint32_t>(absl::GetFlag(FLAGS_clip_skip)));
  }
  for (const std::string& lora : absl::GetFlag(FLAGS_lora)) {
    const std::vector<std::string> parts = absl::StrSplit(lora, ':');
    ldm::v1::LoraAdapter* adapter = request->add_loras();
    adapter->set_name(parts[0]);
    float weight = 1.0f;
    if (parts.size() > 2 ||
        (parts.size() == 2 && !absl::SimpleAtof(parts[1], &weight))) {
      std::fprintf(stderr, "ldmctl: --lora: NAME or NAME:WEIGHT, not %s\n",
                   lora.c_str());
      return false;
    }
    adapter->set_weight(weight);
  }
  const std::map<std::string, ldm::v1::ImageFormat> formats = {
      {"png", ldm::v1::IMAGE_FORMAT_PNG},
      {"jpeg", ldm::v1::IMAGE_FORMAT_JPEG},
      {"jpg", ldm::v1::IMAGE_FORMAT_JPEG},
      {"webp", ldm::v1::IMAGE_FORMAT_WEBP},
      {"webp_lossless", ldm::v1::IMAGE_FORMAT_WEBP_LOSSLESS}};
  const auto format = formats.find(absl::GetFlag(FLAGS_format));
  if (format == formats.end()) {
    std::fprintf(stderr,
                 "ldmctl: --format: png, jpeg, webp or webp_lossless\n");
    return false;
  }
  request->set_output_format(format->second);
  if (absl::GetFlag(FLAGS_quality) < 0 || absl::GetFlag(FLAGS_quality) > 100) {
    std::fprintf(stderr, "ldmctl: --quality: 0..100\n");
    return false;
  }
  request->set_output_quality(
      static_cast<uint32_t>(absl::GetFlag(FLAGS_quality)));
  const std::map<std::string, ldm::v1::ResizeMode> resize_modes = {
      {"", ldm::v1::RESIZE_MODE_UNSPECIFIED},
      {"scale", ldm::v1::RESIZE_MODE_SCALE},
      {"crop", ldm::v1::RESIZE_MODE_CROP},
      {"pad", ldm::v1::RESIZE_MODE_PAD}};
  const auto resize = resize_modes.find(absl::GetFlag(FLAGS_resize));
  if (resize == resize_modes.end()) {
    std::fprintf(stderr, "ldmctl: --resize: scale, crop or pad\n");
    return false;
  }
  request->set_resize_mode(resize->second);
  return true;
}

// The file name extension of an encoded image, from its first bytes.
const char* ExtensionOf(const std::string& data) {
  if (absl::StartsWith(data, "\xFF\xD8\xFF")) return "jpg";
  if (data.size() >= 12 && data.compare(8, 4, "WEBP") == 0) return "webp";
  return "png";
}

// While alive, Ctrl-C cancels `context`'s call (the server frees the job's
// slot at the next step, or only detaches when the job outlives its call)
// instead of killing the process mid-stream. SIGINT is blocked in every
// thread (main) and taken here; SIGUSR1 ends the watcher.
class InterruptCancels {
 public:
  explicit InterruptCancels(grpc::ClientContext* context)
      : watcher_([this, context] {
          sigset_t signals;
          sigemptyset(&signals);
          sigaddset(&signals, SIGINT);
          sigaddset(&signals, SIGUSR1);
          int signal = 0;
          if (sigwait(&signals, &signal) == 0 && signal == SIGINT) {
            interrupted_ = true;
            context->TryCancel();
          }
        }) {}
  ~InterruptCancels() {
    pthread_kill(watcher_.native_handle(), SIGUSR1);
    watcher_.join();
  }
  bool interrupted() const { return interrupted_; }

 private:
  std::atomic<bool> interrupted_{false};
  std::thread watcher_;
};

// Reads a job's events (Generate or WatchJob) to its end: progress on
// stderr, previews to --previews, the images to --out. Returns the exit
// code.
int FollowJob(grpc::ClientReaderInterface<ldm::v1::GenerateResponse>& reader,
              const InterruptCancels& interrupt) {
  const std::string previews = absl::GetFlag(FLAGS_previews);
  const bool tty = isatty(STDERR_FILENO) != 0;
  const absl::Time start = absl::Now();
  ldm::v1::GenerateResponse response;
  ldm::v1::Result result;
  bool have_result = false;
  bool progress_line_open = false;
  auto end_line = [&] {
    if (progress_line_open) std::fputc('\n', stderr);
    progress_line_open = false;
  };
  while (reader.Read(&response)) {
    switch (response.event_case()) {
      case ldm::v1::GenerateResponse::kQueued:
        std::fprintf(stderr, "%squeued at position %u", tty ? "\r" : "",
                     response.queued().position());
        if (tty) {
          progress_line_open = true;
        } else {
          std::fputc('\n', stderr);
        }
        break;
      case ldm::v1::GenerateResponse::kStarted:
        end_line();
        break;
      case ldm::v1::GenerateResponse::kProgress: {
        const ldm::v1::Progress& p = response.progress();
        const double elapsed = p.elapsed_ms() / 1000.0;
        // On a terminal a bar redrawn in place; in a log one line a step.
        std::string bar;
        if (tty && p.total_steps() > 0) {
          constexpr int kWidth = 24;
          const int filled = static_cast<int>(static_cast<int64_t>(kWidth) *
                                              p.step() / p.total_steps());
          bar = absl::StrCat("[", std::string(filled, '#'),
                             std::string(kWidth - filled, '-'), "] ");
        }
        std::fprintf(stderr,
                     "%s%sstep %u/%u  %.1f steps/s  %.1fs elapsed  eta %.1fs%s",
                     tty ? "\r" : "", bar.c_str(), p.step(), p.total_steps(),
                     elapsed > 0 ? p.step() / elapsed : 0.0, elapsed,
                     p.estimated_remaining_ms() / 1000.0, tty ? "" : "\n");
        progress_line_open = tty;
        if (!previews.empty() && !p.preview_png().empty()) {
          const std::string path =
              absl::StrCat(previews, "/step-", p.step(), ".png");
          std::ofstream preview(path, std::ios::binary);
          preview.write(p.preview_png().data(),
                        static_cast<std::streamsize>(p.preview_png().size()));
          if (!preview) {
            end_line();
            std::fprintf(stderr, "ldmctl: cannot write %s\n", path.c_str());
          }
        }
        break;
      }
      case ldm::v1::GenerateResponse::kResult:
        result = response.result();
        have_result = true;
        break;
      case ldm::v1::GenerateResponse::EVENT_NOT_SET:
        break;
    }
    std::fflush(stderr);
  }
  end_line();
  grpc::Status status = reader.Finish();
  if (interrupt.interrupted() &&
      status.error_code() == grpc::StatusCode::CANCELLED) {
    return Fail(grpc::Status(grpc::StatusCode::CANCELLED,
                             "interrupted (Ctrl-C); the call was cancelled"));
  }
  if (!status.ok()) return Fail(status);
  if (!have_result) {
    return Fail(grpc::Status(grpc::StatusCode::INTERNAL,
                             "stream ended without a result"));
  }
  for (int i = 0; i < result.images_size(); ++i) {
    const ldm::v1::Image& image = result.images(i);
    const std::string pattern =
        absl::GetFlag(FLAGS_out).empty()
            ? absl::StrCat("out.", ExtensionOf(image.data()))
            : absl::GetFlag(FLAGS_out);
    const std::string path =
        OutputPath(pattern, i, image.seed(), result.images_size());
    std::ofstream out(path, std::ios::binary);
    out.write(image.data().data(),
              static_cast<std::streamsize>(image.data().size()));
    if (!out) {
      std::fprintf(stderr, "ldmctl: cannot write %s\n", path.c_str());
      return 1;
    }
    std::fprintf(stderr, "wrote %s (%ux%u, seed %llu)\n", path.c_str(),
                 image.width(), image.height(),
                 static_cast<unsigned long long>(image.seed()));
  }
  for (const std::string& warning : result.warnings()) {
    std::fprintf(stderr, "warning: %s\n", warning.c_str());
  }
  std::fprintf(stderr,
               "done in %.3fs (queue %llu ms, encode %llu ms, "
               "denoise %llu ms, decode %llu ms)\n",
               absl::ToDoubleSeconds(absl::Now() - start),
               static_cast<unsigned long long>(result.timings().queue_ms()),
               static_cast<unsigned long long>(result.timings().encode_ms()),
               static_cast<unsigned long long>(result.timings().denoise_ms()),
               static_cast<unsigned long long>(result.timings().decode_ms()));
  return 0;
}

int Generate(ldm::v1::ImageSynthesisService::Stub& stub,
             const std::string& command) {
  ldm::v1::GenerateRequest request;
  if (StepsList().size() != 1) {
    std::fprintf(stderr, "ldmctl: --steps: one value (lists are for bench)\n");
    return kUsageError;
  }
  if (!FillSettings(&request) || !BuildTask(command, &request)) {
    return kUsageError;
  }
  if (!absl::GetFlag(FLAGS_previews).empty()) {
    request.set_preview_every(
        static_cast<uint32_t>(std::max(1, absl::GetFlag(FLAGS_preview_every))));
  }
  const bool detach = absl::GetFlag(FLAGS_detach);
  if (detach) request.set_cancel_on_disconnect(false);

  grpc::ClientContext context;
  SetDeadline(&context);
  InterruptCancels interrupt(&context);
  std::unique_ptr<grpc::ClientReader<ldm::v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  if (!detach) return FollowJob(*reader, interrupt);
  // Detached: the job id on stdout once admitted; the job runs on.
  ldm::v1::GenerateResponse first;
  if (reader->Read(&first)) {
    std::printf("%s\n", first.job_id().c_str());
    context.TryCancel();
    while (reader->Read(&first)) {
    }
    reader->Finish();
    return 0;
  }
  return Fail(reader->Finish());
}

// "QUEUED" for JOB_STATE_QUEUED.
std::string StateName(ldm::v1::JobState state) {
  const std::string name = ldm::v1::JobState_Name(state);
  return absl::StartsWith(name, "JOB_STATE_") ? name.substr(10) : name;
}

// What a job is doing, in a few words: its queue place, its step, or how
// it ended.
std::string JobProgress(const ldm::v1::Job& job) {
  switch (job.state()) {
    case ldm::v1::JOB_STATE_QUEUED:
      return absl::StrCat("position ", job.queue_position());
    case ldm::v1::JOB_STATE_RUNNING:
    case ldm::v1::JOB_STATE_SUCCEEDED:
      return absl::StrCat("step ", job.step(), "/", job.total_steps());
    default:
      return job.status_message();
  }
}

int Jobs(ldm::v1::ImageSynthesisService::Stub& stub) {
  grpc::ClientContext context;
  SetDeadline(&context);
  ldm::v1::ListJobsResponse response;
  grpc::Status status =
      stub.ListJobs(&context, ldm::v1::ListJobsRequest(), &response);
  if (!status.ok()) return Fail(status);
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  std::printf("%-24s %-10s %-18s %-8s %-6s %s\n", "JOB", "STATE", "MODEL",
              "AGE", "PRIO", "PROGRESS");
  for (const ldm::v1::Job& job : response.jobs()) {
    std::printf(
        "%-24s %-10s %-18s %-8s %-6d %s\n", job.job_id().c_str(),
        StateName(job.state()).c_str(), job.model().c_str(),
        absl::StrFormat("%.0fs", (now_ms - job.created_unix_ms()) / 1000.0)
            .c_str(),
        job.priority(), JobProgress(job).c_str());
  }
  if (response.total_matching() > static_cast<uint32_t>(response.jobs_size())) {
    std::printf("(%u more)\n",
                response.total_matching() - response.jobs_size());
  }
  return 0;
}

void PrintJob(const ldm::v1::Job& job) {
  const ldm::v1::ResolvedSettings& settings = job.settings();
  std::printf("job: %s\nstate: %s\nprogress: %s\nmodel: %s\ntask: %s\n",
              job.job_id().c_str(), StateName(job.state()).c_str(),
              JobProgress(job).c_str(), job.model().c_str(),
              ldm::v1::Task_Name(job.task()).c_str());
  if (!job.client().empty()) std::printf("client: %s\n", job.client().c_str());
  if (!job.client_request_id().empty()) {
    std::printf("client request id: %s\n", job.client_request_id().c_str());
  }
  std::printf("prompt: %s\nsteps: %u  seed: %llu  images: %u  size: %ux%u\n",
              settings.prompt().c_str(), settings.steps(),
              static_cast<unsigned long long>(settings.seed()),
              settings.num_images(), settings.width(), settings.height());
  if (job.finished_unix_ms() != 0) {
    std::printf("ended: %s after %.1fs%s\n",
                ldmctl::StatusCodeName(
                    static_cast<grpc::StatusCode>(job.status_code())),
                (job.finished_unix_ms() - job.created_unix_ms()) / 1000.0,
                job.result_dropped() ? " (result no longer kept)" : "");
  }
}

// ldmctl model load NAME WEIGHTS | model unload NAME.
int ModelCommand(ldm::v1::ImageSynthesisService::Stub& stub,
                 const std::vector<std::string>& arguments) {
  grpc::ClientContext context;
  SetDeadline(&context);
  if (arguments.size() == 3 && arguments[0] == "load") {
    ldm::v1::LoadModelRequest request;
    request.set_name(arguments[1]);
    request.set_weights(arguments[2]);
    request.set_family(absl::GetFlag(FLAGS_family));
    request.set_config(absl::GetFlag(FLAGS_config));
    request.set_dtype(absl::GetFlag(FLAGS_dtype));
    for (const std::string& device : absl::GetFlag(FLAGS_devices)) {
      request.add_devices(device);
    }
    request.set_ema(absl::GetFlag(FLAGS_ema));
    ldm::v1::LoadModelResponse response;
    const grpc::Status status = stub.LoadModel(&context, request, &response);
    if (!status.ok()) return Fail(status);
    uint64_t bytes = 0;
    for (const ldm::v1::ModelPlacement& copy : response.model().placements()) {
      bytes += copy.weight_bytes();
    }
    std::printf("%s\t%s\t%.1f MiB of weights\n",
                response.model().name().c_str(),
                ldm::v1::ModelState_Name(response.model().state()).c_str(),
                static_cast<double>(bytes) / (1 << 20));
    return 0;
  }
  if (arguments.size() == 2 && arguments[0] == "unload") {
    ldm::v1::UnloadModelRequest request;
    request.set_name(arguments[1]);
    request.set_cancel_jobs(absl::GetFlag(FLAGS_cancel_jobs));
    ldm::v1::UnloadModelResponse response;
    const grpc::Status status = stub.UnloadModel(&context, request, &response);
    if (!status.ok()) return Fail(status);
    std::printf("%s\tunloaded\t%u jobs %s\n", arguments[1].c_str(),
                response.jobs_drained(),
                request.cancel_jobs() ? "cancelled" : "drained");
    return 0;
  }
  std::fprintf(stderr,
               "usage: ldmctl model load NAME WEIGHTS [--family|--config "
               "--dtype --devices --ema] | model unload NAME "
               "[--cancel-jobs]\n");
  return kUsageError;
}

// ldmctl job get|watch|cancel ID.
int JobCommand(ldm::v1::ImageSynthesisService::Stub& stub,
               const std::string& action, const std::string& job_id) {
  if (action == "watch") {
    grpc::ClientContext context;
    SetDeadline(&context);
    InterruptCancels interrupt(&context);
    ldm::v1::WatchJobRequest request;
    request.set_job_id(job_id);
    std::unique_ptr<grpc::ClientReader<ldm::v1::GenerateResponse>> reader =
        stub.WatchJob(&context, request);
    return FollowJob(*reader, interrupt);
  }
  grpc::ClientContext context;
  SetDeadline(&context);
  ldm::v1::Job job;
  grpc::Status status;
  if (action == "get") {
    ldm::v1::GetJobRequest request;
    request.set_job_id(job_id);
    request.set_omit_result(true);  // `job watch` saves the images.
    ldm::v1::GetJobResponse response;
    status = stub.GetJob(&context, request, &response);
    job = response.job();
  } else if (action == "cancel") {
    ldm::v1::CancelJobRequest request;
    request.set_job_id(job_id);
    ldm::v1::CancelJobResponse response;
    status = stub.CancelJob(&context, request, &response);
    job = response.job();
  } else {
    std::fprintf(stderr, "ldmctl: job get|watch|cancel JOB_ID\n");
    return kUsageError;
  }
  if (!status.ok()) return Fail(status);
  PrintJob(job);
  return 0;
}

int Bench(ldm::v1::ImageSynthesisService::Stub& stub) {
  ldmctl::LoadOptions options;
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate = absl::GetFlag(FLAGS_rate);
  options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  options.duration = absl::Seconds(absl::GetFlag(FLAGS_duration));
  options.max_requests = absl::GetFlag(FLAGS_requests);
  options.steps = StepsList();
  options.tasks = absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',');
  options.seed = absl::GetFlag(FLAGS_seed) == 0 ? 1 : absl::GetFlag(FLAGS_seed);
  options.timeout_seconds = absl::GetFlag(FLAGS_timeout);
  if (options.steps.empty() || options.concurrency < 1 || options.rate < 0 ||
      absl::GetFlag(FLAGS_duration) <= 0 || options.max_in_flight < 1) {
    std::fprintf(stderr,
                 "ldmctl: bench needs --steps N[,N...], --concurrency >= 1, "
                 "--rate >= 0, --duration > 0, --max_in_flight >= 1\n");
    return kUsageError;
  }
  // One ready request per task: images are read once, not per request.
  std::map<std::string, ldm::v1::GenerateRequest> templates;
  for (const std::string& task : options.tasks) {
    ldm::v1::GenerateRequest request;
    if (task != "txt2img" && task != "img2img" && task != "inpaint" &&
        task != "upscale") {
      std::fprintf(stderr, "ldmctl: --tasks: unknown task '%s'\n",
                   task.c_str());
      return kUsageError;
    }
    if (!FillSettings(&request) || !BuildTask(task, &request)) {
      return kUsageError;
    }
    templates[task] = std::move(request);
  }
  std::fprintf(
      stderr, "bench: %s for %.1f s%s against %s\n",
      options.rate > 0
          ? absl::StrFormat("open loop, %.2f requests/s", options.rate).c_str()
          : absl::StrFormat("closed loop, %d clients", options.concurrency)
                .c_str(),
      absl::GetFlag(FLAGS_duration),
      options.max_requests > 0
          ? absl::StrCat(", at most ", options.max_requests, " requests")
                .c_str()
          : "",
      absl::GetFlag(FLAGS_addr).c_str());
  const ldmctl::LoadReport report =
      ldmctl::RunLoad(stub, options,
                      [&](const ldmctl::PlannedRequest& plan,
                          ldm::v1::GenerateRequest* request) {
                        *request = templates.at(plan.task);
                        request->mutable_sampler()->set_steps(plan.steps);
                        request->set_seed(plan.seed);
                        return true;
                      });
  std::fputs(report.Summary().c_str(), stdout);
  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << report.ToJson() << "\n";
    if (!out) {
      std::fprintf(stderr, "ldmctl: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return report.requests > 0 && report.ok == report.requests ? 0 : 1;
}

int Models(ldm::v1::ImageSynthesisService::Stub& stub) {
  grpc::ClientContext context;
  SetDeadline(&context);
  ldm::v1::ListModelsResponse response;
  grpc::Status status =
      stub.ListModels(&context, ldm::v1::ListModelsRequest(), &response);
  if (!status.ok()) return Fail(status);
  for (const ldm::v1::ModelInfo& model : response.models()) {
    std::string tasks;
    for (int task : model.tasks()) {
      absl::StrAppend(&tasks, tasks.empty() ? "" : ",",
                      ldm::v1::Task_Name(static_cast<ldm::v1::Task>(task)));
    }
    // "cuda:0 f16 (vae f32, text f32)" per loaded copy.
    std::string placements;
    for (const ldm::v1::ModelPlacement& copy : model.placements()) {
      absl::StrAppend(&placements, "\t", copy.device(), " ", copy.dtype(),
                      " (vae ", copy.vae_dtype(), ", text ", copy.text_dtype(),
                      absl::StrFormat(", %.1f MiB)",
                                      static_cast<double>(copy.weight_bytes()) /
                                          (1 << 20)));
    }
    std::printf(
        "%s\t%s\t%ux%u\tlatent %ux%ux%u\tsize multiple %u\t%s%s%s\n",
        model.name().c_str(), ldm::v1::ModelState_Name(model.state()).c_str(),
        model.native_width(), model.native_height(), model.latent_channels(),
        model.latent_height(), model.latent_width(), model.size_multiple(),
        tasks.c_str(), placements.c_str(),
        model.error().empty() ? "" : ("\t" + model.error()).c_str());
  }
  const ldm::v1::RequestLimits& limits = response.limits();
  std::printf(
      "limits: %llu pixels, side %u, %u steps, %u images, prompt %u bytes, "
      "image %u bytes, message %u bytes, guidance %g\n",
      static_cast<unsigned long long>(limits.max_pixels()),
      limits.max_image_side(), limits.max_steps(), limits.max_images(),
      limits.max_prompt_bytes(), limits.max_image_bytes(),
      limits.max_message_bytes(), limits.max_guidance_scale());
  if (response.loras_size() > 0) {
    std::printf("loras: %s\n", absl::StrJoin(response.loras(), ", ").c_str());
  }
  for (const ldm::v1::DeviceModelMemory& device : response.model_memory()) {
    const std::string budget =
        device.budget_bytes() == 0
            ? std::string("no bound")
            : absl::StrFormat(
                  "of %.1f MiB",
                  static_cast<double>(device.budget_bytes()) / (1 << 20));
    std::printf("model memory %s: %.1f MiB %s\n", device.device().c_str(),
                static_cast<double>(device.used_bytes()) / (1 << 20),
                budget.c_str());
  }
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel) {
  // grpc.health.v1.Health/Check by hand, so ldmctl needs no health stubs:
  // an empty HealthCheckRequest is zero bytes; the response's field 1 is the
  // serving status (1 = SERVING).
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  if (absl::GetFlag(FLAGS_timeout) > 0) {
    SetDeadline(&context);
  } else {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
  }
  grpc::ByteBuffer request_bytes;
  grpc::Slice empty;
  request_bytes = grpc::ByteBuffer(&empty, 1);
  grpc::ByteBuffer response_bytes;
  grpc::Status status;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", {}, &request_bytes,
                 &response_bytes, [&](grpc::Status s) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = std::move(s);
                   done = true;
                   done_cv.notify_one();
                 });
  {
    std::unique_lock<std::mutex> lock(mu);
    done_cv.wait(lock, [&] { return done; });
  }
  if (!status.ok()) return Fail(status);
  std::vector<grpc::Slice> slices;
  response_bytes.Dump(&slices);
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  const int serving_status =
      bytes.size() >= 2 && bytes[0] == 0x08 ? bytes[1] : 0;
  const char* names[] = {"UNKNOWN", "SERVING", "NOT_SERVING",
                         "SERVICE_UNKNOWN"};
  std::printf("%s\n", serving_status >= 0 && serving_status <= 3
                          ? names[serving_status]
                          : "UNKNOWN");
  return serving_status == 1 ? 0 : 1;
}

// The flags each subcommand reads, for `ldmctl SUBCOMMAND --help` (every
// name must be an ldmctl flag: checked when the help is printed).
const std::map<std::string, std::vector<std::string>>& SubcommandFlags() {
  static const auto* const flags = [] {
    const std::vector<std::string> settings = {
        "model", "steps",    "cfg",       "eta",      "sampler", "seed",
        "n",     "priority", "clip_skip", "schedule", "lora"};
    const std::vector<std::string> output = {
        "out", "format", "quality", "previews", "preview_every", "detach"};
    auto join = [](const std::vector<std::vector<std::string>>& parts) {
      std::vector<std::string> all;
      for (const auto& part : parts) {
        all.insert(all.end(), part.begin(), part.end());
      }
      return all;
    };
    return new std::map<std::string, std::vector<std::string>>{
        {"txt2img",
         join({{"prompt", "negative", "width", "height"}, settings, output})},
        {"img2img", join({{"prompt", "negative", "image", "strength", "resize"},
                          settings,
                          output})},
        {"inpaint", join({{"prompt", "negative", "image", "mask", "resize"},
                          settings,
                          output})},
        {"upscale", join({{"image", "scale", "resize"}, settings, output})},
        {"models", {}},
        {"health", {}},
        {"jobs", {}},
        {"job", {"out", "previews"}},
        {"model",
         {"family", "config", "dtype", "devices", "ema", "cancel_jobs"}},
        {"bench",
         join({{"concurrency", "rate", "duration", "requests", "max_in_flight",
                "tasks", "json", "prompt", "negative", "width", "height",
                "image", "mask", "strength", "scale"},
               settings})},
    };
  }();
  return *flags;
}

// How every subcommand connects.
const std::vector<std::string>& ConnectionFlags() {
  static const auto* const flags = new std::vector<std::string>{
      "addr",    "timeout",         "tls",   "tls_ca",        "tls_cert",
      "tls_key", "tls_server_name", "token", "load_balancing"};
  return *flags;
}

void PrintFlags(const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) {
      std::fprintf(stderr, "ldmctl: internal: no flag --%s\n", name.c_str());
      std::abort();
    }
    std::printf("  --%s (default \"%s\")\n      %s\n",
                absl::StrReplaceAll(name, {{"_", "-"}}).c_str(),
                flag->DefaultValue().c_str(), flag->Help().c_str());
  }
}

// `ldmctl SUBCOMMAND --help`: that subcommand's flags only. False when the
// arguments ask for no subcommand's help.
bool PrintSubcommandHelp(const std::vector<std::string>& arguments) {
  std::string subcommand;
  bool help = false;
  for (size_t i = 1; i < arguments.size(); ++i) {
    const std::string& argument = arguments[i];
    if (argument == "--help" || argument == "-h" || argument == "-help") {
      help = true;
    } else if (subcommand.empty() && !argument.empty() && argument[0] != '-' &&
               SubcommandFlags().count(argument) > 0) {
      subcommand = argument;
    }
  }
  if (!help || subcommand.empty()) return false;
  std::printf("usage: ldmctl [connection flags] %s [flags]\n",
              subcommand.c_str());
  const std::vector<std::string>& own = SubcommandFlags().at(subcommand);
  if (!own.empty()) {
    std::printf("\n%s flags:\n", subcommand.c_str());
    PrintFlags(own);
  }
  std::printf("\nconnection flags:\n");
  PrintFlags(ConnectionFlags());
  return true;
}

// Adds `authorization: Bearer TOKEN` to every call on the channel.
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::string header)
      : header_(std::move(header)) {}
  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", header_});
    }
    methods->Proceed();
  }

 private:
  const std::string header_;
};

class BearerTokenFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenFactory(const std::string& token)
      : header_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

bool ReadFileInto(const std::string& path, std::string* text) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return false;
  text->assign(std::istreambuf_iterator<char>(file),
               std::istreambuf_iterator<char>());
  return true;
}

// The channel the flags ask for: TLS or plaintext, with a token or not.
// Null (after a message) when a named file cannot be read.
std::shared_ptr<grpc::Channel> MakeChannel() {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(64 << 20);
  if (!absl::GetFlag(FLAGS_load_balancing).empty()) {
    arguments.SetLoadBalancingPolicyName(absl::GetFlag(FLAGS_load_balancing));
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  const bool tls = absl::GetFlag(FLAGS_tls) ||
                   !absl::GetFlag(FLAGS_tls_ca).empty() ||
                   !absl::GetFlag(FLAGS_tls_cert).empty();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    struct PemFlag {
      const char* flag;
      std::string path;
      std::string* into;
    };
    const PemFlag files[] = {
        {"--tls-ca", absl::GetFlag(FLAGS_tls_ca), &ssl.pem_root_certs},
        {"--tls-cert", absl::GetFlag(FLAGS_tls_cert), &ssl.pem_cert_chain},
        {"--tls-key", absl::GetFlag(FLAGS_tls_key), &ssl.pem_private_key},
    };
    for (const PemFlag& file : files) {
      if (!file.path.empty() && !ReadFileInto(file.path, file.into)) {
        std::fprintf(stderr, "ldmctl: %s: cannot read %s\n", file.flag,
                     file.path.c_str());
        return nullptr;
      }
    }
    if (ssl.pem_cert_chain.empty() != ssl.pem_private_key.empty()) {
      std::fprintf(stderr, "ldmctl: --tls-cert and --tls-key go together\n");
      return nullptr;
    }
    credentials = grpc::SslCredentials(ssl);
    if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
      arguments.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
    }
  }
  std::string token = absl::GetFlag(FLAGS_token);
  if (token.empty()) {
    const char* from_environment = std::getenv("LDMSERVE_TOKEN");
    if (from_environment != nullptr) token = from_environment;
  }
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (!token.empty()) {
    interceptors.push_back(std::make_unique<BearerTokenFactory>(token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      absl::GetFlag(FLAGS_addr), credentials, arguments,
      std::move(interceptors));
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Client for ldmserve.\nUsage: ldmctl [--addr=HOST:PORT] "
      "txt2img|img2img|inpaint|upscale|models|health|bench|jobs [flags]\n"
      "       ldmctl job get|watch|cancel JOB_ID\n"
      "       ldmctl model load NAME WEIGHTS | model unload NAME");
  std::vector<std::string> storage;
  std::vector<char*> args = ldmserve::NormalizeFlagDashes(argc, argv, &storage);
  if (PrintSubcommandHelp(storage)) return 0;
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  // Before any thread exists, so that every thread inherits the mask and
  // only Generate's watcher takes these signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const bool job_command =
      positional.size() >= 2 && std::string(positional[1]) == "job";
  const bool model_command =
      positional.size() >= 2 && std::string(positional[1]) == "model";
  if (!model_command && positional.size() != (job_command ? 4u : 2u)) {
    std::fprintf(stderr,
                 "usage: ldmctl [--addr=HOST:PORT] "
                 "txt2img|img2img|inpaint|upscale|models|health|bench|jobs "
                 "[flags]\n       ldmctl job get|watch|cancel JOB_ID\n"
                 "       ldmctl model load NAME WEIGHTS | model unload NAME "
                 "(ldmctl SUBCOMMAND --help for its flags)\n");
    return kUsageError;
  }
  const std::string command = positional[1];
  std::shared_ptr<grpc::Channel> channel = MakeChannel();
  if (channel == nullptr) return kUsageError;
  auto stub = ldm::v1::ImageSynthesisService::NewStub(channel);
  if (command == "txt2img" || command == "img2img" || command == "inpaint" ||
      command == "upscale") {
    return Generate(*stub, command);
  }
  if (command == "models") return Models(*stub);
  if (command == "bench") return Bench(*stub);
  if (command == "health") return Health(channel);
  if (command == "jobs") return Jobs(*stub);
  if (job_command) return JobCommand(*stub, positional[2], positional[3]);
  if (model_command) {
    return ModelCommand(*stub, std::vector<std::string>(positional.begin() + 2,
                                                        positional.end()));
  }
  std::fprintf(stderr, "ldmctl: unknown command '%s'\n", command.c_str());
  return kUsageError;
}
