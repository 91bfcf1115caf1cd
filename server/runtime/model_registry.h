// The models a server serves, read from a registry file:
//
//   {"models": [
//     {"name": "shapes-tiny",
//      "config": "shapes-tiny/config.json",        // relative to this file
//      "weights": "shapes-tiny/weights.safetensors",
//      "tasks": ["text_to_image"],   // optional; default: every task the
//                                    // model runs (LoadAll fills it in)
//      "default_for": ["text_to_image"],
//      "devices": ["cpu"],     // optional; default: every --devices device
//      "dtype": "f16",         // optional; default: ldmserve --dtype, whose
//                              // auto is f16 on CUDA and f32 on the CPU
//      "vae_dtype": "f32",     // optional: the autoencoder's (default f32)
//      "text_dtype": "f32",    // optional: the text encoder's (default f32)
//      "required": true}]}
//
// LoadAll() loads every entry, one copy per device it is served on; a
// failing entry marked required fails the whole load (the server exits with one
// clear line), others are kept as FAILED with their error and the server serves
// the rest.
//
// Load() and Unload() add and remove models while the server serves (the
// admin RPCs): a load is refused up front when the weights would not fit the
// device's budget of model memory, and an unloading model takes no new jobs
// but is freed only when the last job holding it has ended: Find() hands out
// leases (shared pointers) that a Job keeps.
//
// Thread-safety: LoadAll() runs once, and may run while the server already
// serves (ListModels then shows LOADING, Find answers UNAVAILABLE); every
// other method is safe from any thread at any time. A model is immutable once
// it is ready.
//
// No LibTorch in this header: the service sees a model's capabilities and
// placements as plain values, and its copies only as opaque pointers to hand
// to a Job.
#ifndef LDMSERVE_SERVER_RUNTIME_MODEL_REGISTRY_H_
#define LDMSERVE_SERVER_RUNTIME_MODEL_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/ldm/generation.h"
#include "server/runtime/job.h"

namespace ldm {
class LatentDiffusion;
}  // namespace ldm

namespace ldmserve {

enum class ModelState { kLoading, kReady, kFailed, kUnloading };

struct ModelEntry {
  std::string name;
  // Absolute or relative to the working dir. Empty: the family is detected
  // from the checkpoint's keys among the configs in `configs_dir`
  // (ldm::DetectFamily) when the model loads.
  std::string config_path;
  std::string configs_dir;
  std::string weights_path;
  // What the entry serves; each must be one the model can run, and each of
  // default_for one of these (the load fails otherwise). Empty = every task
  // the model runs (known once loaded).
  std::vector<ldm::Task> tasks;
  std::vector<ldm::Task> default_for;
  // Where copies are loaded ("cpu", "cuda:0", ...); each must be one the
  // server runs workers on. Empty = all of them (LoadAll fills it in).
  std::vector<std::string> devices;
  bool required = true;
  bool use_ema = false;  // "ema": true: the checkpoint's EMA UNet weights.
  // "f32", "f16", "bf16" (validated when read); empty = the server's
  // default for each device.
  std::string dtype;
  std::string vae_dtype;
  std::string text_dtype;
};

// Models with at least this many parameters are "large" for the defaults
// below (SD v1 has 1066 M, the shipped shapes models about 3 M).
inline constexpr int64_t kLargeModelParameters = 100'000'000;

// LibTorch's intra-op threads for a server of `cores` serving `entries`
// (ldmserve --threads=0). Small models only: cores - 1, one core left to
// gRPC (OpenMP's barriers wait for the slowest thread, and a thread
// preempted by the server's own stalls every millisecond-long op). Any
// model of `large_parameters` or more: every core, since its ops last tens
// of milliseconds to seconds and the extra core is worth up to 2x on a
// 2-core machine. Sizes come from the checkpoints' headers (nothing is
// loaded); unreadable ones count as small (the load reports them).
int DefaultIntraOpThreads(const std::vector<ModelEntry>& entries, int cores,
                          int64_t large_parameters = kLargeModelParameters);

// Where a copy of a model is loaded and in which precision.
struct ModelPlacement {
  std::string device;        // "cpu", "cuda:0", ...
  std::string dtype;         // The UNet's: "f32", "f16", "bf16".
  std::string vae_dtype;     // The autoencoder's.
  std::string text_dtype;    // The text encoder's.
  int64_t weight_bytes = 0;  // What its weights take (EstimateWeightBytes).
};

// The bytes the weights of `entry` take once loaded on `device` in the
// dtypes it would get (`default_dtype` where the entry names none), from the
// checkpoint's header alone: every tensor the model keeps, at its stage's
// dtype (the EMA or the training UNet, not both).
absl::StatusOr<int64_t> EstimateWeightBytes(const ModelEntry& entry,
                                            const std::string& device,
                                            const std::string& default_dtype);

// "f32", "f16" or "bf16": a dtype an entry may name.
bool IsDtypeName(const std::string& name);

// How models are loaded at run time (Load).
struct LoadSettings {
  // The devices the server runs workers on: an entry's default, and what
  // its devices must be among.
  std::vector<std::string> server_devices = {"cpu"};
  std::string default_dtype = "auto";
  // The bytes of model weights each device may hold (every model's copies
  // on it, loading ones included); a device not named here has no bound.
  std::map<std::string, int64_t> memory_budget;
};

// A device's model memory: its budget (0 = none) and what the models
// loaded or loading on it take.
struct DeviceModelMemory {
  std::string device;
  int64_t budget_bytes = 0;
  int64_t used_bytes = 0;
};

class ModelRegistry {
 public:
  static absl::StatusOr<std::vector<ModelEntry>> ReadRegistryFile(
      const std::string& path);

  explicit ModelRegistry(std::vector<ModelEntry> entries);
  ~ModelRegistry();
  // For tests: serve an already built model.
  void AddLoaded(ModelEntry entry, std::unique_ptr<ldm::LatentDiffusion> model);

  // `server_devices`: the devices the server runs workers on (--devices).
  // `default_dtype`: the dtype of entries that name none ("f32", "f16",
  // "bf16", or "auto": f16 on CUDA, f32 elsewhere).
  absl::Status LoadAll(const std::vector<std::string>& server_devices = {"cpu"},
                       const std::string& default_dtype = "auto");

  // Loads `entry` on the calling thread and serves it when ready.
  // ALREADY_EXISTS for a name in use, INVALID_ARGUMENT for a device without
  // a worker, RESOURCE_EXHAUSTED when its weights would not fit a device's
  // budget (nothing is read then beyond the header), the loader's error
  // otherwise (the entry is then dropped, so that the name can be retried).
  absl::Status Load(ModelEntry entry, const LoadSettings& settings);

  // Stops new jobs of `name` (Find: UNAVAILABLE), calls `on_unloading` (to
  // cancel its jobs, say), waits until every lease is given back, and drops
  // the model. NOT_FOUND for an unknown name, FAILED_PRECONDITION while it
  // loads or already unloads. A FAILED entry is just removed.
  absl::Status Unload(const std::string& name,
                      const std::function<void()>& on_unloading = nullptr);

  // Every device's model memory, in `settings.server_devices` order then
  // any other device a model is on.
  std::vector<DeviceModelMemory> MemoryUse(const LoadSettings& settings) const;

  struct Model {
    Model();
    ~Model();
    ModelEntry entry;
    ModelState state = ModelState::kLoading;
    std::string error;
    // The copy on entry.devices[0]; names the model for batching.
    std::unique_ptr<ldm::LatentDiffusion> model;
    // The copies on entry.devices[1...].
    std::vector<std::unique_ptr<ldm::LatentDiffusion>> other_copies;
    // Set when ready: what a request is checked against (ldm::CheckRequest),
    // and where each copy is, in entry.devices order.
    ldm::ModelCapabilities capabilities;
    std::vector<ModelPlacement> placements;
    // Every copy, `model` first (what a Job may run on).
    std::vector<const ldm::LatentDiffusion*> Copies() const;
    // The weight bytes counted against each device while it is loading or
    // loaded (EstimateWeightBytes).
    std::map<std::string, int64_t> accounted_bytes;

   private:
    friend class ModelRegistry;
    mutable absl::Mutex lease_mu_;
    int leases_ ABSL_GUARDED_BY(lease_mu_) = 0;
  };

  // The ready model named `name`, or, when `name` is empty, the default for
  // `task` (else the first model that can run it). NOT_FOUND for unknown names,
  // UNAVAILABLE while loading or failed, FAILED_PRECONDITION when it cannot run
  // `task`. The model stays alive (and an unload of it waits) while the
  // returned lease, or a copy of it, is held.
  absl::StatusOr<std::shared_ptr<const Model>> Find(const std::string& name,
                                                    ldm::Task task) const;
  struct ModelStatus {
    ModelEntry entry;
    ModelState state;
    std::string error;
    // When ready (else empty).
    ldm::ModelCapabilities capabilities;
    std::vector<ModelPlacement> placements;
  };
  // A consistent copy of every model's state, for ListModels.
  std::vector<ModelStatus> Snapshot() const;
  bool AllRequiredReady() const;

 private:
  // A lease on `model`: counts while held (Unload waits for none).
  static std::shared_ptr<const Model> Lease(std::shared_ptr<Model> model);
  // Validates `entry` against `settings` and reserves its memory; the new
  // model, LOADING.
  absl::StatusOr<std::shared_ptr<Model>> AdmitLocked(
      ModelEntry entry, const LoadSettings& settings,
      const std::map<std::string, int64_t>& bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveLocked(const Model* model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<DeviceModelMemory> MemoryUseLocked(
      const LoadSettings& settings) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Model>> models_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_RUNTIME_MODEL_REGISTRY_H_
