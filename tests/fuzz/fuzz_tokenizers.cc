// Prompt bytes (any, not only UTF-8) through the tokenizers: SD v1's CLIP
// BPE (the shipped vocabulary), the shapes models' word tokenizer and BERT's
// WordPiece (a small vocabulary): always the padded length, ids in range.
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include "server/ldm/clip_tokenizer.h"
#include "server/ldm/model_config.h"
#include "server/ldm/text_encoder.h"
#include "server/ldm/wordpiece_tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

struct Tokenizers {
  std::unique_ptr<ldm::ClipTokenizer> clip;
  std::unique_ptr<ldm::WordTokenizer> word;
  int64_t word_vocab = 0;
  std::unique_ptr<ldm::WordPieceTokenizer> wordpiece;
};

const Tokenizers& Load() {
  static const Tokenizers* tokenizers = [] {
    auto* loaded = new Tokenizers;
    const std::string root = ldmserve::fuzz::SourceDir();
    loaded->clip =
        ldm::ClipTokenizer::Load(root + "/models/configs/tokenizer").value();
    auto config = ldm::ParseModelConfig(
        ldm::ReadTextFile(root + "/models/shapes-txt2img/config.json").value());
    const ldm::TextEncoderConfig& text = config.value().text_encoder.value();
    loaded->word_vocab = static_cast<int64_t>(text.vocab.size());
    loaded->word = std::make_unique<ldm::WordTokenizer>(text.vocab, 16);
    const std::string vocab_path = ldmserve::fuzz::WriteInputFile(
        reinterpret_cast<const uint8_t*>(""), 0, "-vocab.txt");
    std::ofstream(vocab_path) << "[PAD]\n[UNK]\n[CLS]\n[SEP]\nred\ncircle\n"
                                 "##s\nblue\n##ish\na\n.\n,\n";
    loaded->wordpiece = ldm::WordPieceTokenizer::Load(vocab_path).value();
    return loaded;
  }();
  return *tokenizers;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizers& tokenizers = Load();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const ldm::ClipTokenizer::Padded clip = tokenizers.clip->EncodePadded(text);
  LDM_FUZZ_CHECK(clip.ids.size() ==
                 static_cast<size_t>(ldm::ClipTokenizer::kContextLength));
  for (int64_t id : clip.ids) {
    LDM_FUZZ_CHECK(id >= 0 && id <= ldm::ClipTokenizer::kEndId);
  }
  const ldm::WordTokenizer::Encoding words = tokenizers.word->Encode(text);
  LDM_FUZZ_CHECK(words.ids.size() == 16);
  for (int64_t id : words.ids) {
    LDM_FUZZ_CHECK(id >= 0 && id < tokenizers.word_vocab);
  }
  const ldm::WordPieceTokenizer::Padded pieces =
      tokenizers.wordpiece->EncodePadded(text, 16);
  LDM_FUZZ_CHECK(pieces.ids.size() == 16);
  for (int64_t id : pieces.ids) {
    LDM_FUZZ_CHECK(id >= 0 && id < tokenizers.wordpiece->vocab_size());
  }
  return 0;
}
