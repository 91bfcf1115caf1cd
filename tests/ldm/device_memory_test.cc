#include "server/ldm/device_memory.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace ldm {
namespace {

TEST(DeviceMemoryTest, RefusesTheCpuAndSaysWhy) {
  const absl::StatusOr<DeviceMemory> memory = CudaMemory(c10::Device("cpu"));
  ASSERT_FALSE(memory.ok());
  EXPECT_EQ(memory.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(memory.status().message().find("not a CUDA device"),
            std::string::npos)
      << memory.status();
}

TEST(DeviceMemoryTest, ABuildWithoutCudaSaysSo) {
  if (CanReadCudaMemory()) GTEST_SKIP() << "this build reads CUDA memory";
  const absl::StatusOr<DeviceMemory> memory = CudaMemory(c10::Device("cuda:0"));
  EXPECT_EQ(memory.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ResetCudaMemoryPeaks(c10::Device("cuda:0")).code(),
            absl::StatusCode::kUnimplemented);
}

// Runs where LibTorch has CUDA and sees a GPU (the GPU machine's script).
TEST(DeviceMemoryTest, CountsATensorOnTheGpu) {
  if (!CanReadCudaMemory() || !at::hasCUDA()) {
    GTEST_SKIP() << "no CUDA here";
  }
  const c10::Device gpu("cuda:0");
  // Before any tensor is on the GPU: LibTorch's allocator is set up lazily.
  const absl::Status reset = ResetCudaMemoryPeaks(gpu);
  ASSERT_TRUE(reset.ok()) << reset;
  const absl::StatusOr<DeviceMemory> before = CudaMemory(gpu);
  ASSERT_TRUE(before.ok()) << before.status();
  constexpr int64_t kBytes = int64_t{64} << 20;
  {
    const at::Tensor block =
        at::empty({kBytes}, at::TensorOptions().device(gpu).dtype(at::kByte));
    const absl::StatusOr<DeviceMemory> during = CudaMemory(gpu);
    ASSERT_TRUE(during.ok()) << during.status();
    EXPECT_GE(during->allocated_bytes - before->allocated_bytes, kBytes);
    EXPECT_GE(during->reserved_bytes, during->allocated_bytes);
    EXPECT_GE(during->peak_allocated_bytes, during->allocated_bytes);
  }
  const absl::StatusOr<DeviceMemory> after = CudaMemory(gpu);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->allocated_bytes, before->allocated_bytes);
  // The caching allocator keeps the freed block reserved, and the peak.
  EXPECT_GE(after->reserved_bytes, kBytes);
  EXPECT_GE(after->peak_allocated_bytes - before->allocated_bytes, kBytes);
  ASSERT_TRUE(ResetCudaMemoryPeaks(gpu).ok());
  EXPECT_LT(CudaMemory(gpu)->peak_allocated_bytes,
            before->allocated_bytes + kBytes);
}

}  // namespace
}  // namespace ldm
