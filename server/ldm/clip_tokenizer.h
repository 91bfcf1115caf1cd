// CLIP's byte-level BPE tokenizer (OpenAI `simple_tokenizer.py`, as Stable
// Diffusion v1 uses it), loaded from a model's `tokenizer/vocab.json` and
// `merges.txt`.
//
// Encode(): clean (whitespace collapsed, stripped, full Unicode lower-case;
// ftfy and HTML unescaping are not applied), split with CLIP's pattern
// (special tokens, contractions, letter runs, single numbers, other runs),
// map UTF-8 bytes to their stand-in characters, apply the merges by rank and
// look the symbols up. Padded() gives the 77 ids SD v1 feeds its text
// encoder: [49406] + ids[:75] + [49407], padded with 49407.
//
// Immutable after Load(); Encode() is thread-safe.
#ifndef LDMSERVE_SERVER_LDM_CLIP_TOKENIZER_H_
#define LDMSERVE_SERVER_LDM_CLIP_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace ldm {

class ClipTokenizer {
 public:
  static constexpr int64_t kStartId = 49406;
  static constexpr int64_t kEndId = 49407;
  static constexpr int kContextLength = 77;

  // `dir` holds vocab.json and merges.txt.
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> Load(
      const std::string& dir);

  // The BPE ids of `text`, without start/end tokens.
  std::vector<int64_t> Encode(const std::string& text) const;

  struct Padded {
    std::vector<int64_t> ids;  // kContextLength ids.
    bool truncated = false;    // More than 75 BPE ids; the rest dropped.
  };
  Padded EncodePadded(const std::string& text) const;

  // Prompts longer than 75 ids as the common SD front ends encode them:
  // chunks of 75 ids, each padded as EncodePadded pads one, so that each
  // chunk is encoded alone and the contexts concatenated. A prompt of 75
  // ids or fewer is one chunk, exactly EncodePadded's ids.
  struct Chunked {
    std::vector<int64_t> ids;  // chunks * kContextLength ids.
    int chunks = 1;
    bool truncated = false;  // More than max_chunks * 75 ids.
  };
  Chunked EncodeChunked(const std::string& text, int max_chunks) const;
  // BPE ids one chunk holds.
  static constexpr int kIdsPerChunk = kContextLength - 2;

  // The cleaned, split pieces (for debugging prompts).
  std::vector<std::string> PreTokenize(const std::string& text) const;

 private:
  ClipTokenizer() = default;
  // BPE symbols of one piece (already byte-encoded).
  std::vector<std::string> Bpe(const std::string& piece) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<std::string, int> merge_ranks_;  // "a b" -> rank
  std::vector<std::string> byte_symbols_;             // byte -> UTF-8
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_CLIP_TOKENIZER_H_
