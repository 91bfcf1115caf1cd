#include "server/service/server.h"

#include <glog/logging.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/runtime/devices.h"
#include "server/service/process_memory.h"

namespace ldmserve {
namespace {

constexpr char kServiceName[] = "ldm.v1.ImageSynthesisService";

}  // namespace

absl::StatusOr<std::unique_ptr<LdmServer>> LdmServer::Start(
    const ServerOptions& options, std::unique_ptr<ModelRegistry> models) {
  std::unique_ptr<LdmServer> server(new LdmServer());
  server->models_ = std::move(models);
  server->devices_ = options.devices;
  server->dtype_ = options.dtype;
  server->metrics_ = std::make_unique<ServiceMetrics>();
  SchedulerOptions scheduler_options = options.scheduler;
  if (scheduler_options.observer == nullptr) {
    scheduler_options.observer = server->metrics_.get();
  }
  server->scheduler_ = std::make_unique<Scheduler>(scheduler_options);
  server->metrics_->SetBuildInfo(LDMSERVE_VERSION, LibTorchVersion(),
                                 absl::StrJoin(options.devices, ","));
  server->metrics_->AddWorkers(server->scheduler_->workers());
  server->metrics_->SetQueueCapacity(scheduler_options.queue_size);
  server->service_ = std::make_unique<ImageSynthesisService>(
      server->models_.get(), server->scheduler_.get(), server->metrics_.get(),
      options.limits);
  if (!options.metrics_listen.empty()) {
    LdmServer* raw = server.get();
    auto metrics_server = MetricsHttpServer::Start(
        options.metrics_listen, server->metrics_->registry(),
        [raw] { raw->RefreshGauges(); });
    if (!metrics_server.ok()) return metrics_server.status();
    server->metrics_server_ = std::move(metrics_server).value();
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  // Requests carry images; the default 4 MiB is too small for a few PNGs.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(options.limits.max_message_bytes));
  builder.SetMaxSendMessageSize(64 << 20);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen));
  }
  server->SetServing(false);
  return server;
}

LdmServer::~LdmServer() { Shutdown(absl::ZeroDuration()); }

void LdmServer::RefreshGauges() {
  metrics_->SetQueueDepth(scheduler_->queue_depth());
  metrics_->SetRunningJobs(scheduler_->running_jobs());
  for (const ModelRegistry::ModelStatus& model : models_->Snapshot()) {
    metrics_->SetModelReady(model.entry.name,
                            model.state == ModelState::kReady);
  }
  if (const std::optional<int64_t> resident = ResidentMemoryBytes()) {
    metrics_->SetResidentMemory(static_cast<double>(*resident));
  }
  // Read each scrape: Kubernetes can resize a running pod's limit.
  if (const std::optional<int64_t> limit = CgroupMemoryLimitBytes()) {
    metrics_->SetMemoryLimit(static_cast<double>(*limit));
  }
  for (const std::string& device : devices_) {
    if (device == "cpu") continue;
    // Only a LibTorch with CUDA can run these workers, and it reads them.
    const absl::StatusOr<DeviceMemoryReading> memory = ReadDeviceMemory(device);
    if (!memory.ok()) continue;
    metrics_->SetDeviceMemory(device,
                              static_cast<double>(memory->allocated_bytes),
                              static_cast<double>(memory->reserved_bytes),
                              static_cast<double>(memory->total_bytes));
  }
}

absl::Status LdmServer::LoadModels() {
  absl::Status status = models_->LoadAll(devices_, dtype_);
  if (status.ok() && models_->AllRequiredReady()) SetServing(true);
  return status;
}

void LdmServer::MarkServing() { SetServing(true); }

void LdmServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus("", serving);
  health->SetServingStatus(kServiceName, serving);
}

void LdmServer::Shutdown(absl::Duration drain_timeout) {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) SetServing(false);
  // Jobs first: the scheduler refuses new ones (UNAVAILABLE) and drains;
  // every running call gets its final status before the server closes.
  if (scheduler_ != nullptr) scheduler_->Shutdown(drain_timeout);
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
  }
  metrics_server_.reset();
}

void LdmServer::Wait() { server_->Wait(); }

}  // namespace ldmserve
