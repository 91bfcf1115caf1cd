// BERT's WordPiece tokenizer (bert-base-uncased, as the paper's
// text-to-image LDM encodes its prompts through HF's BertTokenizerFast),
// loaded from a model's `vocab.txt` (one token per line, id = line number).
//
// Encode(): BERT's basic tokenization (control characters dropped,
// whitespace split, CJK ideographs split apart, lower-cased, accents
// stripped after NFD, punctuation split off), then greedy longest-match
// WordPiece with "##" continuations; a word of more than 100 characters or
// with no segmentation is [UNK]. Padded() gives what the paper's
// BERTTokenizer feeds its encoder: [CLS] ids [SEP], truncated to
// `length`, padded with [PAD].
//
// Immutable after Load(); Encode() is thread-safe.
#ifndef LDMSERVE_SERVER_LDM_WORDPIECE_TOKENIZER_H_
#define LDMSERVE_SERVER_LDM_WORDPIECE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace ldm {

class WordPieceTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Load(
      const std::string& vocab_path);

  // The WordPiece ids of `text`, without [CLS]/[SEP].
  std::vector<int64_t> Encode(const std::string& text) const;

  struct Padded {
    std::vector<int64_t> ids;  // `length` ids.
    bool truncated = false;    // Ids were dropped to fit.
  };
  Padded EncodePadded(const std::string& text, int64_t length) const;

  // BERT's basic tokenization: the words WordPiece then splits.
  std::vector<std::string> BasicTokenize(const std::string& text) const;

  int64_t pad_id() const { return pad_id_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }

 private:
  WordPieceTokenizer() = default;

  std::unordered_map<std::string, int64_t> vocab_;
  int64_t unknown_id_ = 0, start_id_ = 0, end_id_ = 0, pad_id_ = 0;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_WORDPIECE_TOKENIZER_H_
