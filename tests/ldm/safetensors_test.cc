#include "server/ldm/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace ldm {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name;
}

void WriteRaw(const std::string& path, const std::string& header,
              const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(size >> (8 * i)));
  out << header << data;
}

TEST(SafetensorsTest, RoundTripsEveryDtype) {
  const std::string path = TempPath("roundtrip.safetensors");
  std::map<std::string, at::Tensor> tensors = {
      {"f32", at::arange(6, at::kFloat).reshape({2, 3})},
      {"f16", at::arange(4, at::kFloat).to(at::kHalf)},
      {"bf16", at::arange(4, at::kFloat).to(at::kBFloat16)},
      {"i64", at::arange(3, at::kLong)},
      {"scalar", at::tensor(0.5f).reshape({})},
  };
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"config", "{}"}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("config"), "{}");
  for (const auto& [name, tensor] : tensors) {
    auto loaded = (*file)->Get(name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->scalar_type(), tensor.scalar_type()) << name;
    EXPECT_TRUE(at::equal(*loaded, tensor)) << name;
  }
}

TEST(SafetensorsTest, TensorsOutliveTheFileObject) {
  const std::string path = TempPath("alive.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"x", at::ones({1000})}}).ok());
  at::Tensor kept;
  {
    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok());
    kept = *(*file)->Get("x");
  }
  EXPECT_EQ(kept.sum().item<float>(), 1000.0f);
}

TEST(SafetensorsTest, TruncatedFileIsAClearError) {
  const std::string path = TempPath("truncated.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"weight", at::ones({64})}}).ok());
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      << bytes.substr(0, bytes.size() - 10);
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("weight"));
}

TEST(SafetensorsTest, RejectsBadHeaders) {
  struct Case {
    std::string header;
    std::string data;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"not json", "", "not a JSON object"},
      {R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
       std::string(8, '\0'), "unsupported dtype F64"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
       std::string(4, '\0'), "need 8"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}})",
       std::string(4, '\0'), "outside the data section"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       std::string(12, '\0'), "overlaps"},
      {R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
       std::string(4, '\0'), "bad shape"},
  };
  for (const Case& c : cases) {
    const std::string path = TempPath("bad.safetensors");
    WriteRaw(path, c.header, c.data);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << c.header;
    EXPECT_THAT(file.status().message(), HasSubstr(c.expected)) << c.header;
  }
}

TEST(SafetensorsTest, HeaderLengthBeyondFileIsRejected) {
  const std::string path = TempPath("huge.safetensors");
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(0xff));
  out.close();
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(file.status().message(), HasSubstr("exceeds the file"));
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open(TempPath("does-not-exist"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ldm
