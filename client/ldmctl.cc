// ldmctl: talks to an ldmserve over gRPC.
//
//   ldmctl [--addr=HOST:PORT] txt2img --prompt "a red circle" --steps 25 \
//          --seed 1 --out out.png
//   ldmctl img2img --image in.png --strength 0.6 --prompt "..." --out out.png
//   ldmctl inpaint --image in.png --mask mask.png --prompt "..." --out out.png
//   ldmctl upscale --image small.png --out big.png
//   ldmctl models
//   ldmctl health          # exit 0 only when SERVING
//
// Errors print one line "ldmctl: CODE: message"; the exit code is 10 + the
// gRPC status code (so 11 = CANCELLED, 13 = INVALID_ARGUMENT, ...), 2 for
// usage errors.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "ldm/v1/image_synthesis.grpc.pb.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051", "server address");
ABSL_FLAG(std::string, model, "", "model name; empty = server default");
ABSL_FLAG(std::string, prompt, "", "what to draw");
ABSL_FLAG(std::string, negative, "", "negative prompt");
ABSL_FLAG(int, steps, 0, "denoising steps; 0 = server default");
ABSL_FLAG(double, cfg, 0, "guidance scale; 0 = server default");
ABSL_FLAG(double, eta, 0, "DDIM eta");
ABSL_FLAG(std::string, sampler, "ddim",
          "ddim | plms | ddpm | euler_a | dpmpp_2m");
ABSL_FLAG(uint64_t, seed, 0, "seed; 0 = server picks");
ABSL_FLAG(int, n, 1, "number of images");
ABSL_FLAG(int, width, 0, "width in pixels; 0 = model native");
ABSL_FLAG(int, height, 0, "height in pixels; 0 = model native");
ABSL_FLAG(double, timeout, 0, "deadline in seconds; 0 = none");
ABSL_FLAG(std::string, image, "", "img2img/inpaint/upscale: the input PNG");
ABSL_FLAG(std::string, mask, "", "inpaint: the mask PNG, white = repaint");
ABSL_FLAG(double, strength, 0, "img2img: (0, 1]; 0 = server default 0.75");
ABSL_FLAG(uint32_t, scale, 0, "upscale: factor; 0 = the model's");
ABSL_FLAG(std::string, out, "out.png",
          "output file; with several images use {i} and/or {seed}");

namespace {

constexpr int kUsageError = 2;

int ExitCodeFor(const grpc::Status& status) {
  return status.ok() ? 0 : 10 + static_cast<int>(status.error_code());
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

int Fail(const grpc::Status& status) {
  std::fprintf(stderr, "ldmctl: %s: %s\n", CodeName(status.error_code()),
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

int Generate(ldm::v1::ImageSynthesisService::Stub& stub,
             const std::string& command) {
  ldm::v1::GenerateRequest request;
  request.set_model(absl::GetFlag(FLAGS_model));
  if (!BuildTask(command, &request)) return kUsageError;
  ldm::v1::SamplerSettings* sampler = request.mutable_sampler();
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
  } else {
    std::fprintf(stderr, "ldmctl: unknown --sampler %s\n", kind.c_str());
    return kUsageError;
  }
  sampler->set_steps(absl::GetFlag(FLAGS_steps));
  sampler->set_guidance_scale(static_cast<float>(absl::GetFlag(FLAGS_cfg)));
  sampler->set_eta(static_cast<float>(absl::GetFlag(FLAGS_eta)));
  request.set_seed(absl::GetFlag(FLAGS_seed));
  request.set_num_images(absl::GetFlag(FLAGS_n));

  grpc::ClientContext context;
  SetDeadline(&context);
  const bool tty = isatty(STDERR_FILENO) != 0;
  const absl::Time start = absl::Now();
  std::unique_ptr<grpc::ClientReader<ldm::v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  ldm::v1::GenerateResponse response;
  ldm::v1::Result result;
  bool have_result = false;
  bool progress_line_open = false;
  auto end_line = [&] {
    if (progress_line_open) std::fputc('\n', stderr);
    progress_line_open = false;
  };
  while (reader->Read(&response)) {
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
        std::fprintf(stderr, "%sstep %u/%u  %.1fs elapsed  eta %.1fs%s",
                     tty ? "\r" : "", p.step(), p.total_steps(), elapsed,
                     p.estimated_remaining_ms() / 1000.0, tty ? "" : "\n");
        progress_line_open = tty;
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
  grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail(status);
  if (!have_result) {
    return Fail(grpc::Status(grpc::StatusCode::INTERNAL,
                             "stream ended without a result"));
  }
  const std::string pattern = absl::GetFlag(FLAGS_out);
  for (int i = 0; i < result.images_size(); ++i) {
    const ldm::v1::Image& image = result.images(i);
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
               "done in %.2fs (queue %llu ms, encode %llu ms, "
               "denoise %llu ms, decode %llu ms)\n",
               absl::ToDoubleSeconds(absl::Now() - start),
               static_cast<unsigned long long>(result.timings().queue_ms()),
               static_cast<unsigned long long>(result.timings().encode_ms()),
               static_cast<unsigned long long>(result.timings().denoise_ms()),
               static_cast<unsigned long long>(result.timings().decode_ms()));
  return 0;
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
    std::printf("%s\t%s\t%ux%u\tlatent %ux%ux%u\t%s%s\n", model.name().c_str(),
                ldm::v1::ModelState_Name(model.state()).c_str(),
                model.native_width(), model.native_height(),
                model.latent_channels(), model.latent_height(),
                model.latent_width(), tasks.c_str(),
                model.error().empty() ? "" : ("\t" + model.error()).c_str());
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

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Client for ldmserve.\nUsage: ldmctl [--addr=HOST:PORT] "
      "txt2img|img2img|inpaint|upscale|models|health [flags]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr,
                 "usage: ldmctl [--addr=HOST:PORT] "
                 "txt2img|img2img|inpaint|upscale|models|health "
                 "[flags] (--help for flags)\n");
    return kUsageError;
  }
  const std::string command = positional[1];
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      absl::GetFlag(FLAGS_addr), grpc::InsecureChannelCredentials(), arguments);
  auto stub = ldm::v1::ImageSynthesisService::NewStub(channel);
  if (command == "txt2img" || command == "img2img" || command == "inpaint" ||
      command == "upscale") {
    return Generate(*stub, command);
  }
  if (command == "models") return Models(*stub);
  if (command == "health") return Health(channel);
  std::fprintf(stderr, "ldmctl: unknown command '%s'\n", command.c_str());
  return kUsageError;
}
