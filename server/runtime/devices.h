// The devices a server runs workers on (--devices).
//
// Example:
//   LDM_ASSIGN_OR_RETURN(std::vector<std::string> devices,
//                        ParseDevices("cuda:0,cuda:1", CudaDeviceCount()));
//   options.worker_devices = WorkerDevices(devices, /*cpu_workers=*/2);
#ifndef LDMSERVE_SERVER_RUNTIME_DEVICES_H_
#define LDMSERVE_SERVER_RUNTIME_DEVICES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ldmserve {

// The CUDA devices this process's LibTorch sees (0 in a CPU-only build).
int CudaDeviceCount();

// Parses a comma-separated list of "cpu" and "cuda:N" (N below
// `cuda_devices`), each at most once. INVALID_ARGUMENT names the item and
// what this machine has.
absl::StatusOr<std::vector<std::string>> ParseDevices(absl::string_view list,
                                                      int cuda_devices);

// One worker per CUDA device, `cpu_workers` for "cpu".
std::vector<std::string> WorkerDevices(const std::vector<std::string>& devices,
                                       int cpu_workers);

// The LibTorch this binary was built against, e.g. "1.13.0".
std::string LibTorchVersion();

struct DeviceMemoryReading {
  int64_t allocated_bytes = 0;  // In live tensors.
  int64_t reserved_bytes = 0;   // Held by LibTorch's caching allocator.
  int64_t total_bytes = 0;      // The device's memory.
};

// A CUDA device's memory ("cuda:N", as ParseDevices gives it); an error for
// the CPU or where this LibTorch cannot read it.
absl::StatusOr<DeviceMemoryReading> ReadDeviceMemory(const std::string& device);

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_RUNTIME_DEVICES_H_
