// Loading and unloading models while the server serves (the LoadModel and
// UnloadModel RPCs). A request is checked here (its name, a weights path
// inside the model folder, a known family, dtypes), then runs on the admin's
// own thread, one after another: a load takes seconds and an unload waits
// for the model's jobs, neither may hold a gRPC thread, and loads checked
// against the memory budget one at a time cannot both fit into the same
// free space.
//
// Thread-safety: all methods are thread-safe.
//
// Example:
//   ModelAdmin admin(&registry, {.enabled = true, .model_dir = "models"});
//   LDM_ASSIGN_OR_RETURN(ModelEntry entry, admin.EntryFor(request));
//   admin.Post([&](bool stopping) { ... registry.Load(entry, ...) ... });
#ifndef LDMSERVE_SERVER_SERVICE_MODEL_ADMIN_H_
#define LDMSERVE_SERVER_SERVICE_MODEL_ADMIN_H_

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ldm/v1/image_synthesis.pb.h"
#include "server/runtime/model_registry.h"

namespace ldmserve {

struct ModelAdminOptions {
  bool enabled = false;  // --model-admin
  // The folder LoadModel's weights are relative to (--model-dir).
  std::string model_dir;
  // The family configs LoadModel's `family` names.
  std::string configs_dir;
  // With tokens on, the clients that may call the admin RPCs; empty = every
  // client with a token.
  std::vector<std::string> admin_clients;
  LoadSettings load;
};

// The bytes of model weights each of `devices` may hold: `bytes` each; -1 =
// no bound (none listed); 0 = 80% of the device's memory (on the CPU the
// container's limit, else the machine's; on CUDA the card's), the rest left
// for the activations of the jobs.
std::map<std::string, int64_t> ModelMemoryBudget(
    const std::vector<std::string>& devices, int64_t bytes);

class ModelAdmin {
 public:
  ModelAdmin(ModelRegistry* models, ModelAdminOptions options);
  ~ModelAdmin();
  ModelAdmin(const ModelAdmin&) = delete;
  ModelAdmin& operator=(const ModelAdmin&) = delete;

  const ModelAdminOptions& options() const { return options_; }
  ModelRegistry& models() { return *models_; }

  // FAILED_PRECONDITION when admin is off, PERMISSION_DENIED when tokens
  // are on (`client` non-empty) and `client` is not an admin client.
  absl::Status CheckAllowed(const std::string& client, bool tokens_on) const;

  // The registry entry `request` asks for: INVALID_ARGUMENT naming the
  // field, NOT_FOUND for weights not in the model folder.
  absl::StatusOr<ModelEntry> EntryFor(
      const ldm::v1::LoadModelRequest& request) const;

  // Runs `work` on the admin thread after the work posted before it.
  // `stopping` is true when the admin is shutting down: `work` must then
  // only answer its call (UNAVAILABLE), not load anything.
  void Post(std::function<void(bool stopping)> work) ABSL_LOCKS_EXCLUDED(mu_);

  // Lets the work under way finish, hands what is queued `stopping` = true,
  // and joins the thread. Later Post()s run `work` at once, stopping.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop();

  ModelRegistry* const models_;
  const ModelAdminOptions options_;
  absl::Mutex mu_;
  std::deque<std::function<void(bool)>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_MODEL_ADMIN_H_
