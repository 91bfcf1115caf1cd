#include "server/ldm/device_memory.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "server/ldm/torch_boundary.h"

#if defined(LDMSERVE_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace ldm {
namespace {

absl::Status CheckCuda(const c10::Device& device) {
  if (!device.is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device memory: ", device.str(), " is not a CUDA device"));
  }
  if (!CanReadCudaMemory()) {
    return absl::UnimplementedError(
        "device memory: this build's LibTorch has no CUDA");
  }
  return absl::OkStatus();
}

#if defined(LDMSERVE_WITH_CUDA)
// "cuda" names the first device, as LibTorch reads it.
c10::DeviceIndex IndexOf(const c10::Device& device) {
  return device.has_index() ? device.index() : 0;
}

// LibTorch sets its CUDA allocator up with the first CUDA tensor; until
// then its statistics calls throw ("not initialized"). An empty tensor
// does it, allocating nothing.
void InitCudaAllocator(const c10::Device& device) {
  (void)at::empty({0}, at::TensorOptions().device(c10::Device(
                           c10::DeviceType::CUDA, IndexOf(device))));
}
#endif

}  // namespace

bool CanReadCudaMemory() {
#if defined(LDMSERVE_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

absl::StatusOr<DeviceMemory> CudaMemory(const c10::Device& device) {
  if (absl::Status usable = CheckCuda(device); !usable.ok()) return usable;
#if defined(LDMSERVE_WITH_CUDA)
  return CallTorch("device memory", [&]() -> DeviceMemory {
    InitCudaAllocator(device);
    const auto stats =
        c10::cuda::CUDACachingAllocator::getDeviceStats(IndexOf(device));
    // Index 0 of every StatArray is the aggregate over the pools.
    // cudaMemGetInfo reads the current device; the guard sets it back.
    const c10::cuda::CUDAGuard guard(IndexOf(device));
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const auto total = static_cast<int64_t>(total_bytes);
    return {stats.allocated_bytes[0].current, stats.reserved_bytes[0].current,
            stats.allocated_bytes[0].peak, stats.reserved_bytes[0].peak, total};
  });
#else
  return absl::UnimplementedError("unreachable");
#endif
}

absl::Status ResetCudaMemoryPeaks(const c10::Device& device) {
  if (absl::Status usable = CheckCuda(device); !usable.ok()) return usable;
#if defined(LDMSERVE_WITH_CUDA)
  return CallTorchStatus("device memory reset", [&] {
    InitCudaAllocator(device);
    c10::cuda::CUDACachingAllocator::resetPeakStats(IndexOf(device));
    return absl::OkStatus();
  });
#else
  return absl::UnimplementedError("unreachable");
#endif
}

}  // namespace ldm
