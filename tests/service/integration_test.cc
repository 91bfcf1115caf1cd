// The whole serving path in one process: a real gRPC server on an ephemeral
// localhost port, the scheduler and a worker running a real (tiny, random)
// model, and a real gRPC client.
#include <ATen/Parallel.h>
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ldm/v1/image_synthesis.grpc.pb.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/layers.h"
#include "server/service/image_codec.h"
#include "server/service/png_codec.h"
#include "server/service/server.h"
#include "tests/ldm/test_util.h"

namespace ldmserve {
namespace {

using ldm::v1::GenerateRequest;
using ldm::v1::GenerateResponse;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kModelName[] = "test-tiny";

struct CallResult {
  std::vector<GenerateResponse> events;
  grpc::Status status;
};

class IntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Keep a core for gRPC's threads while the worker computes.
    at::set_num_threads(1);
    // As ldmserve runs by default: results independent of batching.
    ldm::SetBatchInvariant(true);
  }

  void SetUp() override {
    auto model = ldm::LatentDiffusion::CreateRandom(
        ldm::testing::TinyTextToImageConfig(), 5);
    ASSERT_TRUE(model.ok());
    // An identical copy to compute the expected images alone.
    reference_ = std::move(ldm::LatentDiffusion::CreateRandom(
                               ldm::testing::TinyTextToImageConfig(), 5)
                               .value());
    auto registry = std::make_unique<ModelRegistry>(std::vector<ModelEntry>{});
    ModelEntry entry;
    entry.name = kModelName;
    entry.tasks = {ldm::Task::kTextToImage, ldm::Task::kImageToImage,
                   ldm::Task::kInpaint};
    entry.default_for = {ldm::Task::kTextToImage};
    entry.devices = {"cpu"};
    registry->AddLoaded(entry, std::move(model).value());
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.scheduler.queue_size = 8;
    options.limits.max_image_side = 1000;  // Not the default: see ListModels.
    auto server = LdmServer::Start(options, std::move(registry));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    server_->MarkServing();
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = ldm::v1::ImageSynthesisService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(10));
  }

  static GenerateRequest TextRequest(const std::string& prompt, int steps,
                                     uint64_t seed) {
    GenerateRequest request;
    request.mutable_text_to_image()->set_prompt(prompt);
    request.mutable_sampler()->set_steps(steps);
    request.set_seed(seed);
    request.set_client_request_id("test-call");
    return request;
  }

  CallResult Call(const GenerateRequest& request) {
    grpc::ClientContext context;
    CallResult result;
    auto reader = stub_->Generate(&context, request);
    GenerateResponse response;
    while (reader->Read(&response)) result.events.push_back(response);
    result.status = reader->Finish();
    return result;
  }

  // GET /metrics over a plain socket.
  std::string ScrapeMetrics() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(server_->metrics_port()));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string response;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) ==
        0) {
      const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
      (void)!::write(fd, request.data(), request.size());
      char buffer[4096];
      ssize_t n;
      while ((n = ::read(fd, buffer, sizeof buffer)) > 0) {
        response.append(buffer, static_cast<size_t>(n));
      }
    }
    ::close(fd);
    return response;
  }

  std::unique_ptr<ldm::LatentDiffusion> reference_;
  std::unique_ptr<LdmServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ldm::v1::ImageSynthesisService::Stub> stub_;
};

TEST_F(IntegrationTest, GenerateStreamsQueuedProgressAndResult) {
  GenerateRequest request = TextRequest("a red circle", 5, 42);
  request.set_num_images(2);
  CallResult call = Call(request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  ASSERT_GE(call.events.size(), 3u);
  EXPECT_TRUE(call.events.front().has_queued());
  EXPECT_EQ(call.events.front().queued().position(), 0u);
  EXPECT_TRUE(call.events[1].has_started());
  std::vector<uint32_t> steps;
  for (size_t i = 2; i + 1 < call.events.size(); ++i) {
    ASSERT_TRUE(call.events[i].has_progress());
    EXPECT_EQ(call.events[i].progress().total_steps(), 5u);
    steps.push_back(call.events[i].progress().step());
  }
  EXPECT_EQ(steps, (std::vector<uint32_t>{1, 2, 3, 4, 5}));
  for (const GenerateResponse& event : call.events) {
    EXPECT_EQ(event.client_request_id(), "test-call");
    EXPECT_FALSE(event.job_id().empty());
  }
  ASSERT_TRUE(call.events.back().has_result());
  const ldm::v1::Result& result = call.events.back().result();
  ASSERT_EQ(result.images_size(), 2);
  EXPECT_EQ(result.model(), kModelName);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(result.images(i).seed(), 42u + i);
    auto png = DecodePng(result.images(i).data(), "result");
    ASSERT_TRUE(png.ok()) << png.status();
    EXPECT_EQ(png->width, 16u);
    EXPECT_EQ(png->height, 16u);
    EXPECT_EQ(result.images(i).width(), 16u);
  }
  // The served pixels are the engine's, run alone with the same seeds.
  ldm::GenerationRequest alone;
  alone.prompt = "a red circle";
  alone.sampler.steps = 5;
  alone.seed = 42;
  alone.num_images = 2;
  at::Tensor expected = ldm::testing::RunToTensor(*reference_, alone).value();
  for (int i = 0; i < 2; ++i) {
    auto png = DecodePng(result.images(i).data(), "result").value();
    at::Tensor served =
        at::from_blob(png.pixels.data(), {16, 16, 3}, at::kByte).clone();
    EXPECT_TRUE(at::equal(served, expected[i])) << "image " << i;
  }
  EXPECT_GT(result.timings().total_ms() + 1, result.timings().denoise_ms());
}

TEST_F(IntegrationTest, ResultsEchoTheirResolvedSettingsAndWriteThemInThePng) {
  GenerateRequest request = TextRequest("a red circle", 0, 42);  // 0 steps.
  request.mutable_text_to_image()->set_negative_prompt("blue");
  request.set_num_images(2);
  request.mutable_sampler()->set_steps(3);
  CallResult call = Call(request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const ldm::v1::Result& result = call.events.back().result();
  const ldm::v1::ResolvedSettings& settings = result.settings();
  EXPECT_EQ(settings.model(), kModelName);
  EXPECT_EQ(settings.task(), ldm::v1::TASK_TEXT_TO_IMAGE);
  EXPECT_EQ(settings.prompt(), "a red circle");
  EXPECT_EQ(settings.negative_prompt(), "blue");
  // Defaults resolved: DDIM, the server's guidance, the native size.
  EXPECT_EQ(settings.sampler(), ldm::v1::SAMPLER_KIND_DDIM);
  EXPECT_EQ(settings.steps(), 3u);
  EXPECT_EQ(settings.guidance_scale(), ServiceLimits().default_guidance_scale);
  EXPECT_EQ(settings.width(), 16u);
  EXPECT_EQ(settings.height(), 16u);
  EXPECT_EQ(settings.seed(), 42u);
  EXPECT_EQ(settings.num_images(), 2u);
  ASSERT_EQ(result.images_size(), 2);
  for (int i = 0; i < 2; ++i) {
    const std::string& parameters = result.images(i).parameters();
    EXPECT_EQ(parameters,
              absl::StrCat("a red circle\nNegative prompt: blue\nSteps: 3, "
                           "Sampler: DDIM, CFG scale: 7.5, Seed: ",
                           42 + i, ", Size: 16x16, Model: ", kModelName));
    // The same text is in the file, where other front ends read it.
    auto text = ReadPngText(result.images(i).data());
    ASSERT_TRUE(text.ok()) << text.status();
    ASSERT_EQ(text->size(), 1u);
    EXPECT_EQ((*text)[0].first, "parameters");
    EXPECT_EQ((*text)[0].second, parameters);
  }
}

TEST_F(IntegrationTest, ConcurrentClientsGetExactlyTheirAloneResults) {
  struct Case {
    int steps;
    uint64_t seed;
    ldm::v1::SamplerKind kind;
    ldm::SamplerKind engine_kind;
  };
  const std::vector<Case> cases = {
      {3, 101, ldm::v1::SAMPLER_KIND_DDIM, ldm::SamplerKind::kDdim},
      {5, 102, ldm::v1::SAMPLER_KIND_EULER_ANCESTRAL,
       ldm::SamplerKind::kEulerAncestral},
      {8, 103, ldm::v1::SAMPLER_KIND_DDIM, ldm::SamplerKind::kDdim},
      {4, 104, ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M,
       ldm::SamplerKind::kDpmSolverPP2M},
      {6, 105, ldm::v1::SAMPLER_KIND_PLMS, ldm::SamplerKind::kPlms},
      {2, 106, ldm::v1::SAMPLER_KIND_DDPM, ldm::SamplerKind::kDdpm},
      // Within the queue's 8 places, whatever runs first.
      {3, 108, ldm::v1::SAMPLER_KIND_HEUN, ldm::SamplerKind::kHeun},
      {4, 110, ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M_SDE,
       ldm::SamplerKind::kDpmSolverPP2MSde},
  };
  std::vector<CallResult> results(cases.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < cases.size(); ++i) {
    clients.emplace_back([&, i] {
      GenerateRequest request =
          TextRequest("a red circle", cases[i].steps, cases[i].seed);
      request.mutable_sampler()->set_kind(cases[i].kind);
      results[i] = Call(request);
    });
  }
  for (std::thread& client : clients) client.join();
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    ldm::GenerationRequest alone;
    alone.prompt = "a red circle";
    alone.sampler.steps = cases[i].steps;
    alone.sampler.kind = cases[i].engine_kind;
    alone.seed = cases[i].seed;
    const at::Tensor expected =
        ldm::testing::RunToTensor(*reference_, alone).value();
    auto png =
        DecodePng(results[i].events.back().result().images(0).data(), "result")
            .value();
    const at::Tensor served =
        at::from_blob(png.pixels.data(), {16, 16, 3}, at::kByte).clone();
    EXPECT_TRUE(at::equal(served, expected[0]));
  }
  // And they did share calls: more images than calls.
  const std::string metrics = ScrapeMetrics();
  auto value = [&](const std::string& name) {
    const size_t at = metrics.find("\n" + name + " ");
    return at == std::string::npos
               ? -1.0
               : std::stod(metrics.substr(at + name.size() + 2));
  };
  EXPECT_GT(value("ldmserve_batch_images_sum"),
            value("ldmserve_batch_images_count"));
}

TEST_F(IntegrationTest, EverySamplerServes) {
  for (ldm::v1::SamplerKind kind :
       {ldm::v1::SAMPLER_KIND_DDIM, ldm::v1::SAMPLER_KIND_PLMS,
        ldm::v1::SAMPLER_KIND_DDPM, ldm::v1::SAMPLER_KIND_EULER_ANCESTRAL,
        ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M, ldm::v1::SAMPLER_KIND_EULER,
        ldm::v1::SAMPLER_KIND_HEUN, ldm::v1::SAMPLER_KIND_LMS,
        ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M_SDE,
        ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2S_ANCESTRAL,
        ldm::v1::SAMPLER_KIND_UNI_PC}) {
    SCOPED_TRACE(ldm::v1::SamplerKind_Name(kind));
    GenerateRequest request = TextRequest("a red circle", 4, 9);
    request.mutable_sampler()->set_kind(kind);
    CallResult call = Call(request);
    ASSERT_TRUE(call.status.ok()) << call.status.error_message();
    ASSERT_GE(call.events.size(), 2u);
    const GenerateResponse& last_progress = call.events[call.events.size() - 2];
    ASSERT_TRUE(last_progress.has_progress());
    EXPECT_EQ(last_progress.progress().step(), 4u);
    EXPECT_EQ(last_progress.progress().total_steps(), 4u);
    EXPECT_EQ(call.events.back().result().images_size(), 1);
  }
  // A Karras schedule runs, and is named as other front ends name it.
  GenerateRequest karras = TextRequest("a red circle", 4, 9);
  karras.mutable_sampler()->set_kind(ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M);
  karras.mutable_sampler()->set_sigma_schedule(ldm::v1::SIGMA_SCHEDULE_KARRAS);
  CallResult karras_call = Call(karras);
  ASSERT_TRUE(karras_call.status.ok()) << karras_call.status.error_message();
  EXPECT_THAT(karras_call.events.back().result().images(0).parameters(),
              HasSubstr("Sampler: DPM++ 2M Karras,"));
  karras.mutable_sampler()->set_kind(ldm::v1::SAMPLER_KIND_DDIM);
  CallResult ddim_karras = Call(karras);
  EXPECT_EQ(ddim_karras.status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(ddim_karras.status.error_message(),
              HasSubstr("sampler.sigma_schedule"));

  GenerateRequest plms_with_eta = TextRequest("a red circle", 4, 9);
  plms_with_eta.mutable_sampler()->set_kind(ldm::v1::SAMPLER_KIND_PLMS);
  plms_with_eta.mutable_sampler()->set_eta(0.5f);
  CallResult call = Call(plms_with_eta);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("sampler.eta"));

  GenerateRequest urgent = TextRequest("a red circle", 2, 9);
  urgent.set_priority(10);
  EXPECT_TRUE(Call(urgent).status.ok());
  urgent.set_priority(11);
  call = Call(urgent);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(),
              HasSubstr("priority: must be in [-10, 10] (got 11)"));
}

std::string TestPng(uint32_t width, uint32_t height, uint8_t seed) {
  std::vector<uint8_t> pixels(width * height * 3);
  for (size_t i = 0; i < pixels.size(); ++i) {
    pixels[i] = static_cast<uint8_t>((i * 31 + seed * 17) & 0xff);
  }
  return EncodePng(pixels.data(), width, height).value();
}

TEST_F(IntegrationTest, ImageToImageServesTheInputsSize) {
  GenerateRequest request;
  ldm::v1::ImageToImage* task = request.mutable_image_to_image();
  task->set_init_image(TestPng(24, 16, 1));
  task->set_strength(0.5f);
  task->set_prompt("a red circle");
  request.mutable_sampler()->set_steps(10);
  request.set_seed(4);
  CallResult call = Call(request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const GenerateResponse& last_progress = call.events[call.events.size() - 2];
  EXPECT_EQ(last_progress.progress().total_steps(), 5u);
  const ldm::v1::Image& image = call.events.back().result().images(0);
  EXPECT_EQ(image.width(), 24u);
  EXPECT_EQ(image.height(), 16u);

  task->set_strength(1.5f);
  call = Call(request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("strength"));
  task->set_strength(0.5f);
  task->set_init_image("not a png");
  call = Call(request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("init_image"));
  task->set_init_image(TestPng(18, 16, 1));
  call = Call(request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("multiples of 4"));
}

TEST_F(IntegrationTest, InpaintKeepsEveryUnmaskedPixel) {
  const std::string image_png = TestPng(16, 16, 2);
  std::vector<uint8_t> mask(16 * 16 * 3, 0);
  for (int y = 4; y < 12; ++y) {
    for (int x = 0; x < 8; ++x) {
      for (int c = 0; c < 3; ++c) mask[(y * 16 + x) * 3 + c] = 255;
    }
  }
  GenerateRequest request;
  ldm::v1::Inpaint* task = request.mutable_inpaint();
  task->set_image(image_png);
  task->set_mask(EncodePng(mask.data(), 16, 16).value());
  task->set_prompt("a blue square");
  request.mutable_sampler()->set_steps(4);
  request.set_seed(8);
  CallResult call = Call(request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const RgbImage input = DecodePng(image_png, "input").value();
  const RgbImage output =
      DecodePng(call.events.back().result().images(0).data(), "output").value();
  int changed_in_mask = 0;
  for (size_t i = 0; i < mask.size(); ++i) {
    if (mask[i] == 0) {
      ASSERT_EQ(output.pixels[i], input.pixels[i]) << "byte " << i;
    } else {
      changed_in_mask += output.pixels[i] != input.pixels[i];
    }
  }
  EXPECT_GT(changed_in_mask, 0);

  task->set_mask(TestPng(8, 8, 0));
  call = Call(request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("inpaint.mask"));
}

TEST_F(IntegrationTest, ResultsComeInTheAskedFormatWithTheirParameters) {
  GenerateRequest request = TextRequest("a red circle", 3, 5);
  const RgbImage png =
      DecodeImage(Call(request).events.back().result().images(0).data(), "png")
          .value();
  const RgbImage other_seed =
      DecodeImage(Call(TextRequest("a red circle", 3, 6))
                      .events.back()
                      .result()
                      .images(0)
                      .data(),
                  "png")
          .value();
  auto total_error = [&png](const RgbImage& image) {
    int64_t total = 0;
    for (size_t i = 0; i < png.pixels.size(); ++i) {
      total += std::abs(int{image.pixels[i]} - int{png.pixels[i]});
    }
    return total;
  };
  struct Case {
    ldm::v1::ImageFormat format;
    uint32_t quality;  // Asked for.
    ImageFileFormat sniffed;
    uint32_t resolved_quality;
    // The error allowed, as a fraction of another seed's distance
    // (measured: 0.10 at JPEG 90, 0.48 at JPEG 70, 0.43 at WebP 90).
    double max_error;
  };
  for (const Case& c :
       {Case{ldm::v1::IMAGE_FORMAT_JPEG, 0, ImageFileFormat::kJpeg, 90, 0.25},
        Case{ldm::v1::IMAGE_FORMAT_JPEG, 70, ImageFileFormat::kJpeg, 70, 0.7},
        Case{ldm::v1::IMAGE_FORMAT_WEBP, 0, ImageFileFormat::kWebp, 90, 0.7},
        Case{ldm::v1::IMAGE_FORMAT_WEBP_LOSSLESS, 0, ImageFileFormat::kWebp, 0,
             0.0}}) {
    SCOPED_TRACE(ldm::v1::ImageFormat_Name(c.format));
    request.set_output_format(c.format);
    request.set_output_quality(c.quality);
    CallResult call = Call(request);
    ASSERT_TRUE(call.status.ok()) << call.status.error_message();
    const ldm::v1::Result& result = call.events.back().result();
    EXPECT_EQ(result.settings().output_format(), c.format);
    EXPECT_EQ(result.settings().output_quality(), c.resolved_quality);
    const ldm::v1::Image& image = result.images(0);
    EXPECT_EQ(SniffImageFormat(image.data()), c.sniffed);
    // The parameters other front ends read: in the file as in the Result.
    EXPECT_EQ(ReadImageParameters(image.data()).value(), image.parameters());
    EXPECT_THAT(image.parameters(), HasSubstr("Seed: 5, Size: 16x16"));
    const RgbImage decoded = DecodeImage(image.data(), "result").value();
    ASSERT_EQ(decoded.pixels.size(), png.pixels.size());
    // The same pixels, encoded: exactly when lossless, else closer to them
    // than another seed's image is (a 16x16 image of a random-weight model
    // is close to noise, what lossy codecs keep worst).
    EXPECT_LE(static_cast<double>(total_error(decoded)),
              c.max_error * static_cast<double>(total_error(other_seed)));
  }
}

TEST_F(IntegrationTest, OutputFormatAndQualityAreChecked) {
  GenerateRequest request = TextRequest("a red circle", 2, 5);
  request.set_output_quality(80);  // PNG takes none.
  CallResult call = Call(request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(),
              HasSubstr("output_quality: only JPEG and lossy WebP"));
  request.set_output_format(ldm::v1::IMAGE_FORMAT_JPEG);
  request.set_output_quality(101);
  call = Call(request);
  EXPECT_THAT(call.status.error_message(),
              HasSubstr("output_quality: in [1, 100]"));
  request.set_output_quality(0);
  request.set_output_format(static_cast<ldm::v1::ImageFormat>(99));
  call = Call(request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("output_format"));
}

TEST_F(IntegrationTest, InputsOfAnySizeAreFittedAsAskedAndSaidSo) {
  // A JPEG of 18x14 for a model whose sides are multiples of 4.
  RgbImage input{18, 14, std::vector<uint8_t>(18 * 14 * 3)};
  for (size_t i = 0; i < input.pixels.size(); ++i) {
    input.pixels[i] = static_cast<uint8_t>(i * 7);
  }
  GenerateRequest request;
  ldm::v1::ImageToImage* task = request.mutable_image_to_image();
  task->set_init_image(
      EncodeImage(input, {ImageFileFormat::kJpeg, 90}).value());
  task->set_prompt("a red circle");
  task->set_strength(0.5f);
  request.mutable_sampler()->set_steps(2);
  CallResult call = Call(request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(),
              HasSubstr("image_to_image.init_image: sides must be multiples "
                        "of 4 (got 18x14); or set resize_mode"));
  struct Case {
    ldm::v1::ResizeMode mode;
    uint32_t width;
    uint32_t height;
  };
  for (const Case& c : {Case{ldm::v1::RESIZE_MODE_SCALE, 20, 16},
                        Case{ldm::v1::RESIZE_MODE_CROP, 16, 12},
                        Case{ldm::v1::RESIZE_MODE_PAD, 20, 16}}) {
    SCOPED_TRACE(ldm::v1::ResizeMode_Name(c.mode));
    request.set_resize_mode(c.mode);
    call = Call(request);
    ASSERT_TRUE(call.status.ok()) << call.status.error_message();
    const ldm::v1::Result& result = call.events.back().result();
    EXPECT_EQ(result.images(0).width(), c.width);
    EXPECT_EQ(result.images(0).height(), c.height);
    const ldm::v1::InputResize& resize = result.settings().input_resize();
    EXPECT_EQ(resize.mode(), c.mode);
    EXPECT_EQ(resize.original_width(), 18u);
    EXPECT_EQ(resize.original_height(), 14u);
    EXPECT_EQ(resize.width(), c.width);
    EXPECT_EQ(resize.height(), c.height);
  }
  // An input that fits is left alone, and the result says nothing was done.
  task->set_init_image(TestPng(16, 12, 3));
  call = Call(request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_FALSE(call.events.back().result().settings().has_input_resize());
}

TEST_F(IntegrationTest, APaddedInpaintKeepsEveryUnmaskedInputPixel) {
  // 14x14 padded to 16x16: image and mask padded alike, so that the kept
  // pixels are the input's own.
  const std::string image_png = TestPng(14, 14, 5);
  std::vector<uint8_t> mask(14 * 14 * 3, 0);
  for (int y = 0; y < 14; ++y) {
    for (int x = 7; x < 14; ++x) {
      for (int c = 0; c < 3; ++c) mask[(y * 14 + x) * 3 + c] = 255;
    }
  }
  GenerateRequest request;
  ldm::v1::Inpaint* task = request.mutable_inpaint();
  task->set_image(image_png);
  task->set_mask(EncodePng(mask.data(), 14, 14).value());
  task->set_prompt("a blue square");
  request.mutable_sampler()->set_steps(3);
  request.set_resize_mode(ldm::v1::RESIZE_MODE_PAD);
  CallResult call = Call(request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const RgbImage input = DecodePng(image_png, "input").value();
  const RgbImage output =
      DecodePng(call.events.back().result().images(0).data(), "output").value();
  ASSERT_EQ(output.width, 16);
  ASSERT_EQ(output.height, 16);
  for (int y = 0; y < 14; ++y) {
    for (int x = 0; x < 7; ++x) {
      for (int c = 0; c < 3; ++c) {
        ASSERT_EQ(output.pixels[(y * 16 + x) * 3 + c],
                  input.pixels[(y * 14 + x) * 3 + c])
            << x << "," << y;
      }
    }
  }
  // A mask of another size is refused before anything is fitted.
  task->set_mask(EncodePng(mask.data(), 7, 28).value());
  call = Call(request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(),
              HasSubstr("inpaint.mask: must be the image's size 14x14"));
}

TEST_F(IntegrationTest, SeedZeroIsPickedAndReported) {
  CallResult call = Call(TextRequest("a blue square", 2, 0));
  ASSERT_TRUE(call.status.ok());
  EXPECT_NE(call.events.back().result().images(0).seed(), 0u);
}

TEST_F(IntegrationTest, CancelMidwayStopsTheJobAndTheServerKeepsServing) {
  {
    grpc::ClientContext context;
    auto reader =
        stub_->Generate(&context, TextRequest("a red circle", 200, 1));
    GenerateResponse response;
    bool cancelled = false;
    while (reader->Read(&response)) {
      if (response.has_progress() && response.progress().step() >= 2 &&
          !cancelled) {
        context.TryCancel();
        cancelled = true;
      }
      ASSERT_FALSE(response.has_result());
    }
    EXPECT_TRUE(cancelled);
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The next job completes; the cancelled one left the batch (its slot freed
  // and its final status recorded server-side) before this one could finish.
  CallResult call = Call(TextRequest("a red circle", 3, 2));
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const std::string metrics = ScrapeMetrics();
  EXPECT_THAT(metrics, HasSubstr("HTTP/1.1 200 OK"));
  const std::string labels =
      std::string("model=\"") + kModelName + "\",task=\"text_to_image\"";
  EXPECT_THAT(metrics, HasSubstr("ldmserve_requests_total{code=\"CANCELLED\"," +
                                 labels + "} 1"));
  EXPECT_THAT(metrics, HasSubstr("ldmserve_requests_total{code=\"OK\"," +
                                 labels + "} 1"));
  EXPECT_THAT(metrics, HasSubstr(std::string("ldmserve_model_ready{model=\"") +
                                 kModelName + "\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("ldmserve_batch_images_count"));
  EXPECT_THAT(metrics, HasSubstr("ldmserve_stage_seconds_count{device=\"cpu\","
                                 "stage=\"decode\",worker=\"0\"} 1"));
  EXPECT_THAT(metrics,
              HasSubstr(std::string("ldmserve_denoise_call_seconds_count{"
                                    "device=\"cpu\",model=\"") +
                        kModelName + "\",worker=\"0\"}"));
  EXPECT_THAT(metrics, HasSubstr("ldmserve_worker_busy_seconds_total{"
                                 "device=\"cpu\",worker=\"0\"}"));
  EXPECT_THAT(metrics, HasSubstr(std::string("ldmserve_request_duration_"
                                             "seconds_count{model=\"") +
                                 kModelName + "\"} 2"));
  EXPECT_THAT(metrics, HasSubstr("ldmserve_build_info{devices=\"cpu\","));
  EXPECT_THAT(metrics, HasSubstr("ldmserve_process_resident_memory_bytes "));
  // A CPU-only server has no GPU memory to report.
  EXPECT_THAT(metrics, Not(HasSubstr("ldmserve_device_memory_bytes{")));
}

TEST_F(IntegrationTest, DeadlineExpiresDuringGeneration) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(200));
  auto reader = stub_->Generate(&context, TextRequest("a red circle", 200, 1));
  GenerateResponse response;
  while (reader->Read(&response)) ASSERT_FALSE(response.has_result());
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  CallResult call = Call(TextRequest("a red circle", 2, 2));
  EXPECT_TRUE(call.status.ok());
}

TEST_F(IntegrationTest, AJobOutlivesItsStreamAndIsFoundAgain) {
  GenerateRequest request = TextRequest("a red circle", 5, 11);
  request.set_cancel_on_disconnect(false);
  std::string job_id;
  {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    GenerateResponse first;
    ASSERT_TRUE(reader->Read(&first));
    ASSERT_TRUE(first.has_queued());
    job_id = first.job_id();
    const auto& headers = context.GetServerInitialMetadata();
    auto header = headers.find("job-id");
    ASSERT_NE(header, headers.end());
    EXPECT_EQ(std::string(header->second.data(), header->second.size()),
              job_id);
    context.TryCancel();
    while (reader->Read(&first)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The job ran on: watching it gives its events to the end.
  grpc::ClientContext watch_context;
  ldm::v1::WatchJobRequest watch;
  watch.set_job_id(job_id);
  auto watcher = stub_->WatchJob(&watch_context, watch);
  std::vector<GenerateResponse> events;
  GenerateResponse event;
  while (watcher->Read(&event)) events.push_back(event);
  const grpc::Status watched = watcher->Finish();
  ASSERT_TRUE(watched.ok()) << watched.error_message();
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_result());
  EXPECT_EQ(events.back().job_id(), job_id);
  EXPECT_EQ(events.back().client_request_id(), "test-call");
  // The same image as a job nobody left.
  CallResult alone = Call(TextRequest("a red circle", 5, 11));
  ASSERT_TRUE(alone.status.ok());
  const ldm::v1::Result& alone_result = alone.events.back().result();
  ASSERT_EQ(events.back().result().images_size(), 1);
  EXPECT_EQ(events.back().result().images(0).data(),
            alone_result.images(0).data());

  ldm::v1::GetJobRequest get;
  get.set_job_id(job_id);
  ldm::v1::GetJobResponse got;
  grpc::ClientContext get_context;
  ASSERT_TRUE(stub_->GetJob(&get_context, get, &got).ok());
  const ldm::v1::Job& job = got.job();
  EXPECT_EQ(job.state(), ldm::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.step(), 5u);
  EXPECT_EQ(job.total_steps(), 5u);
  EXPECT_EQ(job.settings().seed(), 11u);
  EXPECT_EQ(job.model(), kModelName);
  EXPECT_EQ(job.task(), ldm::v1::TASK_TEXT_TO_IMAGE);
  EXPECT_GE(job.finished_unix_ms(), job.started_unix_ms());
  EXPECT_GE(job.started_unix_ms(), job.created_unix_ms());
  ASSERT_EQ(job.result().images_size(), 1);
  EXPECT_EQ(job.result().images(0).data(), alone_result.images(0).data());

  // Finished jobs are listed most recent first, without their images.
  ldm::v1::ListJobsResponse listed;
  grpc::ClientContext list_context;
  ASSERT_TRUE(stub_->ListJobs(&list_context, {}, &listed).ok());
  ASSERT_EQ(listed.jobs_size(), 2);
  EXPECT_EQ(listed.total_matching(), 2u);
  EXPECT_EQ(listed.jobs(0).job_id(), alone.events.back().job_id());
  EXPECT_EQ(listed.jobs(1).job_id(), job_id);
  EXPECT_FALSE(listed.jobs(1).has_result());
  ldm::v1::ListJobsRequest only_queued;
  only_queued.add_states(ldm::v1::JOB_STATE_QUEUED);
  grpc::ClientContext queued_context;
  ASSERT_TRUE(stub_->ListJobs(&queued_context, only_queued, &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 0);
}

TEST_F(IntegrationTest, CancelJobStopsARunningJobFromAnotherCall) {
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest("a red circle", 200, 1));
  GenerateResponse event;
  std::string job_id;
  while (reader->Read(&event)) {
    job_id = event.job_id();
    if (event.has_progress()) break;
  }
  ASSERT_FALSE(job_id.empty());
  // A watcher that leaves does not stop the job.
  {
    grpc::ClientContext watch_context;
    ldm::v1::WatchJobRequest watch;
    watch.set_job_id(job_id);
    auto watcher = stub_->WatchJob(&watch_context, watch);
    GenerateResponse watched;
    ASSERT_TRUE(watcher->Read(&watched));
    EXPECT_TRUE(watched.has_started());
    watch_context.TryCancel();
    while (watcher->Read(&watched)) {
    }
    EXPECT_EQ(watcher->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  const uint32_t step_before = event.progress().step();
  while (reader->Read(&event) && event.progress().step() < step_before + 2) {
  }
  ASSERT_GE(event.progress().step(), step_before + 2);

  ldm::v1::CancelJobRequest cancel;
  cancel.set_job_id(job_id);
  ldm::v1::CancelJobResponse cancelled;
  grpc::ClientContext cancel_context;
  ASSERT_TRUE(stub_->CancelJob(&cancel_context, cancel, &cancelled).ok());
  const ldm::v1::Job& after = cancelled.job();
  // Answered once the job has left its batch.
  EXPECT_EQ(after.state(), ldm::v1::JOB_STATE_CANCELLED);
  EXPECT_LT(after.step(), 200u);
  EXPECT_THAT(after.status_message(), HasSubstr("CancelJob"));
  while (reader->Read(&event)) ASSERT_FALSE(event.has_result());
  const grpc::Status ended = reader->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_THAT(ended.error_message(), HasSubstr("CancelJob"));
  // Cancelling a job that ended leaves it as it is.
  grpc::ClientContext again_context;
  ASSERT_TRUE(stub_->CancelJob(&again_context, cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.job().state(), ldm::v1::JOB_STATE_CANCELLED);
}

TEST_F(IntegrationTest, JobCallsCheckTheirArguments) {
  auto get_status = [this](const std::string& job_id) {
    ldm::v1::GetJobRequest request;
    request.set_job_id(job_id);
    ldm::v1::GetJobResponse job;
    grpc::ClientContext context;
    return stub_->GetJob(&context, request, &job);
  };
  grpc::Status status = get_status("");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("job_id"));
  status = get_status(std::string(200, 'j'));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("at most 128"));
  EXPECT_EQ(get_status("job-00000000-1").error_code(),
            grpc::StatusCode::NOT_FOUND);

  ldm::v1::CancelJobRequest cancel;
  cancel.set_job_id("job-00000000-1");
  ldm::v1::CancelJobResponse job;
  grpc::ClientContext cancel_context;
  EXPECT_EQ(stub_->CancelJob(&cancel_context, cancel, &job).error_code(),
            grpc::StatusCode::NOT_FOUND);

  ldm::v1::WatchJobRequest watch;
  watch.set_job_id("job-00000000-1");
  grpc::ClientContext watch_context;
  auto watcher = stub_->WatchJob(&watch_context, watch);
  GenerateResponse ignored;
  EXPECT_FALSE(watcher->Read(&ignored));
  EXPECT_EQ(watcher->Finish().error_code(), grpc::StatusCode::NOT_FOUND);

  ldm::v1::ListJobsRequest too_many;
  too_many.set_max_jobs(1001);
  ldm::v1::ListJobsResponse listed;
  grpc::ClientContext list_context;
  status = stub_->ListJobs(&list_context, too_many, &listed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("max_jobs: at most 1000"));
  ldm::v1::ListJobsRequest bad_state;
  bad_state.add_states(static_cast<ldm::v1::JobState>(99));
  grpc::ClientContext state_context;
  status = stub_->ListJobs(&state_context, bad_state, &listed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("states"));
}

TEST_F(IntegrationTest, BadRequestsGetClearStatuses) {
  GenerateRequest zero_width = TextRequest("a red circle", 5, 1);
  zero_width.mutable_text_to_image()->set_width(0);
  CallResult call = Call(zero_width);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("text_to_image.width"));
  EXPECT_TRUE(call.events.empty());

  GenerateRequest odd_width = TextRequest("a red circle", 5, 1);
  odd_width.mutable_text_to_image()->set_width(17);
  call = Call(odd_width);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("multiple of 4"));

  GenerateRequest unknown_model = TextRequest("a red circle", 5, 1);
  unknown_model.set_model("no-such-model");
  call = Call(unknown_model);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(call.status.error_message(), HasSubstr("no-such-model"));

  GenerateRequest too_many_steps = TextRequest("a red circle", 201, 1);
  call = Call(too_many_steps);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("sampler.steps"));
  EXPECT_THAT(call.status.error_message(), HasSubstr("200"));

  // The tiny model reads prompts with a word-level encoder, not CLIP.
  GenerateRequest clip_skip = TextRequest("a red circle", 5, 1);
  clip_skip.set_clip_skip(2);
  call = Call(clip_skip);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("clip_skip: 0"));
  clip_skip.set_clip_skip(0);
  call = Call(clip_skip);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("clip_skip: 1 or more"));

  GenerateRequest no_task;
  call = Call(no_task);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  GenerateRequest upscale;
  upscale.mutable_super_resolution()->set_scale(4);
  call = Call(upscale);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::NOT_FOUND);

  GenerateRequest upscale_named = upscale;
  upscale_named.set_model(kModelName);
  call = Call(upscale_named);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(call.status.error_message(), HasSubstr("text_to_image"));

  GenerateRequest huge_prompt = TextRequest(std::string(1001, 'a'), 5, 1);
  call = Call(huge_prompt);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(call.status.error_message(), HasSubstr("1000 bytes"));
}

TEST_F(IntegrationTest, ListModelsReportsTheLoadedModel) {
  grpc::ClientContext context;
  ldm::v1::ListModelsResponse response;
  ASSERT_TRUE(
      stub_->ListModels(&context, ldm::v1::ListModelsRequest(), &response)
          .ok());
  ASSERT_EQ(response.models_size(), 1);
  const ldm::v1::ModelInfo& info = response.models(0);
  EXPECT_EQ(info.name(), kModelName);
  EXPECT_EQ(info.state(), ldm::v1::MODEL_STATE_READY);
  EXPECT_EQ(info.native_width(), 16u);
  // f = 2, one halving in the UNet.
  EXPECT_EQ(info.size_multiple(), 4u);
  EXPECT_EQ(info.latent_channels(), 4u);
  EXPECT_EQ(info.latent_height(), 8u);
  ASSERT_EQ(info.tasks_size(), 3);
  EXPECT_EQ(info.tasks(0), ldm::v1::TASK_TEXT_TO_IMAGE);
  EXPECT_EQ(info.tasks(2), ldm::v1::TASK_INPAINT);
  // Where each copy runs and in which precision.
  ASSERT_EQ(info.placements_size(), 1);
  EXPECT_EQ(info.placements(0).device(), "cpu");
  EXPECT_EQ(info.placements(0).dtype(), "f32");
  EXPECT_EQ(info.placements(0).vae_dtype(), "f32");
  EXPECT_EQ(info.placements(0).text_dtype(), "f32");
  // The server's request limits, as configured.
  const ServiceLimits defaults;
  EXPECT_EQ(response.limits().max_image_side(), 1000u);
  EXPECT_EQ(response.limits().max_pixels(), defaults.max_pixels);
  EXPECT_EQ(response.limits().max_steps(), defaults.max_steps);
  EXPECT_EQ(response.limits().max_images(), defaults.max_images);
  EXPECT_EQ(response.limits().max_prompt_bytes(), defaults.max_prompt_bytes);
  EXPECT_EQ(response.limits().max_image_bytes(), defaults.max_image_bytes);
  EXPECT_EQ(response.limits().max_message_bytes(), defaults.max_message_bytes);
  EXPECT_EQ(response.limits().max_guidance_scale(),
            defaults.max_guidance_scale);
}

TEST_F(IntegrationTest, PreviewsAndProgressIntervalsAsAsked) {
  GenerateRequest request = TextRequest("a red circle", 5, 3);
  request.set_preview_every(2);
  request.set_progress_every(2);
  CallResult call = Call(request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  std::vector<uint32_t> steps;
  std::vector<uint32_t> previews;
  for (const GenerateResponse& event : call.events) {
    if (!event.has_progress()) continue;
    steps.push_back(event.progress().step());
    if (event.progress().preview_png().empty()) continue;
    previews.push_back(event.progress().step());
    auto png = DecodePng(event.progress().preview_png(), "preview");
    ASSERT_TRUE(png.ok()) << png.status();
    EXPECT_EQ(png->width, 8u);  // The latent's size: no decoder involved.
  }
  // Every second step, and the last step always.
  EXPECT_EQ(steps, (std::vector<uint32_t>{2, 4, 5}));
  EXPECT_EQ(previews, (std::vector<uint32_t>{2, 4}));
}

// grpc.reflection.v1alpha ServerReflectionInfo with list_services, spoken
// with raw bytes (the reflection protos are not installed on Debian).
std::string ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::CompletionQueue queue;
  auto call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  void* tag = nullptr;
  bool ok = false;
  auto await = [&](intptr_t expected) {
    return queue.Next(&tag, &ok) && ok &&
           reinterpret_cast<intptr_t>(tag) == expected;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!await(1)) return "";
  // Field 7 (list_services), an empty string.
  grpc::Slice request(std::string("\x3a\x00", 2));
  call->Write(grpc::ByteBuffer(&request, 1), reinterpret_cast<void*>(2));
  if (!await(2)) return "";
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  if (!await(3)) return "";
  call->WritesDone(reinterpret_cast<void*>(4));
  await(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  await(5);
  std::vector<grpc::Slice> slices;
  response.Dump(&slices);
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

TEST_F(IntegrationTest, ReflectionListsTheService) {
  const std::string services = ListServicesByReflection(channel_);
  EXPECT_THAT(services, HasSubstr("ldm.v1.ImageSynthesisService"));
  EXPECT_THAT(services, HasSubstr("grpc.health.v1.Health"));
}

// A serving server on the tiny model with no workers: admitted jobs stay
// queued (and hold their queue place and their client's slot).
std::unique_ptr<LdmServer> StartWithoutWorkers(ServerOptions options) {
  auto registry = std::make_unique<ModelRegistry>(std::vector<ModelEntry>{});
  ModelEntry entry;
  entry.name = kModelName;
  entry.tasks = {ldm::Task::kTextToImage};
  entry.default_for = {ldm::Task::kTextToImage};
  registry->AddLoaded(entry, ldm::LatentDiffusion::CreateRandom(
                                 ldm::testing::TinyTextToImageConfig(), 5)
                                 .value());
  options.listen = "127.0.0.1:0";
  options.scheduler.workers = 0;
  auto server = LdmServer::Start(options, std::move(registry)).value();
  server->MarkServing();
  return server;
}

TEST(QueueFullTest, RefusedAtOnceWithARetryHint) {
  // No workers: admitted jobs stay queued, so the queue fills for sure.
  ServerOptions options;
  options.scheduler.queue_size = 1;
  auto server = StartWithoutWorkers(options);
  auto stub = ldm::v1::ImageSynthesisService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server->port()),
                          grpc::InsecureChannelCredentials()));
  GenerateRequest request;
  request.mutable_text_to_image()->set_prompt("a red circle");
  grpc::ClientContext waiting_context;
  auto waiting = stub->Generate(&waiting_context, request);
  GenerateResponse queued;
  ASSERT_TRUE(waiting->Read(&queued));
  EXPECT_EQ(queued.queued().position(), 0u);

  grpc::ClientContext refused_context;
  auto refused = stub->Generate(&refused_context, request);
  GenerateResponse ignored;
  EXPECT_FALSE(refused->Read(&ignored));
  const grpc::Status status = refused->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("queue is full"));
  const auto& trailers = refused_context.GetServerTrailingMetadata();
  auto hint = trailers.find("retry-after-ms");
  ASSERT_NE(hint, trailers.end());
  EXPECT_EQ(std::string(hint->second.data(), hint->second.size()), "1000");

  // Shutting down ends the queued job with one clear status.
  server->Shutdown(absl::ZeroDuration());
  while (waiting->Read(&ignored)) {
  }
  const grpc::Status ended = waiting->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(ended.error_message(), HasSubstr("shut down"));
}

// Starts a Generate call with `token` (none when empty) and reads its
// first event; returns the final status when there is none (refused).
struct StartedCall {
  std::unique_ptr<grpc::ClientContext> context =
      std::make_unique<grpc::ClientContext>();
  std::unique_ptr<grpc::ClientReader<GenerateResponse>> reader;
  bool queued = false;
  std::string job_id;
  grpc::Status status;
};

StartedCall StartCall(ldm::v1::ImageSynthesisService::Stub& stub,
                      const std::string& token) {
  StartedCall call;
  if (!token.empty()) {
    call.context->AddMetadata("authorization", "Bearer " + token);
  }
  GenerateRequest request;
  request.mutable_text_to_image()->set_prompt("a red circle");
  call.reader = stub.Generate(call.context.get(), request);
  GenerateResponse first;
  call.queued = call.reader->Read(&first) && first.has_queued();
  call.job_id = first.job_id();
  if (!call.queued) call.status = call.reader->Finish();
  return call;
}

TEST(AuthTokensServiceTest, TokensGateTheServiceAndBoundEachClientsJobs) {
  const char* directory = std::getenv("TEST_TMPDIR");
  const std::string tokens_file =
      std::string(directory != nullptr ? directory : "/tmp") +
      "/integration_tokens";
  std::ofstream(tokens_file) << "alice alice-0123456789abcdef 1\n"
                             << "batch batch-fedcba9876543210\n";
  // No workers: admitted jobs stay queued and hold their client's slot.
  ServerOptions options;
  options.auth_tokens_file = tokens_file;
  auto server = StartWithoutWorkers(options);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = ldm::v1::ImageSynthesisService::NewStub(channel);

  for (const std::string token : {"", "alice-0123456789abcdeF"}) {
    StartedCall refused = StartCall(*stub, token);
    EXPECT_FALSE(refused.queued);
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << token;
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    ldm::v1::ListModelsResponse models;
    EXPECT_EQ(stub->ListModels(&context, {}, &models).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Health and reflection need no token.
  EXPECT_THAT(ListServicesByReflection(channel),
              HasSubstr("ldm.v1.ImageSynthesisService"));

  StartedCall alice = StartCall(*stub, "alice-0123456789abcdef");
  ASSERT_TRUE(alice.queued) << alice.status.error_message();
  StartedCall alice_again = StartCall(*stub, "alice-0123456789abcdef");
  EXPECT_EQ(alice_again.status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(alice_again.status.error_message(),
              HasSubstr("client alice has 1 jobs in flight"));
  // Another client's slots are its own.
  StartedCall batch = StartCall(*stub, "batch-fedcba9876543210");
  EXPECT_TRUE(batch.queued) << batch.status.error_message();
  // A client sees and cancels only its own jobs.
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer batch-fedcba9876543210");
    ldm::v1::CancelJobRequest cancel;
    cancel.set_job_id(alice.job_id);
    ldm::v1::CancelJobResponse job;
    EXPECT_EQ(stub->CancelJob(&context, cancel, &job).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    grpc::ClientContext list_context;
    list_context.AddMetadata("authorization", "Bearer batch-fedcba9876543210");
    ldm::v1::ListJobsResponse listed;
    ASSERT_TRUE(stub->ListJobs(&list_context, {}, &listed).ok());
    ASSERT_EQ(listed.jobs_size(), 1);
    EXPECT_EQ(listed.jobs(0).job_id(), batch.job_id);
    EXPECT_EQ(listed.jobs(0).client(), "batch");
    EXPECT_EQ(listed.jobs(0).state(), ldm::v1::JOB_STATE_QUEUED);
    grpc::ClientContext get_context;
    ldm::v1::GetJobRequest get;
    get.set_job_id(alice.job_id);
    ldm::v1::GetJobResponse got;
    EXPECT_EQ(stub->GetJob(&get_context, get, &got).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Alice's call ends: her slot is free again.
  alice.context->TryCancel();
  GenerateResponse ignored;
  while (alice.reader->Read(&ignored)) {
  }
  EXPECT_EQ(alice.reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The client learns of its cancel at once; the server ends the job on its
  // own thread, and counts it once the slot is free.
  auto exposition_now = [&server] {
    return prometheus::TextSerializer().Serialize(
        server->metrics().registry()->Collect());
  };
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (exposition_now().find("client=\"alice\",code=\"CANCELLED\"} 1") ==
             std::string::npos &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  StartedCall alice_later = StartCall(*stub, "alice-0123456789abcdef");
  EXPECT_TRUE(alice_later.queued) << alice_later.status.error_message();

  // Metrics name the client, never its token.
  const std::string exposition = exposition_now();
  EXPECT_THAT(exposition,
              HasSubstr("ldmserve_client_requests_total{client=\"alice\","
                        "code=\"RESOURCE_EXHAUSTED\"} 1"));
  EXPECT_THAT(exposition, Not(HasSubstr("0123456789")));

  // A reload revokes a token at once.
  std::ofstream(tokens_file) << "batch batch-fedcba9876543210\n";
  ASSERT_EQ(server->ReloadAuthTokens().value_or(0), 1);
  EXPECT_EQ(StartCall(*stub, "alice-0123456789abcdef").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  server->Shutdown(absl::ZeroDuration());
}

TEST(ListenAddressTest, OnlyLoopbackAddressesCountAsLocal) {
  for (const char* local : {"127.0.0.1:50051", "localhost:1", "[::1]:50051",
                            "unix:/run/ldmserve.sock", "127.1.2.3:0"}) {
    EXPECT_TRUE(IsLoopbackListenAddress(local)) << local;
  }
  for (const char* remote : {"0.0.0.0:50051", "[::]:50051", ":50051",
                             "10.0.0.5:50051", "ldm.example.com:443"}) {
    EXPECT_FALSE(IsLoopbackListenAddress(remote)) << remote;
  }
}

TEST_F(IntegrationTest, ShutdownRefusesNewCallsWithUnavailable) {
  server_->scheduler().Shutdown(absl::ZeroDuration());
  CallResult call = Call(TextRequest("a red circle", 2, 1));
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace ldmserve
