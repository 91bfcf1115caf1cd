#include "server/ldm/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

namespace ldm {
namespace {

// Headers are small JSON; a huge one is a corrupt or hostile file.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::StatusOr<at::ScalarType> ParseDtype(const std::string& dtype) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "BF16") return at::kBFloat16;
  if (dtype == "I64") return at::kLong;
  // I32: LitEma's num_updates in every CompVis checkpoint with an EMA.
  if (dtype == "I32") return at::kInt;
  if (dtype == "U8") return at::kByte;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype ", dtype,
                   " (supported: F32, F16, BF16, I64, I32, U8)"));
}

absl::StatusOr<std::string> SafetensorsDtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return std::string("F32");
    case at::kHalf:
      return std::string("F16");
    case at::kBFloat16:
      return std::string("BF16");
    case at::kLong:
      return std::string("I64");
    case at::kInt:
      return std::string("I32");
    case at::kByte:
      return std::string("U8");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write dtype ", c10::toString(dtype)));
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot stat"));
  }
  const uint64_t size = static_cast<uint64_t>(info.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": truncated: ", size, " bytes, no header"));
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED) {
    return absl::InternalError(
        absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  }
  file->mapping_ = mapping;
  file->mapping_size_ = size;
  uint64_t header_size = 0;
  const auto* bytes = static_cast<const uint8_t*>(mapping);
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderBytes || header_size > size - 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header length ", header_size,
                     " exceeds the file (", size, " bytes)"));
  }
  LDM_RETURN_IF_ERROR(file->ParseHeader(header_size));
  file->self_ = file;
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

absl::Status SafetensorsFile::ParseHeader(uint64_t header_size) {
  const auto* bytes = static_cast<const char*>(mapping_);
  data_ = reinterpret_cast<const uint8_t*>(bytes) + 8 + header_size;
  data_size_ = mapping_size_ - 8 - header_size;
  nlohmann::json header = nlohmann::json::parse(
      bytes + 8, bytes + 8 + header_size, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": header is not a JSON object"));
  }
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<const std::string*> range_names;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ": __metadata__ is not an object"));
      }
      for (const auto& [key, text] : value.items()) {
        if (text.is_string()) metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat(path_, ": tensor ", name, ": ");
    if (!value.is_object() || !value.contains("dtype") ||
        !value.contains("shape") || !value.contains("data_offsets") ||
        !value["dtype"].is_string() || !value["shape"].is_array() ||
        !value["data_offsets"].is_array() ||
        value["data_offsets"].size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "entry needs dtype, shape and two data_offsets"));
    }
    SafetensorsEntry entry;
    auto dtype = ParseDtype(value["dtype"].get<std::string>());
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, dtype.status().message()));
    }
    entry.dtype = *dtype;
    uint64_t elements = 1;
    for (const auto& dim : value["shape"]) {
      if (!dim.is_number_unsigned() || dim.get<uint64_t>() > (1ull << 40)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "bad shape ", value["shape"].dump()));
      }
      const uint64_t extent = dim.get<uint64_t>();
      if (extent != 0 &&
          elements > std::numeric_limits<uint64_t>::max() / extent) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "shape overflows"));
      }
      elements *= extent;
      entry.shape.push_back(static_cast<int64_t>(extent));
    }
    const auto& offsets = value["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "data_offsets must be non-negative integers"));
    }
    entry.begin = offsets[0].get<uint64_t>();
    entry.end = offsets[1].get<uint64_t>();
    if (entry.begin > entry.end || entry.end > data_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "data_offsets [", entry.begin, ", ", entry.end,
                       ") outside the data section of ", data_size_, " bytes"));
    }
    const uint64_t expected = elements * c10::elementSize(entry.dtype);
    if (entry.end - entry.begin != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "holds ", entry.end - entry.begin, " bytes, dtype and shape ",
          value["shape"].dump(), " need ", expected));
    }
    auto [it, inserted] = entries_.emplace(name, std::move(entry));
    ranges.emplace_back(it->second.begin, it->second.end);
    range_names.push_back(&it->first);
  }
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto& previous = ranges[order[i - 1]];
    const auto& current = ranges[order[i]];
    if (current.first < previous.second && current.first != current.second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor ", *range_names[order[i]],
                       " overlaps tensor ", *range_names[order[i - 1]]));
    }
  }
  return absl::OkStatus();
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

absl::StatusOr<at::Tensor> SafetensorsFile::Get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor named ", name));
  }
  const SafetensorsEntry& entry = it->second;
  std::shared_ptr<const SafetensorsFile> keep_alive = self_.lock();
  // from_blob wants a mutable pointer; the mapping is MAP_PRIVATE read-only
  // and callers treat the result as read-only.
  void* data = const_cast<uint8_t*>(data_ + entry.begin);
  if (entry.begin == entry.end) {
    return at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
  }
  return at::from_blob(
      data, entry.shape, [keep_alive](void*) {},
      at::TensorOptions().dtype(entry.dtype));
}

void SafetensorsFile::ReleasePages(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  // Only whole pages inside the tensor: neighbours may still be needed.
  uintptr_t begin = reinterpret_cast<uintptr_t>(data_ + it->second.begin);
  uintptr_t end = reinterpret_cast<uintptr_t>(data_ + it->second.end);
  begin = (begin + page - 1) / page * page;
  end = end / page * page;
  if (end > begin) {
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
}

absl::Status WriteSafetensors(
    const std::string& path, const std::map<std::string, at::Tensor>& tensors,
    const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    LDM_ASSIGN_OR_RETURN(std::string dtype,
                         SafetensorsDtypeName(tensor.scalar_type()));
    at::Tensor data = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = data.numel() * data.element_size();
    header[name] = {{"dtype", dtype},
                    {"shape", data.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(data));
  }
  std::string header_text = header.dump();
  // Pad so the data section starts 8-byte aligned, as the reference writer
  // does; readers then can map tensors without copying.
  while ((8 + header_text.size()) % 8 != 0) header_text.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open for writing"));
  }
  uint64_t header_size = header_text.size();
  char length[8];
  for (int i = 0; i < 8; ++i)
    length[i] = static_cast<char>(header_size >> (8 * i));
  out.write(length, 8);
  out.write(header_text.data(),
            static_cast<std::streamsize>(header_text.size()));
  for (const at::Tensor& data : contiguous) {
    out.write(static_cast<const char*>(data.data_ptr()),
              static_cast<std::streamsize>(data.numel() * data.element_size()));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace ldm
