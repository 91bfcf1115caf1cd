// The CLIP tokenizer against the reference's ids for hard prompts
// (../shared/golden/clip/tokens.json: unicode, contractions, digits,
// special-token text, truncation at 75 BPE ids).
#include "server/ldm/clip_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/ldm/model_config.h"
#include "tests/ldm/test_util.h"

namespace ldm {
namespace {

TEST(ClipTokenizerTest, ReproducesTheReferenceIdsForEveryPrompt) {
  const std::string dir = testing::GoldenDir() + "/clip";
  if (!std::filesystem::exists(dir + "/tokens.json")) {
    GTEST_SKIP() << "no " << dir << "/tokens.json";
  }
  auto tokenizer = ClipTokenizer::Load(dir + "/tokenizer");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const nlohmann::json golden =
      nlohmann::json::parse(*ReadTextFile(dir + "/tokens.json"));
  ASSERT_GE(golden["prompts"].size(), 40u);
  for (const nlohmann::json& prompt : golden["prompts"]) {
    const std::string text = prompt["text"].get<std::string>();
    SCOPED_TRACE(prompt["name"].get<std::string>() + ": " + text);
    EXPECT_EQ((*tokenizer)->PreTokenize(text),
              prompt["pretokens"].get<std::vector<std::string>>());
    EXPECT_EQ((*tokenizer)->Encode(text),
              prompt["bpe_ids"].get<std::vector<int64_t>>());
    const ClipTokenizer::Padded padded = (*tokenizer)->EncodePadded(text);
    EXPECT_EQ(padded.ids, prompt["input_ids"].get<std::vector<int64_t>>());
    EXPECT_EQ(padded.truncated, prompt["truncated"].get<bool>());
  }
}

TEST(ClipTokenizerTest, RefusesADirectoryWithoutTokenizerFiles) {
  auto tokenizer = ClipTokenizer::Load(::testing::TempDir());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ldm
