// What LibTorch's CUDA caching allocator holds on a device: the figures a
// server reports as its GPU memory (tensors in use, and what the allocator
// keeps reserved from the driver, which is what other processes cannot
// have).
//
// Thread-safe (the allocator keeps its own lock).
//
// Example:
//   absl::StatusOr<ldm::DeviceMemory> memory =
//       ldm::CudaMemory(at::Device("cuda:0"));
//   if (memory.ok()) LOG(INFO) << memory->reserved_bytes;
#ifndef LDMSERVE_SERVER_LDM_DEVICE_MEMORY_H_
#define LDMSERVE_SERVER_LDM_DEVICE_MEMORY_H_

#include <c10/core/Device.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ldm {

struct DeviceMemory {
  int64_t allocated_bytes = 0;  // In live tensors now.
  int64_t reserved_bytes = 0;   // Taken from the driver (allocated + cache).
  int64_t peak_allocated_bytes = 0;  // Since the start or the last reset.
  int64_t peak_reserved_bytes = 0;
  int64_t total_bytes = 0;  // The device's memory, as the driver reports it.
};

// True when this build can read CUDA memory (LibTorch with CUDA found at
// build time); the functions below are UNIMPLEMENTED otherwise.
bool CanReadCudaMemory();

// The caching allocator's figures for `device` (a CUDA device).
// INVALID_ARGUMENT for another device, UNIMPLEMENTED in a build without
// CUDA.
absl::StatusOr<DeviceMemory> CudaMemory(const c10::Device& device);

// Starts the peaks over from the current figures.
absl::Status ResetCudaMemoryPeaks(const c10::Device& device);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_DEVICE_MEMORY_H_
