#include "server/service/process_memory.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"

namespace ldmserve {
namespace {

// cgroup v1 reports "no limit" as the largest page-aligned int64; nothing
// real comes near 2^62 bytes.
constexpr int64_t kNoLimitAbove = int64_t{1} << 62;

std::optional<int64_t> ReadLimitFile(const std::string& path) {
  std::ifstream file(path);
  std::string text;
  if (!(file >> text)) return std::nullopt;
  int64_t bytes = 0;
  if (!absl::SimpleAtoi(text, &bytes)) return std::nullopt;  // "max".
  if (bytes <= 0 || bytes >= kNoLimitAbove) return std::nullopt;
  return bytes;
}

}  // namespace

std::optional<int64_t> ResidentMemoryBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0;
  int64_t resident = 0;
  if (!(statm >> pages >> resident)) return std::nullopt;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

std::optional<int64_t> PhysicalMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  // "MemTotal:       16318412 kB", first in the file.
  while (std::getline(meminfo, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kilobytes = 0;
    if (fields >> key >> kilobytes && key == "MemTotal:") {
      return kilobytes * 1024;
    }
  }
  return std::nullopt;
}

std::optional<int64_t> CgroupMemoryLimitBytes(const std::string& cgroup_root) {
  // In a container the cgroup root is the container's own group, which is
  // where Kubernetes puts the limit; v2 first, as current systems mount it.
  if (std::optional<int64_t> v2 = ReadLimitFile(cgroup_root + "/memory.max")) {
    return v2;
  }
  return ReadLimitFile(cgroup_root + "/memory/memory.limit_in_bytes");
}

}  // namespace ldmserve
