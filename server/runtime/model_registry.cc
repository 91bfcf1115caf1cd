#include "server/runtime/model_registry.h"

#include <glog/logging.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
  for (const auto& copy : copies) {
    const ldm::StagePrecision& precision = copy->precision();
    model.placements.push_back({copy->device().str(),
                                ldm::DtypeName(precision.unet),
                                ldm::DtypeName(precision.first_stage),
                                ldm::DtypeName(precision.text)});
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

}  // namespace

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
    auto model = std::make_unique<Model>();
    model->entry = std::move(entry);
    models_.push_back(std::move(model));
  }
}

void ModelRegistry::AddLoaded(ModelEntry entry,
                              std::unique_ptr<ldm::LatentDiffusion> model) {
  auto loaded = std::make_unique<Model>();
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
  std::vector<Model*> pending;
  {
    absl::MutexLock lock(&mu_);
    for (auto& model : models_) {
      if (model->state != ModelState::kLoading) continue;
      ModelEntry& entry = model->entry;
      if (entry.devices.empty()) entry.devices = server_devices;
      for (const std::string& device : entry.devices) {
        if (!Has(server_devices, device)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "model ", entry.name, ": device ", device,
              " has no worker (--devices=", absl::StrJoin(server_devices, ","),
              ")"));
        }
      }
      pending.push_back(model.get());
    }
  }
  for (Model* model : pending) {
    const ModelEntry& entry = model->entry;
    const absl::Time start = absl::Now();
    absl::StatusOr<std::string> config_path = ResolveConfig(entry);
    std::vector<std::unique_ptr<ldm::LatentDiffusion>> copies;
    absl::Status status = config_path.status();
    for (size_t i = 0; status.ok() && i < entry.devices.size(); ++i) {
      absl::StatusOr<at::Device> device = ldm::CallTorch(
          "device", [&] { return at::Device(entry.devices[i]); });
      absl::StatusOr<ldm::LoadOptions> options =
          device.ok() ? LoadOptionsFor(entry, *device, default_dtype)
                      : absl::StatusOr<ldm::LoadOptions>(device.status());
      absl::StatusOr<std::unique_ptr<ldm::LatentDiffusion>> loaded =
          options.ok() ? ldm::LatentDiffusion::Load(
                             *config_path, entry.weights_path, *options)
                       : options.status();
      if (loaded.ok()) {
        copies.push_back(*std::move(loaded));
      } else {
        status = loaded.status();
        if (entry.devices.size() > 1) {
          status = absl::Status(
              status.code(),
              absl::StrCat("on ", entry.devices[i], ": ", status.message()));
        }
      }
    }
    absl::MutexLock lock(&mu_);
    if (status.ok()) status = MakeReady(*model, std::move(copies));
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

absl::StatusOr<const ModelRegistry::Model*> ModelRegistry::Find(
    const std::string& name, ldm::Task task) const {
  absl::MutexLock lock(&mu_);
  const Model* found = nullptr;
  for (const auto& model : models_) {
    if (name.empty() ? Has(model->entry.default_for, task)
                     : model->entry.name == name) {
      found = model.get();
      break;
    }
  }
  if (found == nullptr && name.empty()) {
    // No declared default: the first model that can run the task (its tasks
    // are known once it is loaded).
    for (const auto& model : models_) {
      if (Has(model->entry.tasks, task)) {
        found = model.get();
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
  if (found->state != ModelState::kReady) {
    return absl::UnavailableError(absl::StrCat(
        "model '", found->entry.name, "' is ",
        found->state == ModelState::kLoading ? "still loading"
                                             : "not loaded: " + found->error));
  }
  return found;
}

std::vector<ModelRegistry::ModelStatus> ModelRegistry::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<ModelStatus> result;
  for (const auto& model : models_) {
    const bool ready = model->state == ModelState::kReady;
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
