#include "server/runtime/lora_library.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/ldm/lora.h"
#include "server/runtime/folder_paths.h"

namespace ldmserve {
namespace {

constexpr char kExtension[] = ".safetensors";

}  // namespace

LoraLibrary::LoraLibrary(std::string folder, int64_t cache_bytes)
    : folder_(std::move(folder)), cache_bytes_(cache_bytes) {}

absl::StatusOr<std::shared_ptr<const ldm::LoraAdapter>> LoraLibrary::Get(
    const std::string& name) {
  {
    absl::MutexLock lock(&mu_);
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
      if (it->first == name) {
        cache_.splice(cache_.begin(), cache_, it);
        return cache_.front().second;
      }
    }
  }
  LDM_ASSIGN_OR_RETURN(
      std::string path,
      ResolveInFolder("name", folder_, "LoRA folder", name + kExtension));
  LDM_ASSIGN_OR_RETURN(std::shared_ptr<const ldm::LoraAdapter> adapter,
                       ldm::LoraAdapter::Read(path));
  absl::MutexLock lock(&mu_);
  cache_.emplace_front(name, adapter);
  cached_bytes_ += adapter->bytes();
  // The oldest go first; the one just read stays even when over budget.
  while (cached_bytes_ > cache_bytes_ && cache_.size() > 1) {
    cached_bytes_ -= cache_.back().second->bytes();
    cache_.pop_back();
  }
  return adapter;
}

absl::StatusOr<std::vector<LoraUse>> LoraLibrary::Resolve(
    std::vector<LoraUse> loras, const ldm::LatentDiffusion& model) {
  if (loras.empty()) return loras;
  if (!enabled()) {
    return absl::FailedPreconditionError(
        "loras: this server offers no LoRA adapters (ldmserve --lora-dir)");
  }
  for (size_t i = 0; i < loras.size(); ++i) {
    const std::string field = absl::StrCat("loras[", i, "]");
    absl::StatusOr<std::shared_ptr<const ldm::LoraAdapter>> adapter =
        Get(loras[i].name);
    if (!adapter.ok()) {
      return absl::Status(adapter.status().code(),
                          absl::StrCat(field, ".", adapter.status().message()));
    }
    if (absl::Status fits = ldm::CheckLoraFits(**adapter, model); !fits.ok()) {
      return absl::Status(fits.code(), absl::StrCat(field, " ('", loras[i].name,
                                                    "'): ", fits.message()));
    }
    loras[i].adapter = *std::move(adapter);
  }
  return loras;
}

std::vector<std::string> LoraLibrary::Names() const {
  std::vector<std::string> names;
  if (!enabled()) return names;
  std::error_code error;
  for (const auto& item : std::filesystem::directory_iterator(folder_, error)) {
    const std::string file = item.path().filename().string();
    if (absl::EndsWith(file, kExtension) && file.front() != '.') {
      names.push_back(file.substr(0, file.size() - sizeof(kExtension) + 1));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace ldmserve
