// LoRA adapters through the real server: a request's adapters change its
// image exactly as applying them alone does, jobs with other adapters get
// their own results when they run at once, the parameters say which were
// applied, and bad names, weights and files get clear statuses.
#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ldm/v1/image_synthesis.grpc.pb.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/layers.h"
#include "server/ldm/lora.h"
#include "server/ldm/safetensors.h"
#include "server/service/image_codec.h"
#include "server/service/server.h"
#include "tests/ldm/lora_test_util.h"
#include "tests/ldm/test_util.h"
#include "tests/service/tiny_server.h"

namespace ldmserve {
namespace {

using ldm::v1::GenerateRequest;
using ldm::v1::GenerateResponse;
using ::testing::HasSubstr;

constexpr int kWeightsSeed = 5;
constexpr int kRank = 2;
constexpr double kAlpha = 1.0;

struct Outcome {
  grpc::Status status;
  ldm::v1::Result result;
};

class LoraServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    at::set_num_threads(1);
    ldm::SetBatchInvariant(true);  // As ldmserve runs by default.
  }

  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "loras");
    reference_ = ldm::LatentDiffusion::CreateRandom(
                     ldm::testing::TinyTextToImageConfig(), kWeightsSeed)
                     .value();
    for (uint64_t seed : {7, 8}) {
      const ldm::testing::TestLora lora =
          ldm::testing::MakeTestLora(*reference_, kRank, seed);
      ASSERT_TRUE(
          ldm::WriteSafetensors(
              (dir_ / "loras" / absl::StrCat("style", seed, ".safetensors"))
                  .string(),
              lora.Kohya(kAlpha))
              .ok());
    }
    // An adapter for a model with more blocks than this one.
    ASSERT_TRUE(
        ldm::WriteSafetensors(
            (dir_ / "loras" / "other.safetensors").string(),
            {{"lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight",
              at::ones({1, 4, 1, 1})},
             {"lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight",
              at::ones({4, 1, 1, 1})}})
            .ok());
    std::ofstream(dir_ / "loras" / "broken.safetensors") << "not a file";
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(10));
  }

  void Start(const std::string& lora_dir) {
    ServerOptions options;
    options.scheduler.queue_size = 8;
    options.lora_dir = lora_dir;
    auto tiny = testing::StartTinyServer(options, "tiny", kWeightsSeed);
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    server_ = std::move(tiny->server);
    stub_ = std::move(tiny->stub);
  }

  static GenerateRequest Request(
      uint64_t seed, const std::vector<std::pair<std::string, float>>& loras) {
    GenerateRequest request;
    request.mutable_text_to_image()->set_prompt("a red circle");
    request.mutable_sampler()->set_steps(4);
    request.set_seed(seed);
    for (const auto& [name, weight] : loras) {
      ldm::v1::LoraAdapter* lora = request.add_loras();
      lora->set_name(name);
      lora->set_weight(weight);
    }
    return request;
  }

  Outcome Generate(const GenerateRequest& request) {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    GenerateResponse response;
    Outcome outcome;
    while (reader->Read(&response)) {
      if (response.has_result()) outcome.result = response.result();
    }
    outcome.status = reader->Finish();
    return outcome;
  }

  static at::Tensor Pixels(const Outcome& outcome) {
    absl::StatusOr<ldm::RgbImage> image =
        DecodeImage(outcome.result.images(0).data(), "result");
    EXPECT_TRUE(image.ok()) << image.status();
    return at::from_blob(image->pixels.data(), {image->height, image->width, 3},
                         at::kByte)
        .clone();
  }

  // What the reference model draws with `loras` applied on this thread.
  at::Tensor Alone(uint64_t seed,
                   const std::vector<std::pair<std::string, float>>& loras) {
    std::vector<std::pair<std::shared_ptr<const ldm::LoraAdapter>, double>>
        adapters;
    for (const auto& [name, weight] : loras) {
      adapters.emplace_back(
          ldm::LoraAdapter::Read(
              (dir_ / "loras" / (name + ".safetensors")).string())
              .value(),
          weight);
    }
    std::shared_ptr<const ldm::BoundLoras> bound =
        ldm::BindLoras(*reference_, adapters).value();
    ldm::ScopedLowRankUpdates active(&bound->updates);
    ldm::GenerationRequest request;
    request.prompt = "a red circle";
    request.sampler.steps = 4;
    request.seed = seed;
    return ldm::testing::RunToTensor(*reference_, request).value()[0];
  }

  std::filesystem::path dir_;
  std::unique_ptr<ldm::LatentDiffusion> reference_;
  std::unique_ptr<LdmServer> server_;
  std::unique_ptr<ldm::v1::ImageSynthesisService::Stub> stub_;
};

TEST_F(LoraServiceTest, AdaptersChangeTheImageAsAppliedAlone) {
  Start((dir_ / "loras").string());
  const Outcome plain = Generate(Request(3, {}));
  const Outcome styled = Generate(Request(3, {{"style7", 0.8f}}));
  const Outcome zero = Generate(Request(3, {{"style7", 0.0f}}));
  for (const Outcome* outcome : {&plain, &styled, &zero}) {
    ASSERT_TRUE(outcome->status.ok()) << outcome->status.error_message();
  }
  EXPECT_TRUE(at::equal(Pixels(styled), Alone(3, {{"style7", 0.8f}})));
  EXPECT_FALSE(at::equal(Pixels(styled), Pixels(plain)));
  // Weight 0 adds nothing.
  EXPECT_TRUE(at::equal(Pixels(zero), Pixels(plain)));

  ASSERT_EQ(styled.result.settings().loras_size(), 1);
  EXPECT_EQ(styled.result.settings().loras(0).name(), "style7");
  EXPECT_FLOAT_EQ(styled.result.settings().loras(0).weight(), 0.8f);
  absl::StatusOr<std::string> parameters =
      ReadImageParameters(styled.result.images(0).data());
  ASSERT_TRUE(parameters.ok()) << parameters.status();
  EXPECT_THAT(*parameters, HasSubstr("a red circle <lora:style7:0.8>"));

  grpc::ClientContext context;
  ldm::v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&context, {}, &models).ok());
  EXPECT_THAT(
      std::vector<std::string>(models.loras().begin(), models.loras().end()),
      ::testing::ElementsAre("broken", "other", "style7", "style8"));
}

TEST_F(LoraServiceTest, JobsWithOtherAdaptersGetTheirOwnResults) {
  Start((dir_ / "loras").string());
  const std::vector<std::vector<std::pair<std::string, float>>> adapters = {
      {},
      {{"style7", 1.0f}},
      {{"style8", 1.0f}},
      {{"style7", 1.0f}, {"style8", -0.5f}},
      {{"style7", 0.5f}},
      {}};
  std::vector<Outcome> outcomes(adapters.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < adapters.size(); ++i) {
    clients.emplace_back(
        [&, i] { outcomes[i] = Generate(Request(20 + i, adapters[i])); });
  }
  for (std::thread& client : clients) client.join();
  for (size_t i = 0; i < adapters.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(outcomes[i].status.ok()) << outcomes[i].status.error_message();
    EXPECT_TRUE(at::equal(Pixels(outcomes[i]), Alone(20 + i, adapters[i])));
  }
}

TEST_F(LoraServiceTest, BadAdaptersGetClearStatuses) {
  Start((dir_ / "loras").string());
  struct Case {
    std::vector<std::pair<std::string, float>> loras;
    grpc::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"missing", 1.0f}},
       grpc::StatusCode::NOT_FOUND,
       "loras[0].name: no file 'missing.safetensors' in the server's LoRA "
       "folder"},
      {{{"style7", 11.0f}},
       grpc::StatusCode::INVALID_ARGUMENT,
       "loras[0].weight: must be in [-10, 10]"},
      {{{"sub/style7", 1.0f}},
       grpc::StatusCode::INVALID_ARGUMENT,
       "loras[0].name: character '/'"},
      {{{"style7", 1.0f}, {"style7", 0.5f}},
       grpc::StatusCode::INVALID_ARGUMENT,
       "loras[1].name: 'style7' is named twice"},
      {{{"other", 1.0f}},
       grpc::StatusCode::INVALID_ARGUMENT,
       "loras[0] ('other'): LoRA key "
       "lora_unet_down_blocks_9_attentions_0_proj_in: the model has no layer"},
      {{{"broken", 1.0f}}, grpc::StatusCode::INVALID_ARGUMENT, "loras[0]."},
  };
  for (const Case& bad : cases) {
    SCOPED_TRACE(bad.message);
    const Outcome outcome = Generate(Request(1, bad.loras));
    EXPECT_EQ(outcome.status.error_code(), bad.code);
    EXPECT_THAT(outcome.status.error_message(), HasSubstr(bad.message));
  }
  GenerateRequest many = Request(1, {});
  for (int i = 0; i < 9; ++i) {
    ldm::v1::LoraAdapter* lora = many.add_loras();
    lora->set_name(absl::StrCat("style", i));
  }
  const Outcome too_many = Generate(many);
  EXPECT_EQ(too_many.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_many.status.error_message(),
              HasSubstr("loras: at most 8 adapters (got 9)"));
  // The server still serves.
  EXPECT_TRUE(Generate(Request(1, {{"style8", 1.0f}})).status.ok());
}

TEST_F(LoraServiceTest, WithoutAFolderAdaptersAreRefused) {
  Start("");
  const Outcome outcome = Generate(Request(1, {{"style7", 1.0f}}));
  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(outcome.status.error_message(), HasSubstr("--lora-dir"));
}

}  // namespace
}  // namespace ldmserve
