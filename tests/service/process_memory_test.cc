#include "server/service/process_memory.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace ldmserve {
namespace {

// A cgroup tree of our own under the test's temporary directory.
class CgroupMemoryLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    root_ = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
            ("cgroup_test_" + std::to_string(getpid()));
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ / "memory");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Write(const std::string& relative, const std::string& text) {
    std::ofstream(root_ / relative) << text;
  }

  std::filesystem::path root_;
};

TEST_F(CgroupMemoryLimitTest, ReadsTheV2Limit) {
  Write("memory.max", "8589934592\n");
  EXPECT_EQ(CgroupMemoryLimitBytes(root_.string()), 8589934592);
}

TEST_F(CgroupMemoryLimitTest, V2WithoutALimitFallsBackToV1) {
  Write("memory.max", "max\n");
  EXPECT_EQ(CgroupMemoryLimitBytes(root_.string()), std::nullopt);
  Write("memory/memory.limit_in_bytes", "4294967296\n");
  EXPECT_EQ(CgroupMemoryLimitBytes(root_.string()), 4294967296);
}

TEST_F(CgroupMemoryLimitTest, V1UnlimitedIsNoLimit) {
  // v1 says "unlimited" with the largest page-aligned int64.
  Write("memory/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(CgroupMemoryLimitBytes(root_.string()), std::nullopt);
}

TEST_F(CgroupMemoryLimitTest, NoCgroupFilesIsNoLimit) {
  EXPECT_EQ(CgroupMemoryLimitBytes((root_ / "absent").string()), std::nullopt);
}

TEST(ResidentMemoryTest, ReadsAPlausibleFigure) {
  const std::optional<int64_t> resident = ResidentMemoryBytes();
  ASSERT_TRUE(resident.has_value());
  // A running test binary with LibTorch loaded holds at least a megabyte
  // and, on any CI machine, under a terabyte.
  EXPECT_GT(*resident, int64_t{1} << 20);
  EXPECT_LT(*resident, int64_t{1} << 40);
}

}  // namespace
}  // namespace ldmserve
