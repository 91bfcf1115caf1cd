// Reading and writing the safetensors checkpoint format
// (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header mapping tensor names to dtype, shape and byte range,
// then the raw data.
//
// SafetensorsFile memory-maps the file and validates the whole header before
// any tensor is touched: every byte range lies inside the data section, ranges
// do not overlap, sizes match dtype x shape, and only F32/F16/BF16 (plus I64,
// U8 for auxiliary tensors) are accepted. A corrupt file gives an
// INVALID_ARGUMENT naming the tensor; it never crashes.
//
// Tensors returned by Get() alias the mapping and keep it alive. The object is
// immutable after Open() and safe to share between threads.
//
// Example:
//   LDM_ASSIGN_OR_RETURN(auto file, ldm::SafetensorsFile::Open(path));
//   LDM_ASSIGN_OR_RETURN(at::Tensor w, file->Get("encoder.conv_in.weight"));
#ifndef LDMSERVE_SERVER_LDM_SAFETENSORS_H_
#define LDMSERVE_SERVER_LDM_SAFETENSORS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ldm {

struct SafetensorsEntry {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // Offsets relative to the start of the data section.
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(
      const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const {
    return entries_;
  }
  // The `__metadata__` string map of the header.
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  bool Contains(const std::string& name) const {
    return entries_.count(name) > 0;
  }
  // A CPU tensor aliasing the mapped bytes (read-only: clone before writing).
  absl::StatusOr<at::Tensor> Get(const std::string& name) const;
  // Tells the kernel the tensor's pages are not needed now (they are read
  // back from the file if used again): a loader calls it once it has copied
  // the tensor, so the mapping does not double the process's memory.
  void ReleasePages(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader(uint64_t header_size);

  std::string path_;
  void* mapping_ = nullptr;
  uint64_t mapping_size_ = 0;
  const uint8_t* data_ = nullptr;  // Start of the data section.
  uint64_t data_size_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
  // Keeps the mapping alive while tensors from Get() exist.
  std::weak_ptr<const SafetensorsFile> self_;
};

// Writes `tensors` (contiguous CPU copies are made as needed) in name order.
absl::Status WriteSafetensors(
    const std::string& path, const std::map<std::string, at::Tensor>& tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_SAFETENSORS_H_
