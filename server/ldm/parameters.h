// A flat registry of a model's parameters under their reference checkpoint
// names (CompVis `state_dict()` keys such as
// "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight").
//
// Layers declare each parameter with its name and shape while the model is
// being built; the registry then fills them all from a checkpoint (strict:
// missing, unexpected and mis-shaped keys are reported by name), from a seeded
// random initialisation, or moves them to another device and dtype. The
// tensors live in the layers themselves; the registry holds pointers to them,
// so a model must not be moved or copied after it has declared its parameters
// (models are held by unique_ptr).
//
// Not thread-safe while loading; a loaded model is read-only and may be used
// by several threads at once.
#ifndef LDMSERVE_SERVER_LDM_PARAMETERS_H_
#define LDMSERVE_SERVER_LDM_PARAMETERS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/ldm/checkpoint.h"

namespace ldm {

class ParameterRegistry {
 public:
  // How a parameter is initialised when no checkpoint is loaded.
  enum class Init { kFanIn, kOnes, kZeros };

  // Parameters are declared on `device`: the meta device lists a model's
  // parameters without allocating them.
  explicit ParameterRegistry(at::Device device = at::kCPU) : device_(device) {}

  // Declares the tensor at `slot` as parameter `name` with `shape`. The slot is
  // set to a zero tensor of that shape right away.
  void Declare(const std::string& name, std::vector<int64_t> shape,
               at::Tensor* slot, Init init = Init::kFanIn);

  // Copies every declared parameter from `file`, looking each up as
  // `prefix + name`, converting to the parameter's current dtype. Keys of the
  // file under `prefix` that no parameter claims and `is_known_extra` does not
  // accept (schedule buffers, say) are unexpected; with `strict` they are an
  // error.
  //
  // Each tensor is copied straight onto `device` in `dtype_for(name)` and its
  // pages of the mapping are released at once, so loading needs about the
  // parameters' bytes, not twice that.
  //
  // `key_for`, when given, maps `prefix + name` to the key actually read (an
  // EMA copy under other names, say).
  using DtypeForName = std::function<at::ScalarType(const std::string& name)>;
  absl::Status LoadFrom(
      const Checkpoint& file, const std::string& prefix, bool strict,
      const std::function<bool(const std::string&)>& is_known_extra,
      at::Device device, const DtypeForName& dtype_for,
      const std::function<std::string(const std::string&)>& key_for = {});

  // Deterministic random weights (fan-in scaled normal, norms at 1/0) from
  // `seed`: every layer matters, so untrained models still exercise all code.
  void InitRandom(uint64_t seed);

  // Moves every parameter to `device` and casts it to `dtype`
  // (`dtype_for(name)`).
  void To(at::Device device, at::ScalarType dtype);
  void To(at::Device device, const DtypeForName& dtype_for);

  // name -> tensor, for saving.
  std::map<std::string, at::Tensor> Named(const std::string& prefix) const;
  // name -> shape.
  std::map<std::string, std::vector<int64_t>> Shapes() const;

  int64_t NumElements() const;
  size_t size() const { return entries_.size(); }
  // The parameter declared as `name` (its slot in its layer), or null.
  const at::Tensor* Find(const std::string& name) const;

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    at::Tensor* slot;
    Init init;
  };
  at::Device device_;
  std::vector<Entry> entries_;
};

// Scopes parameter names: Scope(registry, "encoder").Sub("down").Sub(0)
// declares "encoder.down.0.<name>".
class ParamScope {
 public:
  ParamScope(ParameterRegistry* registry, std::string prefix)
      : registry_(registry), prefix_(std::move(prefix)) {}

  ParamScope Sub(const std::string& name) const;
  ParamScope Sub(int index) const { return Sub(std::to_string(index)); }
  void Declare(
      const std::string& name, std::vector<int64_t> shape, at::Tensor* slot,
      ParameterRegistry::Init init = ParameterRegistry::Init::kFanIn) const;
  ParameterRegistry* registry() const { return registry_; }

 private:
  ParameterRegistry* registry_;
  std::string prefix_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_PARAMETERS_H_
