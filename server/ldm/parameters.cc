#include "server/ldm/parameters.h"

#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/ldm/sampler.h"

namespace ldm {
namespace {

std::string ShapeText(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Lists at most a few names, so a wholly wrong checkpoint gives a readable
// line instead of thousands of names.
std::string FewNames(const std::vector<std::string>& names) {
  constexpr size_t kShown = 5;
  std::vector<std::string> shown(
      names.begin(), names.begin() + std::min(kShown, names.size()));
  std::string text = absl::StrJoin(shown, ", ");
  if (names.size() > kShown) {
    absl::StrAppend(&text, " and ", names.size() - kShown, " more");
  }
  return text;
}

}  // namespace

void ParameterRegistry::Declare(const std::string& name,
                                std::vector<int64_t> shape, at::Tensor* slot,
                                Init init) {
  *slot = at::zeros(shape, at::TensorOptions().device(device_));
  entries_.push_back(Entry{name, std::move(shape), slot, init});
}

absl::Status ParameterRegistry::LoadFrom(
    const Checkpoint& file, const std::string& prefix, bool strict,
    const std::function<bool(const std::string&)>& is_known_extra,
    at::Device device, const DtypeForName& dtype_for,
    const std::function<std::string(const std::string&)>& key_for) {
  std::vector<std::string> missing;
  std::set<std::string> claimed;
  for (Entry& entry : entries_) {
    const std::string key =
        key_for ? key_for(prefix + entry.name) : prefix + entry.name;
    auto it = file.tensors().find(key);
    if (it == file.tensors().end()) {
      missing.push_back(key);
      continue;
    }
    claimed.insert(key);
    if (it->second.shape != entry.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          file.path(), ": shape of ", key, " is ", ShapeText(it->second.shape),
          ", expected ", ShapeText(entry.shape)));
    }
    absl::StatusOr<at::Tensor> stored = file.Get(key);
    if (!stored.ok()) return stored.status();
    // A copy (not an alias of the mapping): the mapping may be unaligned and
    // is read-only.
    *entry.slot = stored->to(device, dtype_for(entry.name),
                             /*non_blocking=*/false, /*copy=*/true);
    file.ReleasePages(key);
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": missing ", missing.size(),
                     " tensor(s): ", FewNames(missing)));
  }
  if (strict) {
    std::vector<std::string> unexpected;
    for (const auto& [key, info] : file.tensors()) {
      if (absl::StartsWith(key, prefix) && claimed.count(key) == 0 &&
          !is_known_extra(key)) {
        unexpected.push_back(key);
      }
    }
    if (!unexpected.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file.path(), ": unexpected ", unexpected.size(), " tensor(s) under '",
          prefix, "': ", FewNames(unexpected)));
    }
  }
  return absl::OkStatus();
}

void ParameterRegistry::InitRandom(uint64_t seed) {
  at::Generator generator = MakeGenerator(seed);
  for (Entry& entry : entries_) {
    const at::TensorOptions options = entry.slot->options();
    at::Tensor value;
    switch (entry.init) {
      case Init::kOnes:
        value = at::ones(entry.shape, options);
        break;
      case Init::kZeros:
        value = at::zeros(entry.shape, options);
        break;
      case Init::kFanIn: {
        int64_t fan_in = 1;
        for (size_t d = 1; d < entry.shape.size(); ++d)
          fan_in *= entry.shape[d];
        const double scale =
            entry.shape.size() > 1 ? 1.0 / std::sqrt(double(fan_in)) : 0.02;
        value = StandardNormal(entry.shape, generator, options) * scale;
        break;
      }
    }
    *entry.slot = value;
  }
}

void ParameterRegistry::To(at::Device device, at::ScalarType dtype) {
  To(device, [dtype](const std::string&) { return dtype; });
}

void ParameterRegistry::To(at::Device device, const DtypeForName& dtype_for) {
  for (Entry& entry : entries_) {
    *entry.slot = entry.slot->to(device, dtype_for(entry.name));
  }
}

std::map<std::string, at::Tensor> ParameterRegistry::Named(
    const std::string& prefix) const {
  std::map<std::string, at::Tensor> named;
  for (const Entry& entry : entries_) {
    named[prefix + entry.name] = *entry.slot;
  }
  return named;
}

std::map<std::string, std::vector<int64_t>> ParameterRegistry::Shapes() const {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const Entry& entry : entries_) shapes[entry.name] = entry.shape;
  return shapes;
}

const at::Tensor* ParameterRegistry::Find(const std::string& name) const {
  for (const Entry& entry : entries_) {
    if (entry.name == name) return entry.slot;
  }
  return nullptr;
}

int64_t ParameterRegistry::NumElements() const {
  int64_t total = 0;
  for (const Entry& entry : entries_) total += entry.slot->numel();
  return total;
}

ParamScope ParamScope::Sub(const std::string& name) const {
  return ParamScope(registry_,
                    prefix_.empty() ? name : absl::StrCat(prefix_, ".", name));
}

void ParamScope::Declare(const std::string& name, std::vector<int64_t> shape,
                         at::Tensor* slot, ParameterRegistry::Init init) const {
  registry_->Declare(prefix_.empty() ? name : absl::StrCat(prefix_, ".", name),
                     std::move(shape), slot, init);
}

}  // namespace ldm
