// The server process's memory as an operator sees it: resident set size,
// and the limit its container runs under (the figure the kernel's OOM killer
// enforces), read from cgroup v2 or v1.
//
// Example:
//   std::optional<int64_t> limit = ldmserve::CgroupMemoryLimitBytes();
//   if (limit) LOG(INFO) << "memory limit " << *limit;
#ifndef LDMSERVE_SERVER_SERVICE_PROCESS_MEMORY_H_
#define LDMSERVE_SERVER_SERVICE_PROCESS_MEMORY_H_

#include <cstdint>
#include <optional>
#include <string>

namespace ldmserve {

// Resident memory of this process (/proc/self/statm); nullopt where unread.
std::optional<int64_t> ResidentMemoryBytes();

// The machine's memory (/proc/meminfo MemTotal); nullopt where unread.
std::optional<int64_t> PhysicalMemoryBytes();

// The memory limit of the cgroup this process runs in: `memory.max` (v2) or
// `memory/memory.limit_in_bytes` (v1) under `cgroup_root`. nullopt when no
// limit is set ("max", or v1's page-rounded 2^63) or none can be read.
std::optional<int64_t> CgroupMemoryLimitBytes(
    const std::string& cgroup_root = "/sys/fs/cgroup");

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_PROCESS_MEMORY_H_
