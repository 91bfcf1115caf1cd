// Wiring of one ldmserve instance: model registry, scheduler, the gRPC
// server (ImageSynthesisService, grpc.health.v1.Health, reflection) and the
// Prometheus endpoint. Used by main and by the in-process integration tests.
//
// Example:
//   LDM_ASSIGN_OR_RETURN(auto server, LdmServer::Start(options, registry));
//   server->Wait();  // until Shutdown() from another thread
#ifndef LDMSERVE_SERVER_SERVICE_SERVER_H_
#define LDMSERVE_SERVER_SERVICE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/runtime/model_registry.h"
#include "server/runtime/scheduler.h"
#include "server/service/auth_tokens.h"
#include "server/service/image_synthesis_service.h"
#include "server/service/job_tracker.h"
#include "server/service/metrics.h"
#include "server/service/metrics_http_server.h"
#include "server/service/model_admin.h"

namespace ldmserve {

// TLS for the gRPC port: PEM files. Without a certificate the port is
// plaintext; with a client CA, clients must present a certificate it signed
// (mTLS).
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string client_ca;
};

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // Port 0 picks a free port.
  std::string metrics_listen;              // Empty = no metrics endpoint.
  SchedulerOptions scheduler;  // Its worker_devices: from `devices`.
  ServiceLimits limits;
  // Where models are loaded (ParseDevices' form); the scheduler's workers
  // must cover them.
  std::vector<std::string> devices = {"cpu"};
  // Models' dtype where the registry names none: "auto" (f16 on CUDA, f32
  // on the CPU), "f32", "f16" or "bf16".
  std::string dtype = "auto";
  TlsFiles tls;
  // AuthTokens' file; empty = no authentication.
  std::string auth_tokens_file;
  // A client's jobs in flight where its line names no MAX_JOBS.
  int token_max_jobs = 8;
  // How long, how many and how much of finished jobs GetJob still finds.
  JobRetention job_retention;
  // LoadModel/UnloadModel; its `load` is filled in from the options above.
  ModelAdminOptions model_admin;
  // The LoRA adapters' folder (empty = none) and the memory the adapters
  // read from it may keep.
  std::string lora_dir;
  int64_t lora_cache_bytes = int64_t{1} << 30;
  // Each device's memory for model weights, in bytes (ModelMemoryBudget:
  // 0 = 80% of the device's, -1 = no bound).
  int64_t model_memory_bytes = 0;
};

// Whether `listen` ("host:port", "[v6]:port", "unix:path") only accepts
// connections from this machine.
bool IsLoopbackListenAddress(const std::string& listen);

class LdmServer {
 public:
  // Starts serving at once with health NOT_SERVING; call LoadModels() (or
  // hand in a loaded registry and call MarkServing()).
  static absl::StatusOr<std::unique_ptr<LdmServer>> Start(
      const ServerOptions& options, std::unique_ptr<ModelRegistry> models);
  ~LdmServer();

  // Loads the registry's models; health turns SERVING when all required
  // models are ready.
  absl::Status LoadModels();
  void MarkServing();

  int port() const { return port_; }
  // The metrics endpoint's port, 0 without one.
  int metrics_port() const {
    return metrics_server_ ? metrics_server_->port() : 0;
  }
  // Rereads --auth-tokens (SIGHUP); the tokens in force stay on error.
  // Returns the number of clients; FAILED_PRECONDITION without tokens.
  absl::StatusOr<int> ReloadAuthTokens();
  // Health NOT_SERVING, new calls UNAVAILABLE, queued and running jobs get up
  // to `drain_timeout` to finish, then the server stops.
  void Shutdown(absl::Duration drain_timeout);
  void Wait();

  Scheduler& scheduler() { return *scheduler_; }
  ServiceMetrics& metrics() { return *metrics_; }

 private:
  LdmServer() = default;
  void SetServing(bool serving);
  // Gauges read from elsewhere, refreshed before each scrape.
  void RefreshGauges();

  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<AuthTokens> tokens_;
  // Before the scheduler: its jobs' sinks report their end to the tracker
  // until the scheduler is gone.
  std::unique_ptr<JobTracker> jobs_;
  std::unique_ptr<Scheduler> scheduler_;
  // After the scheduler and the tracker, which its unloads use.
  std::unique_ptr<ModelAdmin> admin_;
  std::unique_ptr<LoraLibrary> loras_;
  std::unique_ptr<ImageSynthesisService> service_;
  std::unique_ptr<MetricsHttpServer> metrics_server_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
  std::vector<std::string> devices_;
  std::string dtype_;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_SERVER_H_
