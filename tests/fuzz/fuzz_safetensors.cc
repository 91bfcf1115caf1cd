// A checkpoint's bytes through the safetensors reader: the header (JSON,
// dtypes, shapes, offsets) is validated before any tensor is touched, so a
// file either opens with every tensor inside the data section or gives
// INVALID_ARGUMENT. Every tensor of an opened file is read in full.
#include <cstdint>

#include "server/ldm/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      ldmserve::fuzz::WriteInputFile(data, size, ".safetensors");
  auto file = ldm::SafetensorsFile::Open(path);
  if (!file.ok()) {
    ldmserve::fuzz::RequireClearStatus(file.status(),
                                       {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  for (const auto& [name, entry] : (*file)->entries()) {
    absl::StatusOr<at::Tensor> tensor = (*file)->Get(name);
    LDM_FUZZ_CHECK(tensor.ok());
    LDM_FUZZ_CHECK(static_cast<uint64_t>(tensor->nbytes()) ==
                   entry.end - entry.begin);
    // Touch every byte: an offset outside the mapping shows here.
    const auto* bytes = static_cast<const uint8_t*>(tensor->data_ptr());
    unsigned int sum = 0;
    for (int64_t i = 0; i < tensor->nbytes(); ++i) sum += bytes[i];
    (void)sum;
  }
  return 0;
}
