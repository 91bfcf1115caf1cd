// A model's config.json: a config or INVALID_ARGUMENT, never a crash.
#include <cstdint>
#include <string>

#include "server/ldm/model_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<ldm::ModelConfig> config = ldm::ParseModelConfig(
      std::string(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) {
    ldmserve::fuzz::RequireClearStatus(config.status(),
                                       {absl::StatusCode::kInvalidArgument});
  }
  return 0;
}
