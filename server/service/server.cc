#include "server/service/server.h"

#include <glog/logging.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <fstream>
#include <iterator>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/runtime/devices.h"
#include "server/service/process_memory.h"

namespace ldmserve {
namespace {

constexpr char kServiceName[] = "ldm.v1.ImageSynthesisService";

absl::StatusOr<std::string> ReadPemFile(const std::string& path,
                                        const char* flag) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path));
  }
  std::string text((std::istreambuf_iterator<char>(file)),
                   std::istreambuf_iterator<char>());
  if (!absl::StrContains(text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path, " is not PEM"));
  }
  return text;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& tls) {
  if (tls.cert.empty()) {
    if (!tls.key.empty() || !tls.client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls-key and --tls-client-ca need --tls-cert");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert needs --tls-key");
  }
  grpc::SslServerCredentialsOptions ssl(
      tls.client_ca.empty()
          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  LDM_ASSIGN_OR_RETURN(pair.private_key, ReadPemFile(tls.key, "--tls-key"));
  LDM_ASSIGN_OR_RETURN(pair.cert_chain, ReadPemFile(tls.cert, "--tls-cert"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca.empty()) {
    LDM_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                         ReadPemFile(tls.client_ca, "--tls-client-ca"));
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

bool IsLoopbackListenAddress(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  std::string host = listen;
  if (const size_t colon = listen.rfind(':'); colon != std::string::npos) {
    host = listen.substr(0, colon);
  }
  if (absl::StartsWith(host, "ipv4:") || absl::StartsWith(host, "ipv6:")) {
    host = host.substr(5);
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

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
  if (!options.auth_tokens_file.empty()) {
    if (options.token_max_jobs < 1) {
      return absl::InvalidArgumentError("--token-max-jobs must be >= 1");
    }
    LDM_ASSIGN_OR_RETURN(
        server->tokens_,
        AuthTokens::FromFile(options.auth_tokens_file, options.token_max_jobs));
  }
  LDM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                       ServerCredentials(options.tls));
  if (options.tls.cert.empty() && !IsLoopbackListenAddress(options.listen)) {
    LOG(WARNING) << "listening on " << options.listen
                 << " in plaintext: anyone who can reach it can read prompts "
                    "and images (--tls-cert/--tls-key, docs/security.md)";
  }
  server->jobs_ = std::make_unique<JobTracker>(options.job_retention);
  ModelAdminOptions admin_options = options.model_admin;
  admin_options.load =
      LoadSettings{.server_devices = options.devices,
                   .default_dtype = options.dtype,
                   .memory_budget = ModelMemoryBudget(
                       options.devices, options.model_memory_bytes)};
  server->admin_ = std::make_unique<ModelAdmin>(server->models_.get(),
                                                std::move(admin_options));
  server->loras_ =
      std::make_unique<LoraLibrary>(options.lora_dir, options.lora_cache_bytes);
  server->service_ = std::make_unique<ImageSynthesisService>(
      server->models_.get(), server->scheduler_.get(), server->jobs_.get(),
      server->metrics_.get(), options.limits, server->tokens_.get(),
      server->admin_.get(), server->loras_.get());
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
  builder.AddListeningPort(options.listen, credentials, &server->port_);
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
  metrics_->SetTrackedJobs(jobs_->size(), jobs_->result_bytes());
  std::map<std::string, bool> ready;
  for (const ModelRegistry::ModelStatus& model : models_->Snapshot()) {
    ready[model.entry.name] = model.state == ModelState::kReady;
  }
  metrics_->SetModelsReady(ready);
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

absl::StatusOr<int> LdmServer::ReloadAuthTokens() {
  if (tokens_ == nullptr) {
    return absl::FailedPreconditionError("no --auth-tokens to reload");
  }
  return tokens_->Reload();
}

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
  // Then the admin: a load under way finishes, queued ones are refused, and
  // unloads, whose jobs have all ended now, complete.
  if (admin_ != nullptr) admin_->Shutdown();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
  }
  metrics_server_.reset();
}

void LdmServer::Wait() { server_->Wait(); }

}  // namespace ldmserve
