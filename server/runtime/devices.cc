#include "server/runtime/devices.h"

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/ldm/device_memory.h"
#include "server/ldm/torch_boundary.h"

namespace ldmserve {

std::string LibTorchVersion() { return TORCH_VERSION; }

int CudaDeviceCount() {
  return at::hasCUDA() ? at::detail::getCUDAHooks().getNumGPUs() : 0;
}

absl::StatusOr<std::vector<std::string>> ParseDevices(absl::string_view list,
                                                      int cuda_devices) {
  const std::string available =
      cuda_devices == 0 ? "this LibTorch sees no CUDA device; use cpu"
                        : absl::StrCat("CUDA devices here: cuda:0 to cuda:",
                                       cuda_devices - 1);
  std::vector<std::string> devices;
  for (absl::string_view item : absl::StrSplit(list, ',')) {
    item = absl::StripAsciiWhitespace(item);
    const absl::string_view asked = item;
    int index = -1;
    if (absl::ConsumePrefix(&item, "cuda:") && absl::SimpleAtoi(item, &index) &&
        index >= 0) {
      if (index >= cuda_devices) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--devices: cuda:", index, " is not available (", available, ")"));
      }
    } else if (item != "cpu") {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: '", asked, "' is neither cpu nor cuda:N (",
                       available, ")"));
    }
    std::string device = index >= 0 ? absl::StrCat("cuda:", index) : "cpu";
    if (std::find(devices.begin(), devices.end(), device) != devices.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: ", device, " is listed twice"));
    }
    devices.push_back(std::move(device));
  }
  return devices;
}

std::vector<std::string> WorkerDevices(const std::vector<std::string>& devices,
                                       int cpu_workers) {
  std::vector<std::string> workers;
  for (const std::string& device : devices) {
    workers.insert(workers.end(), device == "cpu" ? cpu_workers : 1, device);
  }
  return workers;
}

absl::StatusOr<DeviceMemoryReading> ReadDeviceMemory(
    const std::string& device) {
  if (device == "cpu") {
    return absl::InvalidArgumentError("the CPU's memory is the process's");
  }
  absl::StatusOr<c10::Device> parsed =
      ldm::CallTorch("device", [&] { return c10::Device(device); });
  if (!parsed.ok()) return parsed.status();
  absl::StatusOr<ldm::DeviceMemory> memory = ldm::CudaMemory(*parsed);
  if (!memory.ok()) return memory.status();
  return DeviceMemoryReading{memory->allocated_bytes, memory->reserved_bytes,
                             memory->total_bytes};
}

}  // namespace ldmserve
