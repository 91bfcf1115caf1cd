// --devices: what the server accepts, what it refuses (with a line naming
// the item and what the machine has), and how workers are laid out.
#include "server/runtime/devices.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace ldmserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(DevicesTest, ParsesCpuAndIndexedCudaDevices) {
  EXPECT_THAT(*ParseDevices("cpu", 0), ElementsAre("cpu"));
  EXPECT_THAT(*ParseDevices("cuda:0, cuda:1", 2),
              ElementsAre("cuda:0", "cuda:1"));
  EXPECT_THAT(*ParseDevices("cpu,cuda:1", 2), ElementsAre("cpu", "cuda:1"));
}

TEST(DevicesTest, RefusesWhatThisMachineLacksWithOneClearLine) {
  const absl::Status none = ParseDevices("cuda:0", 0).status();
  EXPECT_EQ(none.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.message()),
              HasSubstr("cuda:0 is not available (this LibTorch sees no "
                        "CUDA device; use cpu)"));
  EXPECT_THAT(std::string(ParseDevices("cuda:2", 2).status().message()),
              HasSubstr("cuda:2 is not available (CUDA devices here: cuda:0 "
                        "to cuda:1)"));
  EXPECT_THAT(std::string(ParseDevices("gpu", 1).status().message()),
              HasSubstr("'gpu' is neither cpu nor cuda:N"));
  EXPECT_THAT(std::string(ParseDevices("cuda", 1).status().message()),
              HasSubstr("'cuda' is neither cpu nor cuda:N"));
  EXPECT_THAT(std::string(ParseDevices("cuda:x", 1).status().message()),
              HasSubstr("'cuda:x' is neither"));
  EXPECT_THAT(std::string(ParseDevices("cpu,cpu", 0).status().message()),
              HasSubstr("cpu is listed twice"));
  EXPECT_FALSE(ParseDevices("", 0).ok());
}

TEST(DevicesTest, OneWorkerPerCudaDeviceAndTheAskedNumberOnTheCpu) {
  EXPECT_THAT(WorkerDevices({"cpu"}, 3), ElementsAre("cpu", "cpu", "cpu"));
  EXPECT_THAT(WorkerDevices({"cuda:0", "cpu", "cuda:1"}, 1),
              ElementsAre("cuda:0", "cpu", "cuda:1"));
  EXPECT_THAT(WorkerDevices({"cpu", "cuda:0"}, 0), ElementsAre("cuda:0"));
}

}  // namespace
}  // namespace ldmserve
