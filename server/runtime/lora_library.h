// The LoRA adapters a server offers: the safetensors files of one folder
// (ldmserve --lora-dir), each named by its file name without
// ".safetensors". An adapter is read on first use and kept for the next,
// the most recently used first, within a memory budget.
//
// Thread-safety: all methods are thread-safe; a file is read outside the
// lock (two first uses at once may both read it).
//
// Example:
//   LoraLibrary library("/models/loras", 1 << 30);
//   LDM_ASSIGN_OR_RETURN(spec.loras, library.Resolve(spec.loras, *model));
#ifndef LDMSERVE_SERVER_RUNTIME_LORA_LIBRARY_H_
#define LDMSERVE_SERVER_RUNTIME_LORA_LIBRARY_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/runtime/job.h"

namespace ldm {
class LatentDiffusion;
}  // namespace ldm

namespace ldmserve {

class LoraLibrary {
 public:
  // An empty `folder`: no adapters (Resolve refuses any).
  LoraLibrary(std::string folder, int64_t cache_bytes);

  bool enabled() const { return !folder_.empty(); }

  // `loras` (names and weights, as ValidateRequest left them) with their
  // adapters, read and checked against `model`: FAILED_PRECONDITION without
  // a folder, NOT_FOUND for a name not in it, INVALID_ARGUMENT (naming
  // loras[i]) for a file that is not a LoRA or does not fit the model.
  absl::StatusOr<std::vector<LoraUse>> Resolve(
      std::vector<LoraUse> loras, const ldm::LatentDiffusion& model)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The adapters in the folder, by name.
  std::vector<std::string> Names() const;

 private:
  absl::StatusOr<std::shared_ptr<const ldm::LoraAdapter>> Get(
      const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string folder_;
  const int64_t cache_bytes_;
  absl::Mutex mu_;
  // Most recently used first.
  std::list<std::pair<std::string, std::shared_ptr<const ldm::LoraAdapter>>>
      cache_ ABSL_GUARDED_BY(mu_);
  int64_t cached_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_RUNTIME_LORA_LIBRARY_H_
