#include "server/runtime/model_registry.h"

#include <glog/logging.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/ldm/checkpoint.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/model_family.h"
#include "server/ldm/precision.h"
#include "server/ldm/safetensors.h"
#include "server/ldm/torch_boundary.h"

namespace ldmserve {
namespace {

absl::StatusOr<ldm::Task> ParseTask(const std::string& name) {
  if (std::optional<ldm::Task> task = ldm::TaskFromName(name)) return *task;
  return absl::InvalidArgumentError(absl::StrCat("unknown task '", name, "'"));
}

template <typename T>
bool Has(const std::vector<T>& values, const T& value) {
  return std::find(values.begin(), values.end(), value) != values.end();
}

// Marks `model` ready with `copies` (entry.devices order), once the entry's
// tasks are known to be ones the model can run.
absl::Status MakeReady(
    ModelRegistry::Model& model,
    std::vector<std::unique_ptr<ldm::LatentDiffusion>> copies) {
  const ldm::ModelCapabilities& capabilities = copies.front()->capabilities();
  ModelEntry& entry = model.entry;
  if (entry.tasks.empty()) entry.tasks = capabilities.tasks;
  for (ldm::Task task : entry.tasks) {
    if (!Has(capabilities.tasks, task)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the registry lists task ", ldm::TaskName(task),
          " but the model runs only ", ldm::TaskNames(capabilities.tasks)));
    }
  }
  for (ldm::Task task : entry.default_for) {
    if (!Has(entry.tasks, task)) {
      return absl::InvalidArgumentError(
          absl::StrCat("default_for lists ", ldm::TaskName(task),
                       " but its tasks are ", ldm::TaskNames(entry.tasks)));
    }
  }
  model.capabilities = capabilities;
  for (size_t i = 0; i < copies.size(); ++i) {
    const ldm::StagePrecision& precision = copies[i]->precision();
    auto bytes = model.accounted_bytes.find(entry.devices[i]);
    model.placements.push_back(
        {copies[i]->device().str(), ldm::DtypeName(precision.unet),
         ldm::DtypeName(precision.first_stage), ldm::DtypeName(precision.text),
         bytes == model.accounted_bytes.end() ? 0 : bytes->second});
  }
  model.model = std::move(copies.front());
  for (size_t i = 1; i < copies.size(); ++i) {
    model.other_copies.push_back(std::move(copies[i]));
  }
  model.state = ModelState::kReady;
  return absl::OkStatus();
}

// The entry's config file: as given, or the family its weights belong to.
absl::StatusOr<std::string> ResolveConfig(const ModelEntry& entry) {
  if (!entry.config_path.empty()) return entry.config_path;
  absl::StatusOr<std::shared_ptr<const ldm::Checkpoint>> file =
      ldm::Checkpoint::Open(entry.weights_path);
  if (!file.ok()) return file.status();
  absl::StatusOr<ldm::FamilyMatch> family =
      ldm::DetectFamily(**file, entry.weights_path, entry.configs_dir);
  if (!family.ok()) return family.status();
  LOG(INFO) << "model " << entry.name << ": family " << family->name
            << " (detected from " << entry.weights_path << ")";
  return family->config_path;
}

// The load options of `entry`'s copy on `device`, its dtypes resolved.
absl::StatusOr<ldm::LoadOptions> LoadOptionsFor(
    const ModelEntry& entry, const at::Device& device,
    const std::string& default_dtype) {
  ldm::LoadOptions options{.device = device, .use_ema = entry.use_ema};
  const std::string& dtype = entry.dtype.empty() ? default_dtype : entry.dtype;
  if (dtype == "auto") {
    options.dtype = ldm::DefaultDtypeFor(device);
  } else {
    absl::StatusOr<at::ScalarType> parsed = ldm::ParseDtypeName(dtype);
    if (!parsed.ok()) return parsed.status();
    options.dtype = *parsed;
  }
  // The stages' own dtypes, where the entry names them (validated when the
  // registry was read).
  for (auto [name, slot] :
       {std::pair{&entry.vae_dtype, &options.first_stage_dtype},
        std::pair{&entry.text_dtype, &options.text_dtype}}) {
    if (name->empty()) continue;
    absl::StatusOr<at::ScalarType> parsed = ldm::ParseDtypeName(*name);
    if (!parsed.ok()) return parsed.status();
    *slot = *parsed;
  }
  return options;
}

// Loads a copy of `entry` on each of its devices.
absl::StatusOr<std::vector<std::unique_ptr<ldm::LatentDiffusion>>> LoadCopies(
    const ModelEntry& entry, const std::string& default_dtype) {
  absl::StatusOr<std::string> config_path = ResolveConfig(entry);
  if (!config_path.ok()) return config_path.status();
  std::vector<std::unique_ptr<ldm::LatentDiffusion>> copies;
  for (const std::string& device_name : entry.devices) {
    absl::StatusOr<at::Device> device =
        ldm::CallTorch("device", [&] { return at::Device(device_name); });
    absl::StatusOr<ldm::LoadOptions> options =
        device.ok() ? LoadOptionsFor(entry, *device, default_dtype)
                    : absl::StatusOr<ldm::LoadOptions>(device.status());
    absl::StatusOr<std::unique_ptr<ldm::LatentDiffusion>> loaded =
        options.ok() ? ldm::LatentDiffusion::Load(*config_path,
                                                  entry.weights_path, *options)
                     : options.status();
    if (!loaded.ok()) {
      if (entry.devices.size() == 1) return loaded.status();
      return absl::Status(
          loaded.status().code(),
          absl::StrCat("on ", device_name, ": ", loaded.status().message()));
    }
    copies.push_back(*std::move(loaded));
  }
  return copies;
}

// The weight bytes of `entry` on each of its devices.
absl::StatusOr<std::map<std::string, int64_t>> EstimateOnDevices(
    const ModelEntry& entry, const std::string& default_dtype) {
  std::map<std::string, int64_t> bytes;
  for (const std::string& device : entry.devices) {
    absl::StatusOr<int64_t> estimate =
        EstimateWeightBytes(entry, device, default_dtype);
    if (!estimate.ok()) return estimate.status();
    bytes[device] = *estimate;
  }
  return bytes;
}

std::string Mebibytes(int64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

absl::Status CheckDevicesHaveWorkers(
    const ModelEntry& entry, const std::vector<std::string>& server_devices) {
  for (const std::string& device : entry.devices) {
    if (!Has(server_devices, device)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model ", entry.name, ": device ", device,
          " has no worker (--devices=", absl::StrJoin(server_devices, ","),
          ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsDtypeName(const std::string& name) {
  return ldm::ParseDtypeName(name).ok();
}

absl::StatusOr<int64_t> EstimateWeightBytes(const ModelEntry& entry,
                                            const std::string& device,
                                            const std::string& default_dtype) {
  absl::StatusOr<at::Device> parsed =
      ldm::CallTorch("device", [&] { return at::Device(device); });
  if (!parsed.ok()) return parsed.status();
  absl::StatusOr<ldm::LoadOptions> options =
      LoadOptionsFor(entry, *parsed, default_dtype);
  if (!options.ok()) return options.status();
  const ldm::StagePrecision precision = options->Precision();
  absl::StatusOr<std::shared_ptr<const ldm::Checkpoint>> file =
      ldm::Checkpoint::Open(entry.weights_path);
  if (!file.ok()) return file.status();
  // Which of the file's tensors the model keeps, and in what dtype; the
  // rest (the unused UNet copy, training state) is never loaded.
  const absl::string_view unet_prefix =
      entry.use_ema ? "model_ema." : "model.diffusion_model.";
  int64_t bytes = 0;
  for (const auto& [name, info] : (*file)->tensors()) {
    std::optional<at::ScalarType> dtype;
    if (absl::StartsWith(name, unet_prefix)) {
      dtype = precision.unet;
    } else if (absl::StartsWith(name, "first_stage_model.")) {
      dtype = precision.first_stage;
    } else if (absl::StartsWith(name, "cond_stage_model.")) {
      dtype = precision.text;
    }
    if (!dtype) continue;
    int64_t elements = 1;
    for (int64_t size : info.shape) elements *= size;
    bytes += elements * static_cast<int64_t>(c10::elementSize(*dtype));
  }
  return bytes;
}

int DefaultIntraOpThreads(const std::vector<ModelEntry>& entries, int cores,
                          int64_t large_parameters) {
  for (const ModelEntry& entry : entries) {
    absl::StatusOr<std::shared_ptr<const ldm::Checkpoint>> file =
        ldm::Checkpoint::Open(entry.weights_path);
    if (!file.ok()) continue;
    int64_t parameters = 0;
    for (const auto& [name, info] : (*file)->tensors()) {
      int64_t elements = 1;
      for (int64_t size : info.shape) elements *= size;
      parameters += elements;
    }
    if (parameters >= large_parameters) return std::max(1, cores);
  }
  return std::max(1, cores - 1);
}

absl::StatusOr<std::vector<ModelEntry>> ModelRegistry::ReadRegistryFile(
    const std::string& path) {
  absl::StatusOr<std::string> text = ldm::ReadTextFile(path);
  if (!text.ok()) return text.status();
  const nlohmann::json root =
      nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object() || !root.contains("models") ||
      !root["models"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected {\"models\": [...]}"));
  }
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  auto resolve = [&](const std::string& file) {
    const std::filesystem::path p(file);
    return (p.is_absolute() ? p : base / p).lexically_normal().string();
  };
  // The family configs: "configs" at the top level, by default the
  // configs/ folder beside the registry (models/configs).
  const std::string configs_dir =
      resolve(root.value("configs", std::string("configs")));
  std::vector<ModelEntry> entries;
  for (const nlohmann::json& item : root["models"]) {
    ModelEntry entry;
    try {
      entry.name = item.at("name").get<std::string>();
      // "config": a file; or "family": a config of the configs folder by
      // name; or neither (or "family": "auto"): detected from the weights.
      entry.configs_dir = configs_dir;
      const std::string family = item.value("family", std::string("auto"));
      if (item.contains("config")) {
        entry.config_path = resolve(item.at("config").get<std::string>());
      } else if (family != "auto") {
        entry.config_path =
            (std::filesystem::path(configs_dir) / (family + ".json")).string();
      }
      entry.weights_path = resolve(item.at("weights").get<std::string>());
      for (const auto& task : item.value("tasks", std::vector<std::string>{})) {
        absl::StatusOr<ldm::Task> kind = ParseTask(task);
        if (!kind.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ": model ", entry.name, ": ", kind.status().message()));
        }
        entry.tasks.push_back(*kind);
      }
      for (const auto& task :
           item.value("default_for", std::vector<std::string>{})) {
        absl::StatusOr<ldm::Task> kind = ParseTask(task);
        if (!kind.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ": model ", entry.name, ": ", kind.status().message()));
        }
        entry.default_for.push_back(*kind);
      }
      entry.devices = item.value("devices", std::vector<std::string>{});
      entry.required = item.value("required", true);
      entry.use_ema = item.value("ema", false);
      entry.dtype = item.value("dtype", std::string());
      entry.vae_dtype = item.value("vae_dtype", std::string());
      entry.text_dtype = item.value("text_dtype", std::string());
      for (const std::string* dtype :
           {&entry.dtype, &entry.vae_dtype, &entry.text_dtype}) {
        if (dtype->empty()) continue;
        if (absl::Status valid = ldm::ParseDtypeName(*dtype).status();
            !valid.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ": model ", entry.name, ": ", valid.message()));
        }
      }
    } catch (const nlohmann::json::exception& error) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": bad model entry: ", error.what()));
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

ModelRegistry::Model::Model() = default;
ModelRegistry::Model::~Model() = default;

ModelRegistry::~ModelRegistry() = default;

ModelRegistry::ModelRegistry(std::vector<ModelEntry> entries) {
  absl::MutexLock lock(&mu_);
  for (ModelEntry& entry : entries) {
    auto model = std::make_shared<Model>();
    model->entry = std::move(entry);
    models_.push_back(std::move(model));
  }
}

void ModelRegistry::AddLoaded(ModelEntry entry,
                              std::unique_ptr<ldm::LatentDiffusion> model) {
  auto loaded = std::make_shared<Model>();
  loaded->entry = std::move(entry);
  if (loaded->entry.devices.empty()) {
    loaded->entry.devices = {model->device().str()};
  }
  std::vector<std::unique_ptr<ldm::LatentDiffusion>> copies;
  copies.push_back(std::move(model));
  const absl::Status ready = MakeReady(*loaded, std::move(copies));
  if (!ready.ok()) {
    loaded->state = ModelState::kFailed;
    loaded->error.assign(ready.message().data(), ready.message().size());
  }
  absl::MutexLock lock(&mu_);
  models_.push_back(std::move(loaded));
}

std::vector<const ldm::LatentDiffusion*> ModelRegistry::Model::Copies() const {
  std::vector<const ldm::LatentDiffusion*> copies = {model.get()};
  for (const auto& copy : other_copies) copies.push_back(copy.get());
  return copies;
}

absl::Status ModelRegistry::LoadAll(
    const std::vector<std::string>& server_devices,
    const std::string& default_dtype) {
  std::vector<std::shared_ptr<Model>> pending;
  {
    absl::MutexLock lock(&mu_);
    for (auto& model : models_) {
      if (model->state != ModelState::kLoading) continue;
      ModelEntry& entry = model->entry;
      if (entry.devices.empty()) entry.devices = server_devices;
      LDM_RETURN_IF_ERROR(CheckDevicesHaveWorkers(entry, server_devices));
      pending.push_back(model);
    }
  }
  for (const std::shared_ptr<Model>& model : pending) {
    const ModelEntry& entry = model->entry;
    const absl::Time start = absl::Now();
    // Counted like a model loaded at run time; an unreadable file counts
    // nothing (its load fails below).
    absl::StatusOr<std::map<std::string, int64_t>> bytes =
        EstimateOnDevices(entry, default_dtype);
    if (bytes.ok()) {
      absl::MutexLock lock(&mu_);
      model->accounted_bytes = *bytes;
    }
    absl::StatusOr<std::vector<std::unique_ptr<ldm::LatentDiffusion>>> copies =
        LoadCopies(entry, default_dtype);
    absl::MutexLock lock(&mu_);
    absl::Status status = copies.status();
    if (status.ok()) status = MakeReady(*model, *std::move(copies));
    if (!status.ok()) {
      model->state = ModelState::kFailed;
      model->error.assign(status.message().data(), status.message().size());
      if (entry.required) {
        return absl::Status(
            status.code(),
            absl::StrCat("model ", entry.name, ": ", status.message()));
      }
      LOG(ERROR) << "model " << entry.name << " not served: " << model->error;
      continue;
    }
    LOG(INFO) << "model " << entry.name << " ready on "
              << absl::StrJoin(entry.devices, ", ") << " (UNet "
              << ldm::DtypeName(model->model->precision().unet) << ", "
              << model->model->NumParameters() << " parameters, "
              << absl::ToDoubleSeconds(absl::Now() - start) << " s)";
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const ModelRegistry::Model>> ModelRegistry::Find(
    const std::string& name, ldm::Task task) const {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Model> found;
  for (const auto& model : models_) {
    if (name.empty() ? Has(model->entry.default_for, task)
                     : model->entry.name == name) {
      found = model;
      break;
    }
  }
  if (found == nullptr && name.empty()) {
    // No declared default: the first model that can run the task (its tasks
    // are known once it is loaded).
    for (const auto& model : models_) {
      if (Has(model->entry.tasks, task)) {
        found = model;
        break;
      }
    }
  }
  if (found == nullptr) {
    if (name.empty()) {
      return absl::NotFoundError(absl::StrCat("no default model for task ",
                                              ldm::TaskName(task),
                                              "; name one (see ListModels)"));
    }
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' is not served (see ListModels)"));
  }
  if (!found->entry.tasks.empty() && !Has(found->entry.tasks, task)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", found->entry.name, "' cannot run ", ldm::TaskName(task),
        " (its tasks: ", ldm::TaskNames(found->entry.tasks), ")"));
  }
  switch (found->state) {
    case ModelState::kReady:
      return Lease(std::move(found));
    case ModelState::kLoading:
      return absl::UnavailableError(
          absl::StrCat("model '", found->entry.name, "' is still loading"));
    case ModelState::kUnloading:
      return absl::UnavailableError(
          absl::StrCat("model '", found->entry.name, "' is being unloaded"));
    case ModelState::kFailed:
      break;
  }
  return absl::UnavailableError(absl::StrCat(
      "model '", found->entry.name, "' is not loaded: ", found->error));
}

std::shared_ptr<const ModelRegistry::Model> ModelRegistry::Lease(
    std::shared_ptr<Model> model) {
  Model* raw = model.get();
  {
    absl::MutexLock lock(&raw->lease_mu_);
    ++raw->leases_;
  }
  // The deleter holds the model itself, so that the model outlives the
  // lease's own unlock even when an unload is waiting to drop it.
  return std::shared_ptr<const Model>(raw,
                                      [owner = std::move(model)](const Model*) {
                                        absl::MutexLock lock(&owner->lease_mu_);
                                        --owner->leases_;
                                      });
}

absl::StatusOr<std::shared_ptr<ModelRegistry::Model>>
ModelRegistry::AdmitLocked(ModelEntry entry, const LoadSettings& settings,
                           const std::map<std::string, int64_t>& bytes) {
  for (const auto& model : models_) {
    if (model->entry.name == entry.name) {
      return absl::AlreadyExistsError(absl::StrCat(
          "model '", entry.name, "' is already served (UnloadModel first)"));
    }
  }
  for (const DeviceModelMemory& device : MemoryUseLocked(settings)) {
    auto needed = bytes.find(device.device);
    if (needed == bytes.end() || device.budget_bytes == 0) continue;
    if (device.used_bytes + needed->second > device.budget_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "model ", entry.name, " needs ", Mebibytes(needed->second),
          " of weights on ", device.device, ", which has ",
          Mebibytes(
              std::max<int64_t>(0, device.budget_bytes - device.used_bytes)),
          " of its ", Mebibytes(device.budget_bytes),
          " model memory free (--model-memory-mb; UnloadModel frees some)"));
    }
  }
  auto model = std::make_shared<Model>();
  model->entry = std::move(entry);
  model->accounted_bytes = bytes;
  models_.push_back(model);
  return model;
}

void ModelRegistry::RemoveLocked(const Model* model) {
  models_.erase(std::remove_if(models_.begin(), models_.end(),
                               [model](const std::shared_ptr<Model>& listed) {
                                 return listed.get() == model;
                               }),
                models_.end());
}

absl::Status ModelRegistry::Load(ModelEntry entry,
                                 const LoadSettings& settings) {
  if (entry.devices.empty()) entry.devices = settings.server_devices;
  LDM_RETURN_IF_ERROR(CheckDevicesHaveWorkers(entry, settings.server_devices));
  // From the header only: a load that cannot fit reads nothing more.
  LDM_ASSIGN_OR_RETURN(auto bytes,
                       EstimateOnDevices(entry, settings.default_dtype));
  std::shared_ptr<Model> model;
  {
    absl::MutexLock lock(&mu_);
    LDM_ASSIGN_OR_RETURN(model, AdmitLocked(std::move(entry), settings, bytes));
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<std::unique_ptr<ldm::LatentDiffusion>>> copies =
      LoadCopies(model->entry, settings.default_dtype);
  absl::MutexLock lock(&mu_);
  absl::Status status = copies.status();
  if (status.ok()) status = MakeReady(*model, *std::move(copies));
  if (!status.ok()) {
    RemoveLocked(model.get());
    return absl::Status(status.code(), absl::StrCat("model ", model->entry.name,
                                                    ": ", status.message()));
  }
  LOG(INFO) << "model " << model->entry.name << " loaded at run time on "
            << absl::StrJoin(model->entry.devices, ", ") << " ("
            << model->model->NumParameters() << " parameters, "
            << absl::ToDoubleSeconds(absl::Now() - start) << " s)";
  return absl::OkStatus();
}

absl::Status ModelRegistry::Unload(const std::string& name,
                                   const std::function<void()>& on_unloading) {
  std::shared_ptr<Model> model;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& listed : models_) {
      if (listed->entry.name == name) model = listed;
    }
    if (model == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("model '", name, "' is not served (see ListModels)"));
    }
    switch (model->state) {
      case ModelState::kLoading:
        return absl::FailedPreconditionError(
            absl::StrCat("model '", name, "' is still loading"));
      case ModelState::kUnloading:
        return absl::FailedPreconditionError(
            absl::StrCat("model '", name, "' is already being unloaded"));
      case ModelState::kFailed:
        RemoveLocked(model.get());
        return absl::OkStatus();
      case ModelState::kReady:
        model->state = ModelState::kUnloading;
        break;
    }
  }
  int leases = 0;
  {
    absl::MutexLock lock(&model->lease_mu_);
    leases = model->leases_;
  }
  if (on_unloading) on_unloading();
  {
    absl::MutexLock lock(&model->lease_mu_);
    Model* raw = model.get();
    auto drained = [raw]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(raw->lease_mu_) {
      return raw->leases_ == 0;
    };
    model->lease_mu_.Await(absl::Condition(&drained));
  }
  absl::MutexLock lock(&mu_);
  RemoveLocked(model.get());
  LOG(INFO) << "model " << name << " unloaded (waited for " << leases
            << " leases: its jobs)";
  return absl::OkStatus();
}

std::vector<DeviceModelMemory> ModelRegistry::MemoryUse(
    const LoadSettings& settings) const {
  absl::MutexLock lock(&mu_);
  return MemoryUseLocked(settings);
}

std::vector<DeviceModelMemory> ModelRegistry::MemoryUseLocked(
    const LoadSettings& settings) const {
  std::vector<DeviceModelMemory> devices;
  auto slot = [&devices](const std::string& device) -> DeviceModelMemory& {
    for (DeviceModelMemory& listed : devices) {
      if (listed.device == device) return listed;
    }
    devices.push_back(DeviceModelMemory{.device = device});
    return devices.back();
  };
  for (const std::string& device : settings.server_devices) {
    auto budget = settings.memory_budget.find(device);
    slot(device).budget_bytes =
        budget == settings.memory_budget.end() ? 0 : budget->second;
  }
  for (const auto& model : models_) {
    if (model->state == ModelState::kFailed) continue;
    for (const auto& [device, bytes] : model->accounted_bytes) {
      slot(device).used_bytes += bytes;
    }
  }
  return devices;
}

std::vector<ModelRegistry::ModelStatus> ModelRegistry::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<ModelStatus> result;
  for (const auto& model : models_) {
    const bool ready = model->state == ModelState::kReady ||
                       model->state == ModelState::kUnloading;
    result.push_back(
        ModelStatus{model->entry, model->state, model->error,
                    ready ? model->capabilities : ldm::ModelCapabilities(),
                    ready ? model->placements : std::vector<ModelPlacement>()});
  }
  return result;
}

bool ModelRegistry::AllRequiredReady() const {
  absl::MutexLock lock(&mu_);
  for (const auto& model : models_) {
    if (model->entry.required && model->state != ModelState::kReady) {
      return false;
    }
  }
  return true;
}

}  // namespace ldmserve
