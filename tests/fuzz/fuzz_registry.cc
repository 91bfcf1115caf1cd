// The model registry (--models): entries or INVALID_ARGUMENT, never a crash.
// Its paths are only named here; nothing is loaded.
#include <cstdint>

#include "server/runtime/model_registry.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      ldmserve::fuzz::WriteInputFile(data, size, "-registry.json");
  auto entries = ldmserve::ModelRegistry::ReadRegistryFile(path);
  if (!entries.ok()) {
    ldmserve::fuzz::RequireClearStatus(entries.status(),
                                       {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  for (const ldmserve::ModelEntry& entry : *entries) {
    LDM_FUZZ_CHECK(!entry.name.empty());
  }
  return 0;
}
