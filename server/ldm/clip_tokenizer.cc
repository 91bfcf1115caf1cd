#include "server/ldm/clip_tokenizer.h"

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <climits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/common/status_macros.h"
#include "server/ldm/model_config.h"

namespace ldm {
namespace {

bool IsLetter(UChar32 c) {
  switch (u_charType(c)) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return true;
    default:
      return false;
  }
}

bool IsNumber(UChar32 c) {
  switch (u_charType(c)) {
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return true;
    default:
      return false;
  }
}

// Python's str.isspace, which \s follows: White_Space plus the separators
// U+001C..U+001F.
bool IsSpace(UChar32 c) {
  return u_isUWhiteSpace(c) || (c >= 0x1C && c <= 0x1F);
}

std::string ToUtf8(const std::u32string& text, size_t begin, size_t end) {
  icu::UnicodeString piece;
  for (size_t i = begin; i < end; ++i)
    piece.append(static_cast<UChar32>(text[i]));
  std::string utf8;
  piece.toUTF8String(utf8);
  return utf8;
}

// Whitespace runs to one space, stripped, full Unicode lower-case.
std::u32string Clean(const std::string& text) {
  icu::UnicodeString lowered =
      icu::UnicodeString::fromUTF8(text).toLower(icu::Locale::getRoot());
  std::u32string cleaned;
  bool pending_space = false;
  for (int32_t i = 0; i < lowered.length();) {
    const UChar32 c = lowered.char32At(i);
    i += U16_LENGTH(c);
    if (IsSpace(c)) {
      pending_space = !cleaned.empty();
      continue;
    }
    if (pending_space) cleaned.push_back(U' ');
    pending_space = false;
    cleaned.push_back(static_cast<char32_t>(c));
  }
  return cleaned;
}

bool StartsWith(const std::u32string& text, size_t at, const char* ascii) {
  for (size_t k = 0; ascii[k] != '\0'; ++k) {
    if (at + k >= text.size() ||
        text[at + k] != static_cast<char32_t>(ascii[k])) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::Load(
    const std::string& dir) {
  std::unique_ptr<ClipTokenizer> tokenizer(new ClipTokenizer());
  LDM_ASSIGN_OR_RETURN(std::string vocab_text,
                       ReadTextFile(dir + "/vocab.json"));
  const nlohmann::json vocab =
      nlohmann::json::parse(vocab_text, nullptr, /*allow_exceptions=*/false);
  if (vocab.is_discarded() || !vocab.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "/vocab.json: not a JSON object"));
  }
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/vocab.json: id of ", token, " is not a number"));
    }
    tokenizer->vocab_[token] = id.get<int64_t>();
  }
  LDM_ASSIGN_OR_RETURN(std::string merges_text,
                       ReadTextFile(dir + "/merges.txt"));
  // Hugging Face reads strip().split("\n")[1:]: the first line is a header;
  // CRLF endings and a trailing newline are fine.
  std::vector<std::string> lines =
      absl::StrSplit(absl::StripAsciiWhitespace(merges_text), '\n');
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string line(absl::StripTrailingAsciiWhitespace(lines[i]));
    if (line.empty()) continue;
    tokenizer->merge_ranks_.emplace(line, static_cast<int>(i - 1));
  }
  // bytes_to_unicode: printable bytes stand for themselves, the others for
  // U+0100 onwards in byte order.
  tokenizer->byte_symbols_.resize(256);
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                           (b >= 0xAE && b <= 0xFF);
    const UChar32 symbol = printable ? b : 256 + next++;
    std::string utf8;
    icu::UnicodeString(symbol).toUTF8String(utf8);
    tokenizer->byte_symbols_[b] = utf8;
  }
  if (!tokenizer->vocab_.count("<|endoftext|>") ||
      tokenizer->merge_ranks_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": not a CLIP tokenizer (vocab.json + merges.txt)"));
  }
  return tokenizer;
}

std::vector<std::string> ClipTokenizer::PreTokenize(
    const std::string& text) const {
  const std::u32string cleaned = Clean(text);
  std::vector<std::string> pieces;
  size_t i = 0;
  while (i < cleaned.size()) {
    const char32_t c = cleaned[i];
    size_t end = i;
    if (StartsWith(cleaned, i, "<|startoftext|>")) {
      end = i + 15;
    } else if (StartsWith(cleaned, i, "<|endoftext|>")) {
      end = i + 13;
    } else if (c == U'\'' &&
               (StartsWith(cleaned, i, "'s") || StartsWith(cleaned, i, "'t") ||
                StartsWith(cleaned, i, "'m") || StartsWith(cleaned, i, "'d"))) {
      end = i + 2;
    } else if (c == U'\'' && (StartsWith(cleaned, i, "'re") ||
                              StartsWith(cleaned, i, "'ve") ||
                              StartsWith(cleaned, i, "'ll"))) {
      end = i + 3;
    } else if (IsLetter(c)) {
      while (end < cleaned.size() && IsLetter(cleaned[end])) ++end;
    } else if (IsNumber(c)) {
      end = i + 1;
    } else if (IsSpace(c)) {
      ++i;
      continue;
    } else {
      while (end < cleaned.size() && !IsSpace(cleaned[end]) &&
             !IsLetter(cleaned[end]) && !IsNumber(cleaned[end])) {
        ++end;
      }
    }
    pieces.push_back(ToUtf8(cleaned, i, end));
    i = end;
  }
  return pieces;
}

std::vector<std::string> ClipTokenizer::Bpe(const std::string& piece) const {
  // Symbols: the piece's characters, the last one marked as a word end.
  std::vector<std::string> word;
  const icu::UnicodeString chars = icu::UnicodeString::fromUTF8(piece);
  for (int32_t i = 0; i < chars.length();) {
    const UChar32 c = chars.char32At(i);
    i += U16_LENGTH(c);
    std::string utf8;
    icu::UnicodeString(c).toUTF8String(utf8);
    word.push_back(utf8);
  }
  if (word.empty()) return word;
  word.back() += "</w>";
  while (word.size() > 1) {
    int best_rank = INT_MAX;
    std::string best;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = merge_ranks_.find(word[i] + " " + word[i + 1]);
      if (it != merge_ranks_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = it->first;
      }
    }
    if (best_rank == INT_MAX) break;
    const size_t space = best.find(' ');
    const std::string first = best.substr(0, space);
    const std::string second = best.substr(space + 1);
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i]);
        ++i;
      }
    }
    word = std::move(merged);
  }
  return word;
}

std::vector<int64_t> ClipTokenizer::Encode(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& piece : PreTokenize(text)) {
    if (piece == "<|startoftext|>" || piece == "<|endoftext|>") {
      ids.push_back(vocab_.at(piece));
      continue;
    }
    std::string encoded;
    for (unsigned char byte : piece) encoded += byte_symbols_[byte];
    for (const std::string& symbol : Bpe(encoded)) {
      auto it = vocab_.find(symbol);
      if (it != vocab_.end()) ids.push_back(it->second);
    }
  }
  return ids;
}

ClipTokenizer::Padded ClipTokenizer::EncodePadded(
    const std::string& text) const {
  Chunked chunked = EncodeChunked(text, 1);
  return Padded{std::move(chunked.ids), chunked.truncated};
}

ClipTokenizer::Chunked ClipTokenizer::EncodeChunked(const std::string& text,
                                                    int max_chunks) const {
  std::vector<int64_t> bpe = Encode(text);
  Chunked chunked;
  const size_t max_ids = static_cast<size_t>(max_chunks) * kIdsPerChunk;
  chunked.truncated = bpe.size() > max_ids;
  if (chunked.truncated) bpe.resize(max_ids);
  // An empty prompt is still one chunk: start, end, padding.
  chunked.chunks = std::max<int>(
      1, static_cast<int>((bpe.size() + kIdsPerChunk - 1) / kIdsPerChunk));
  for (int chunk = 0; chunk < chunked.chunks; ++chunk) {
    const size_t begin = static_cast<size_t>(chunk) * kIdsPerChunk;
    const size_t end = std::min(bpe.size(), begin + kIdsPerChunk);
    chunked.ids.push_back(kStartId);
    if (begin < end) {
      chunked.ids.insert(chunked.ids.end(), bpe.begin() + begin,
                         bpe.begin() + end);
    }
    chunked.ids.push_back(kEndId);
    chunked.ids.resize(static_cast<size_t>(chunk + 1) * kContextLength, kEndId);
  }
  return chunked;
}

}  // namespace ldm
