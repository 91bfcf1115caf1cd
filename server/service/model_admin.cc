#include "server/service/model_admin.h"

#include <algorithm>
#include <filesystem>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/runtime/devices.h"
#include "server/runtime/folder_paths.h"
#include "server/service/process_memory.h"
#include "server/service/request_validation.h"

namespace ldmserve {
namespace {

constexpr size_t kMaxNameBytes = 64;
// Of a device's memory, what model weights may take by default; the rest
// is for the jobs' activations and the process itself.
constexpr double kDefaultBudgetShare = 0.8;

// The device's memory as the default budget sees it; nullopt where unread.
std::optional<int64_t> DeviceMemoryBytes(const std::string& device) {
  if (device == "cpu") {
    if (std::optional<int64_t> limit = CgroupMemoryLimitBytes()) return limit;
    return PhysicalMemoryBytes();
  }
  absl::StatusOr<DeviceMemoryReading> reading = ReadDeviceMemory(device);
  if (!reading.ok() || reading->total_bytes <= 0) return std::nullopt;
  return reading->total_bytes;
}

}  // namespace

std::map<std::string, int64_t> ModelMemoryBudget(
    const std::vector<std::string>& devices, int64_t bytes) {
  std::map<std::string, int64_t> budget;
  if (bytes < 0) return budget;
  for (const std::string& device : devices) {
    if (bytes > 0) {
      budget[device] = bytes;
    } else if (std::optional<int64_t> memory = DeviceMemoryBytes(device)) {
      budget[device] = static_cast<int64_t>(static_cast<double>(*memory) *
                                            kDefaultBudgetShare);
    }
  }
  return budget;
}

ModelAdmin::ModelAdmin(ModelRegistry* models, ModelAdminOptions options)
    : models_(models), options_(std::move(options)) {
  if (options_.enabled) thread_ = std::thread([this] { Loop(); });
}

ModelAdmin::~ModelAdmin() { Shutdown(); }

absl::Status ModelAdmin::CheckAllowed(const std::string& client,
                                      bool tokens_on) const {
  if (!options_.enabled) {
    return absl::FailedPreconditionError(
        "loading and unloading models is off on this server (ldmserve "
        "--model-admin)");
  }
  if (tokens_on && !options_.admin_clients.empty() &&
      std::find(options_.admin_clients.begin(), options_.admin_clients.end(),
                client) == options_.admin_clients.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("client '", client,
                     "' may not load or unload models (--admin-clients)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelEntry> ModelAdmin::EntryFor(
    const ldm::v1::LoadModelRequest& request) const {
  ModelEntry entry;
  LDM_RETURN_IF_ERROR(CheckSafeName("name", request.name()));
  entry.name = request.name();

  LDM_ASSIGN_OR_RETURN(entry.weights_path,
                       ResolveInFolder("weights", options_.model_dir,
                                       "model folder", request.weights()));

  entry.configs_dir = options_.configs_dir;
  if (!request.config().empty() && !request.family().empty()) {
    return absl::InvalidArgumentError("config: set config or family, not both");
  }
  std::error_code error;
  if (!request.config().empty()) {
    LDM_ASSIGN_OR_RETURN(entry.config_path,
                         ResolveInFolder("config", options_.model_dir,
                                         "model folder", request.config()));
  } else if (!request.family().empty()) {
    LDM_RETURN_IF_ERROR(CheckSafeName("family", request.family()));
    const std::filesystem::path config =
        std::filesystem::path(options_.configs_dir) /
        (request.family() + ".json");
    if (!std::filesystem::is_regular_file(config, error)) {
      std::vector<std::string> known;
      for (const auto& item :
           std::filesystem::directory_iterator(options_.configs_dir, error)) {
        if (item.path().extension() == ".json") {
          known.push_back(item.path().stem().string());
        }
      }
      std::sort(known.begin(), known.end());
      return absl::InvalidArgumentError(absl::StrCat(
          "family: unknown '", request.family(),
          "' (known: ", absl::StrJoin(known, ", "), "; empty = detected)"));
    }
    entry.config_path = config.string();
  }

  for (const auto& [field, source, target] :
       {std::tuple{"tasks", &request.tasks(), &entry.tasks},
        std::tuple{"default_for", &request.default_for(),
                   &entry.default_for}}) {
    for (int task : *source) {
      std::optional<ldm::Task> known = TaskFromProto(task);
      if (!known) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": ", task, " is not a task"));
      }
      target->push_back(*known);
    }
  }
  for (const std::string& device : request.devices()) {
    if (std::find(options_.load.server_devices.begin(),
                  options_.load.server_devices.end(),
                  device) == options_.load.server_devices.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("devices: '", device.substr(0, kMaxNameBytes),
                       "' has no worker on this server (",
                       absl::StrJoin(options_.load.server_devices, ", "), ")"));
    }
    entry.devices.push_back(device);
  }
  for (const auto& [field, source, target] :
       {std::tuple{"dtype", &request.dtype(), &entry.dtype},
        std::tuple{"vae_dtype", &request.vae_dtype(), &entry.vae_dtype},
        std::tuple{"text_dtype", &request.text_dtype(), &entry.text_dtype}}) {
    if (source->empty()) continue;
    if (!IsDtypeName(*source)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": f32, f16 or bf16"));
    }
    *target = *source;
  }
  entry.use_ema = request.ema();
  entry.required = false;
  return entry;
}

void ModelAdmin::Post(std::function<void(bool stopping)> work) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_ && thread_.joinable()) {
      queue_.push_back(std::move(work));
      return;
    }
  }
  work(/*stopping=*/true);
}

void ModelAdmin::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void ModelAdmin::Loop() {
  while (true) {
    std::function<void(bool)> work;
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
      stopping = stopping_;
    }
    work(stopping);
  }
}

}  // namespace ldmserve
