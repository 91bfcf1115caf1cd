#include "server/ldm/wordpiece_tokenizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ldm {
namespace {

constexpr int kMaxWordChars = 100;  // Longer words are [UNK], as BERT's.

bool IsWhitespace(UChar32 c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
         u_charType(c) == U_SPACE_SEPARATOR;
}

// Unicode's "C*" categories, less the whitespace controls.
bool IsControl(UChar32 c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (u_charType(c)) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
    case U_UNASSIGNED:
      return true;
    default:
      return false;
  }
}

// ASCII symbols count as punctuation too ("$", "+", "^", "`"), as in BERT.
bool IsPunctuation(UChar32 c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  switch (u_charType(c)) {
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

// The CJK Unified Ideographs blocks BERT splits character by character.
bool IsCjk(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

std::string Utf8(const icu::UnicodeString& text) {
  std::string out;
  text.toUTF8String(out);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Load(
    const std::string& vocab_path) {
  std::ifstream in(vocab_path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(vocab_path, ": cannot open"));
  }
  std::unique_ptr<WordPieceTokenizer> tokenizer(new WordPieceTokenizer());
  std::string line;
  int64_t id = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // A repeated token keeps its first id, as BERT's loader.
    tokenizer->vocab_.emplace(line, id++);
  }
  for (auto [name, slot] :
       {std::pair<const char*, int64_t*>{"[UNK]", &tokenizer->unknown_id_},
        {"[CLS]", &tokenizer->start_id_},
        {"[SEP]", &tokenizer->end_id_},
        {"[PAD]", &tokenizer->pad_id_}}) {
    auto it = tokenizer->vocab_.find(name);
    if (it == tokenizer->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocab_path, ": no ", name, " token"));
    }
    *slot = it->second;
  }
  return tokenizer;
}

std::vector<std::string> WordPieceTokenizer::BasicTokenize(
    const std::string& text) const {
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(error);
  std::vector<std::string> words;
  icu::UnicodeString word;
  auto flush = [&] {
    if (word.isEmpty()) return;
    // Lower-cased, then accents (non-spacing marks after NFD) dropped.
    word.toLower(icu::Locale::getRoot());
    icu::UnicodeString decomposed =
        U_SUCCESS(error) ? nfd->normalize(word, error) : word;
    icu::UnicodeString stripped;
    for (int32_t i = 0; i < decomposed.length();) {
      const UChar32 c = decomposed.char32At(i);
      i += U16_LENGTH(c);
      if (u_charType(c) != U_NON_SPACING_MARK) stripped.append(c);
    }
    // Punctuation splits the word and is a word of its own.
    icu::UnicodeString run;
    for (int32_t i = 0; i < stripped.length();) {
      const UChar32 c = stripped.char32At(i);
      i += U16_LENGTH(c);
      if (IsPunctuation(c)) {
        if (!run.isEmpty()) words.push_back(Utf8(run));
        run.remove();
        words.push_back(Utf8(icu::UnicodeString(c)));
      } else {
        run.append(c);
      }
    }
    if (!run.isEmpty()) words.push_back(Utf8(run));
    word.remove();
  };
  const icu::UnicodeString chars = icu::UnicodeString::fromUTF8(text);
  for (int32_t i = 0; i < chars.length();) {
    const UChar32 c = chars.char32At(i);
    i += U16_LENGTH(c);
    if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
    if (IsWhitespace(c)) {
      flush();
    } else if (IsCjk(c)) {
      flush();
      word.append(c);
      flush();
    } else {
      word.append(c);
    }
  }
  flush();
  return words;
}

std::vector<int64_t> WordPieceTokenizer::Encode(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& word : BasicTokenize(text)) {
    const icu::UnicodeString chars = icu::UnicodeString::fromUTF8(word);
    if (chars.countChar32() > kMaxWordChars) {
      ids.push_back(unknown_id_);
      continue;
    }
    // Greedy longest match first, continuations prefixed "##".
    std::vector<int64_t> pieces;
    int32_t start = 0;
    bool unknown = false;
    while (start < chars.length()) {
      int32_t end = chars.length();
      int64_t found = -1;
      while (start < end) {
        std::string piece = Utf8(chars.tempSubStringBetween(start, end));
        if (start > 0) piece = "##" + piece;
        auto it = vocab_.find(piece);
        if (it != vocab_.end()) {
          found = it->second;
          break;
        }
        end = chars.moveIndex32(end, -1);
      }
      if (found < 0) {
        unknown = true;
        break;
      }
      pieces.push_back(found);
      start = end;
    }
    if (unknown) {
      ids.push_back(unknown_id_);
    } else {
      ids.insert(ids.end(), pieces.begin(), pieces.end());
    }
  }
  return ids;
}

WordPieceTokenizer::Padded WordPieceTokenizer::EncodePadded(
    const std::string& text, int64_t length) const {
  Padded padded;
  std::vector<int64_t> ids = Encode(text);
  const auto room = static_cast<size_t>(std::max<int64_t>(0, length - 2));
  if (ids.size() > room) {
    ids.resize(room);
    padded.truncated = true;
  }
  padded.ids.push_back(start_id_);
  padded.ids.insert(padded.ids.end(), ids.begin(), ids.end());
  padded.ids.push_back(end_id_);
  padded.ids.resize(static_cast<size_t>(length), pad_id_);
  return padded;
}

}  // namespace ldm
