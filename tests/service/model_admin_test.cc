// LoadModel and UnloadModel through the real server: off unless enabled,
// gated by tokens, weights only from the model folder, memory accounted
// before a load, and an unloading model's jobs drained (or cancelled) before
// it is freed.
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
#include "server/service/image_codec.h"
#include "server/service/server.h"
#include "tests/ldm/test_util.h"
#include "tests/service/tiny_server.h"

namespace ldmserve {
namespace {

using ldm::v1::GenerateRequest;
using ldm::v1::GenerateResponse;
using ldm::v1::LoadModelRequest;
using ldm::v1::LoadModelResponse;
using ldm::v1::UnloadModelRequest;
using ldm::v1::UnloadModelResponse;
using ::testing::HasSubstr;

constexpr char kServedModel[] = "served";
constexpr uint64_t kSeed = 11;
constexpr int kWeightsSeed = 5;

class ModelAdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "models" / "configs");
    ldm::ModelConfig config = ldm::testing::TinyTextToImageConfig();
    config.name = "tiny";
    std::ofstream(dir_ / "models" / "configs" / "tiny.json")
        << ldm::ModelConfigToJson(config);
    auto model = ldm::LatentDiffusion::CreateRandom(config, kWeightsSeed);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_TRUE(
        (*model)->Save((dir_ / "models" / "tiny.safetensors").string()).ok());
    parameters_ = (*model)->NumParameters();
    // A file outside the model folder, and a link to it from inside.
    ASSERT_TRUE((*model)->Save((dir_ / "outside.safetensors").string()).ok());
    std::filesystem::create_symlink(dir_ / "outside.safetensors",
                                    dir_ / "models" / "escape.safetensors");
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(10));
  }

  // A server serving the same weights as `kServedModel`, its admin as
  // `options` say.
  void Start(ServerOptions options) {
    options.model_admin.model_dir = (dir_ / "models").string();
    options.model_admin.configs_dir = (dir_ / "models" / "configs").string();
    auto tiny = testing::StartTinyServer(options, kServedModel, kWeightsSeed);
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    server_ = std::move(tiny->server);
    stub_ = std::move(tiny->stub);
  }

  static ServerOptions AdminOn() {
    ServerOptions options;
    options.model_admin.enabled = true;
    return options;
  }

  static LoadModelRequest LoadRequest(const std::string& name,
                                      const std::string& weights) {
    LoadModelRequest request;
    request.set_name(name);
    request.set_weights(weights);
    request.set_family("tiny");
    return request;
  }

  grpc::Status Load(const LoadModelRequest& request,
                    LoadModelResponse* response = nullptr,
                    const std::string& token = "") {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    LoadModelResponse ignored;
    return stub_->LoadModel(&context, request,
                            response != nullptr ? response : &ignored);
  }

  grpc::Status Unload(const std::string& name, bool cancel_jobs = false,
                      UnloadModelResponse* response = nullptr,
                      const std::string& token = "") {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    UnloadModelRequest request;
    request.set_name(name);
    request.set_cancel_jobs(cancel_jobs);
    UnloadModelResponse ignored;
    return stub_->UnloadModel(&context, request,
                              response != nullptr ? response : &ignored);
  }

  static GenerateRequest TextRequest(const std::string& model, int steps) {
    GenerateRequest request;
    request.set_model(model);
    request.mutable_text_to_image()->set_prompt("a red circle");
    request.mutable_sampler()->set_steps(steps);
    request.set_seed(kSeed);
    return request;
  }

  // The call's final status and its image, if any.
  std::pair<grpc::Status, std::string> Generate(
      const GenerateRequest& request) {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    GenerateResponse response;
    std::string image;
    while (reader->Read(&response)) {
      if (response.has_result()) image = response.result().images(0).data();
    }
    return {reader->Finish(), image};
  }

  ldm::v1::ListModelsResponse ListModels() {
    grpc::ClientContext context;
    ldm::v1::ListModelsResponse response;
    EXPECT_TRUE(stub_->ListModels(&context, {}, &response).ok());
    return response;
  }

  std::filesystem::path dir_;
  int64_t parameters_ = 0;
  std::unique_ptr<LdmServer> server_;
  std::unique_ptr<ldm::v1::ImageSynthesisService::Stub> stub_;
};

TEST_F(ModelAdminTest, OffUnlessEnabled) {
  Start(ServerOptions());
  const grpc::Status load = Load(LoadRequest("second", "tiny.safetensors"));
  EXPECT_EQ(load.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(load.error_message(), HasSubstr("--model-admin"));
  EXPECT_EQ(Unload(kServedModel).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ListModels().models_size(), 1);
}

TEST_F(ModelAdminTest, ALoadedModelServesAndAnUnloadedOneIsGone) {
  Start(AdminOn());
  LoadModelResponse loaded;
  const grpc::Status load =
      Load(LoadRequest("second", "tiny.safetensors"), &loaded);
  ASSERT_TRUE(load.ok()) << load.error_message();
  EXPECT_EQ(loaded.model().name(), "second");
  EXPECT_EQ(loaded.model().state(), ldm::v1::MODEL_STATE_READY);
  ASSERT_EQ(loaded.model().placements_size(), 1);
  // f32 weights: 4 bytes for each of the model's parameters.
  EXPECT_EQ(loaded.model().placements(0).weight_bytes(),
            static_cast<uint64_t>(parameters_) * 4);

  // The same weights draw the same image as the model served from the start.
  const auto [second_status, second_image] = Generate(TextRequest("second", 4));
  ASSERT_TRUE(second_status.ok()) << second_status.error_message();
  const auto [served_status, served_image] =
      Generate(TextRequest(kServedModel, 4));
  ASSERT_TRUE(served_status.ok()) << served_status.error_message();
  // Pixels only: the files differ in the model named in their metadata.
  absl::StatusOr<ldm::RgbImage> second_pixels =
      DecodeImage(second_image, "second");
  absl::StatusOr<ldm::RgbImage> served_pixels =
      DecodeImage(served_image, "served");
  ASSERT_TRUE(second_pixels.ok()) << second_pixels.status();
  ASSERT_TRUE(served_pixels.ok()) << served_pixels.status();
  EXPECT_EQ(*second_pixels, *served_pixels);

  const ldm::v1::ListModelsResponse listed = ListModels();
  ASSERT_EQ(listed.models_size(), 2);
  EXPECT_EQ(listed.models(1).name(), "second");
  ASSERT_EQ(listed.model_memory_size(), 1);
  EXPECT_EQ(listed.model_memory(0).device(), "cpu");
  EXPECT_GE(listed.model_memory(0).used_bytes(),
            loaded.model().placements(0).weight_bytes());

  EXPECT_EQ(Load(LoadRequest("second", "tiny.safetensors")).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  UnloadModelResponse unloaded;
  const grpc::Status unload = Unload("second", false, &unloaded);
  ASSERT_TRUE(unload.ok()) << unload.error_message();
  EXPECT_EQ(unloaded.jobs_drained(), 0u);
  EXPECT_EQ(ListModels().models_size(), 1);
  EXPECT_EQ(Generate(TextRequest("second", 4)).first.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Unload("second").error_code(), grpc::StatusCode::NOT_FOUND);
  // The name is free again.
  EXPECT_TRUE(Load(LoadRequest("second", "tiny.safetensors")).ok());
}

TEST_F(ModelAdminTest, AnUnloadWaitsForTheModelsRunningJob) {
  Start(AdminOn());
  ASSERT_TRUE(Load(LoadRequest("second", "tiny.safetensors")).ok());
  grpc::ClientContext context;
  // The longest job a request may ask for, so that it still runs when the
  // unload arrives (the tiny model takes milliseconds a step).
  auto reader = stub_->Generate(&context, TextRequest("second", 200));
  GenerateResponse event;
  bool started = false;
  while (!started && reader->Read(&event)) started = event.has_progress();
  ASSERT_TRUE(started);

  UnloadModelResponse unloaded;
  const grpc::Status unload = Unload("second", false, &unloaded);
  ASSERT_TRUE(unload.ok()) << unload.error_message();
  EXPECT_EQ(unloaded.jobs_drained(), 1u);
  // The job was let finish: its result came before the unload answered.
  bool has_result = false;
  while (reader->Read(&event)) has_result |= event.has_result();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(has_result);
  EXPECT_EQ(ListModels().models_size(), 1);
}

TEST_F(ModelAdminTest, AnUnloadCanCancelTheModelsJobs) {
  ServerOptions options = AdminOn();
  options.scheduler.workers = 0;  // Jobs stay queued until cancelled.
  Start(options);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest(kServedModel, 4));
  GenerateResponse queued;
  ASSERT_TRUE(reader->Read(&queued));
  ASSERT_TRUE(queued.has_queued());

  UnloadModelResponse unloaded;
  const grpc::Status unload = Unload(kServedModel, true, &unloaded);
  ASSERT_TRUE(unload.ok()) << unload.error_message();
  EXPECT_EQ(unloaded.jobs_drained(), 1u);
  GenerateResponse ignored;
  while (reader->Read(&ignored)) {
  }
  const grpc::Status job = reader->Finish();
  EXPECT_EQ(job.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_THAT(job.error_message(), HasSubstr("being unloaded"));
  EXPECT_EQ(ListModels().models_size(), 0);
  EXPECT_EQ(Generate(TextRequest("", 4)).first.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ModelAdminTest, ALoadThatWouldNotFitIsRefusedBeforeReading) {
  const int64_t weight_bytes = parameters_ * 4;
  ServerOptions options = AdminOn();
  // Room for one copy of the tiny model beside the one served from the
  // start (which AddLoaded does not count), not two.
  options.model_memory_bytes = weight_bytes * 3 / 2;
  Start(options);
  ASSERT_TRUE(Load(LoadRequest("second", "tiny.safetensors")).ok());
  const grpc::Status refused = Load(LoadRequest("third", "tiny.safetensors"));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("model third needs"));
  EXPECT_THAT(refused.error_message(), HasSubstr("--model-memory-mb"));
  const ldm::v1::ListModelsResponse listed = ListModels();
  EXPECT_EQ(listed.models_size(), 2);
  ASSERT_EQ(listed.model_memory_size(), 1);
  EXPECT_EQ(listed.model_memory(0).budget_bytes(),
            static_cast<uint64_t>(weight_bytes * 3 / 2));
  EXPECT_EQ(listed.model_memory(0).used_bytes(),
            static_cast<uint64_t>(weight_bytes));
  // Unloading frees its share.
  ASSERT_TRUE(Unload("second").ok());
  EXPECT_TRUE(Load(LoadRequest("third", "tiny.safetensors")).ok());
}

TEST_F(ModelAdminTest, RequestsAreCheckedFieldByField) {
  Start(AdminOn());
  struct Case {
    LoadModelRequest request;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  auto with = [](const std::string& name, const std::string& weights) {
    return LoadRequest(name, weights);
  };
  cases.push_back({with("", "tiny.safetensors"),
                   grpc::StatusCode::INVALID_ARGUMENT, "name: 1 to 64"});
  cases.push_back({with("a/b", "tiny.safetensors"),
                   grpc::StatusCode::INVALID_ARGUMENT, "name: character '/'"});
  cases.push_back({with(std::string(65, 'a'), "tiny.safetensors"),
                   grpc::StatusCode::INVALID_ARGUMENT, "name: 1 to 64"});
  cases.push_back({with("m", ""), grpc::StatusCode::INVALID_ARGUMENT,
                   "weights: a path of 1 to"});
  cases.push_back({with("m", "../outside.safetensors"),
                   grpc::StatusCode::INVALID_ARGUMENT, "without '..'"});
  cases.push_back({with("m", (dir_ / "outside.safetensors").string()),
                   grpc::StatusCode::INVALID_ARGUMENT, "must be relative"});
  cases.push_back({with("m", "escape.safetensors"), grpc::StatusCode::NOT_FOUND,
                   "in the server's model folder"});
  cases.push_back({with("m", "missing.safetensors"),
                   grpc::StatusCode::NOT_FOUND, "no file 'missing"});
  Case family{with("m", "tiny.safetensors"), grpc::StatusCode::INVALID_ARGUMENT,
              "family: unknown 'sd-v9' (known: tiny"};
  family.request.set_family("sd-v9");
  cases.push_back(family);
  Case device{with("m", "tiny.safetensors"), grpc::StatusCode::INVALID_ARGUMENT,
              "devices: 'cuda:0' has no worker"};
  device.request.add_devices("cuda:0");
  cases.push_back(device);
  Case dtype{with("m", "tiny.safetensors"), grpc::StatusCode::INVALID_ARGUMENT,
             "vae_dtype: f32, f16 or bf16"};
  dtype.request.set_vae_dtype("f8");
  cases.push_back(dtype);
  Case task{with("m", "tiny.safetensors"), grpc::StatusCode::INVALID_ARGUMENT,
            "the registry lists task super_resolution"};
  task.request.add_tasks(ldm::v1::TASK_SUPER_RESOLUTION);
  cases.push_back(task);
  for (const Case& bad : cases) {
    SCOPED_TRACE(bad.request.ShortDebugString());
    const grpc::Status status = Load(bad.request);
    EXPECT_EQ(status.error_code(), bad.code);
    EXPECT_THAT(status.error_message(), HasSubstr(bad.message));
  }
  // None of them left a model behind.
  EXPECT_EQ(ListModels().models_size(), 1);
  EXPECT_EQ(Unload("").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ModelAdminTest, WithTokensOnlyAdminClientsMayLoad) {
  const std::string tokens_file = (dir_ / "tokens").string();
  std::ofstream(tokens_file) << "alice alice-0123456789abcdef\n"
                             << "ops ops-0123456789abcdef\n";
  ServerOptions options = AdminOn();
  options.auth_tokens_file = tokens_file;
  options.model_admin.admin_clients = {"ops"};
  Start(options);
  const LoadModelRequest request = LoadRequest("second", "tiny.safetensors");
  EXPECT_EQ(Load(request).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const grpc::Status alice = Load(request, nullptr, "alice-0123456789abcdef");
  EXPECT_EQ(alice.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(alice.error_message(), HasSubstr("--admin-clients"));
  EXPECT_EQ(Unload(kServedModel, false, nullptr, "alice-0123456789abcdef")
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Load(request, nullptr, "ops-0123456789abcdef").ok());
  EXPECT_TRUE(Unload("second", false, nullptr, "ops-0123456789abcdef").ok());
}

}  // namespace
}  // namespace ldmserve
