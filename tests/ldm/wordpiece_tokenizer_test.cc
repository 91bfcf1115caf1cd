// BERT's WordPiece tokenization on a vocabulary the test writes: the basic
// tokenizer's clean-up (case, accents, punctuation, CJK, control
// characters) and greedy longest-match pieces, with the examples BERT's own
// documentation gives.
#include "server/ldm/wordpiece_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace ldm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Ids are line numbers: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, then these.
const std::vector<std::string>& Vocab() {
  static const auto* vocab = new std::vector<std::string>{
      "[PAD]", "[UNK]", "[CLS]",  "[SEP]",  "un",   "##aff", "##able",
      "a",     "red",   "circle", "##s",    "cafe", ",",     "!",
      "中",    "文",    "run",    "##ning", "##n",  "x"};
  return *vocab;
}

int64_t Id(const std::string& token) {
  const auto& vocab = Vocab();
  return std::find(vocab.begin(), vocab.end(), token) - vocab.begin();
}

class WordPieceTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One file per test: CTest runs the tests of this fixture as parallel
    // processes, and a shared name let one truncate it while another read.
    path_ =
        (std::filesystem::path(::testing::TempDir()) /
         (std::string(
              ::testing::UnitTest::GetInstance()->current_test_info()->name()) +
          "-vocab.txt"))
            .string();
    std::ofstream out(path_);
    for (const std::string& token : Vocab()) out << token << "\n";
    out.close();
    auto loaded = WordPieceTokenizer::Load(path_);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = std::move(*loaded);
  }

  void TearDown() override { std::filesystem::remove(path_); }

  std::string path_;
  std::unique_ptr<WordPieceTokenizer> tokenizer_;
};

TEST_F(WordPieceTokenizerTest, GreedyLongestMatchWithContinuations) {
  // BERT's docstring example: "unaffable" -> un ##aff ##able.
  EXPECT_THAT(tokenizer_->Encode("unaffable"),
              ElementsAre(Id("un"), Id("##aff"), Id("##able")));
  // "running": "run" + "##ning", not "run" + "##n" + ...
  EXPECT_THAT(tokenizer_->Encode("running circles"),
              ElementsAre(Id("run"), Id("##ning"), Id("circle"), Id("##s")));
  // One piece missing makes the whole word [UNK], not a partial match.
  EXPECT_THAT(tokenizer_->Encode("redx red"),
              ElementsAre(Id("[UNK]"), Id("red")));
  EXPECT_THAT(tokenizer_->Encode(std::string(101, 'x')),
              ElementsAre(Id("[UNK]")));
}

TEST_F(WordPieceTokenizerTest, BasicTokenizerCleansAndSplits) {
  EXPECT_THAT(tokenizer_->BasicTokenize("  A Red\tCIRCLE,Café!\x07"),
              ElementsAre("a", "red", "circle", ",", "cafe", "!"));
  // ASCII symbols are punctuation; CJK ideographs are words of their own.
  EXPECT_THAT(tokenizer_->BasicTokenize("$5 中文x"),
              ElementsAre("$", "5", "中", "文", "x"));
  EXPECT_THAT(tokenizer_->Encode("Café 中文"),
              ElementsAre(Id("cafe"), Id("中"), Id("文")));
}

TEST_F(WordPieceTokenizerTest, PaddedAddsClsSepPadsAndTruncates) {
  auto padded = tokenizer_->EncodePadded("a red circle", 6);
  EXPECT_THAT(padded.ids, ElementsAre(Id("[CLS]"), Id("a"), Id("red"),
                                      Id("circle"), Id("[SEP]"), Id("[PAD]")));
  EXPECT_FALSE(padded.truncated);
  padded = tokenizer_->EncodePadded("a red red red circle", 5);
  EXPECT_THAT(padded.ids, ElementsAre(Id("[CLS]"), Id("a"), Id("red"),
                                      Id("red"), Id("[SEP]")));
  EXPECT_TRUE(padded.truncated);
}

TEST_F(WordPieceTokenizerTest, VocabularyWithoutSpecialTokensIsRefused) {
  const std::string bad =
      (std::filesystem::path(::testing::TempDir()) / "bad-vocab.txt").string();
  std::ofstream(bad) << "[PAD]\n[UNK]\nred\n";
  auto loaded = WordPieceTokenizer::Load(bad);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("no [CLS] token"));
  EXPECT_FALSE(WordPieceTokenizer::Load(bad + ".missing").ok());
}

}  // namespace
}  // namespace ldm
