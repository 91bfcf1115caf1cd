#include "server/service/image_metadata.h"

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ldmserve {
namespace {

constexpr uint16_t kTagExifIfd = 0x8769;
constexpr uint16_t kTagUserComment = 0x9286;
constexpr uint16_t kTypeLong = 4;
constexpr uint16_t kTypeUndefined = 7;
constexpr absl::string_view kUnicodeCharset("UNICODE\0", 8);
constexpr absl::string_view kAsciiCharset("ASCII\0\0\0", 8);

// UTF-8 -> UTF-16 code units; malformed bytes become U+FFFD.
std::vector<uint16_t> Utf16Of(absl::string_view utf8) {
  std::vector<uint16_t> units;
  size_t i = 0;
  while (i < utf8.size()) {
    const auto lead = static_cast<uint8_t>(utf8[i]);
    int length = lead < 0x80           ? 1
                 : (lead >> 5) == 0x6  ? 2
                 : (lead >> 4) == 0xE  ? 3
                 : (lead >> 3) == 0x1E ? 4
                                       : 0;
    uint32_t code = length == 1   ? lead
                    : length == 2 ? lead & 0x1Fu
                    : length == 3 ? lead & 0x0Fu
                                  : lead & 0x07u;
    bool valid = length != 0 && i + length <= utf8.size();
    for (int k = 1; valid && k < length; ++k) {
      const auto next = static_cast<uint8_t>(utf8[i + k]);
      valid = (next & 0xC0) == 0x80;
      code = (code << 6) | (next & 0x3Fu);
    }
    if (!valid || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      units.push_back(0xFFFD);
      ++i;
      continue;
    }
    i += length;
    if (code >= 0x10000) {
      code -= 0x10000;
      units.push_back(static_cast<uint16_t>(0xD800 + (code >> 10)));
      units.push_back(static_cast<uint16_t>(0xDC00 + (code & 0x3FF)));
    } else {
      units.push_back(static_cast<uint16_t>(code));
    }
  }
  return units;
}

void AppendUtf8(uint32_t code, std::string& out) {
  if (code < 0x80) {
    out.push_back(static_cast<char>(code));
  } else if (code < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code >> 6)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else if (code < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  }
}

std::string Utf8Of(const std::vector<uint16_t>& units) {
  std::string out;
  for (size_t i = 0; i < units.size(); ++i) {
    uint32_t code = units[i];
    if (code >= 0xD800 && code <= 0xDBFF && i + 1 < units.size() &&
        units[i + 1] >= 0xDC00 && units[i + 1] <= 0xDFFF) {
      code = 0x10000 + ((code - 0xD800) << 10) + (units[i + 1] - 0xDC00);
      ++i;
    } else if (code >= 0xD800 && code <= 0xDFFF) {
      code = 0xFFFD;
    }
    AppendUtf8(code, out);
  }
  return out;
}

void Put16(uint16_t value, std::string& out) {
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value & 0xFF));
}

void Put32(uint32_t value, std::string& out) {
  Put16(static_cast<uint16_t>(value >> 16), out);
  Put16(static_cast<uint16_t>(value & 0xFFFF), out);
}

// Reads a TIFF block of either byte order, every offset bounds-checked.
class TiffReader {
 public:
  explicit TiffReader(absl::string_view tiff) : tiff_(tiff) {}

  bool ReadHeader(uint32_t& first_ifd) {
    if (tiff_.size() < 8) return false;
    if (tiff_.substr(0, 2) == "MM") {
      big_endian_ = true;
    } else if (tiff_.substr(0, 2) != "II") {
      return false;
    }
    uint16_t magic = 0;
    return Read16(2, magic) && magic == 42 && Read32(4, first_ifd);
  }

  // The entry `tag` of the IFD at `ifd`: its type, count and value field's
  // offset (the value itself when it fits in 4 bytes).
  bool FindEntry(uint32_t ifd, uint16_t tag, uint16_t& type, uint32_t& count,
                 uint32_t& value_offset) {
    uint16_t entries = 0;
    if (!Read16(ifd, entries)) return false;
    for (uint32_t i = 0; i < entries; ++i) {
      const uint64_t entry = uint64_t{ifd} + 2 + uint64_t{i} * 12;
      uint16_t entry_tag = 0;
      if (entry + 12 > tiff_.size() ||
          !Read16(static_cast<uint32_t>(entry), entry_tag)) {
        return false;
      }
      if (entry_tag != tag) continue;
      value_offset = static_cast<uint32_t>(entry + 8);
      return Read16(static_cast<uint32_t>(entry + 2), type) &&
             Read32(static_cast<uint32_t>(entry + 4), count);
    }
    return false;
  }

  bool Read16(uint32_t offset, uint16_t& value) const {
    if (uint64_t{offset} + 2 > tiff_.size()) return false;
    const auto b0 = static_cast<uint8_t>(tiff_[offset]);
    const auto b1 = static_cast<uint8_t>(tiff_[offset + 1]);
    value = big_endian_ ? static_cast<uint16_t>((b0 << 8) | b1)
                        : static_cast<uint16_t>((b1 << 8) | b0);
    return true;
  }

  bool Read32(uint32_t offset, uint32_t& value) const {
    uint16_t first = 0;
    uint16_t second = 0;
    if (!Read16(offset, first) || !Read16(offset + 2, second)) return false;
    value = big_endian_ ? (uint32_t{first} << 16) | second
                        : (uint32_t{second} << 16) | first;
    return true;
  }

  bool Slice(uint32_t offset, uint32_t length, absl::string_view& out) const {
    if (uint64_t{offset} + length > tiff_.size()) return false;
    out = tiff_.substr(offset, length);
    return true;
  }

  bool big_endian() const { return big_endian_; }

 private:
  absl::string_view tiff_;
  bool big_endian_ = false;
};

}  // namespace

std::string ExifWithUserComment(absl::string_view utf8_text) {
  const std::vector<uint16_t> units = Utf16Of(utf8_text);
  // Header (8), IFD0 with one entry (2 + 12 + 4), the Exif IFD with one
  // entry (2 + 12 + 4), then the comment.
  constexpr uint32_t kExifIfdOffset = 8 + 18;
  constexpr uint32_t kCommentOffset = kExifIfdOffset + 18;
  std::string tiff = "MM";
  Put16(42, tiff);
  Put32(8, tiff);
  Put16(1, tiff);
  Put16(kTagExifIfd, tiff);
  Put16(kTypeLong, tiff);
  Put32(1, tiff);
  Put32(kExifIfdOffset, tiff);
  Put32(0, tiff);
  Put16(1, tiff);
  Put16(kTagUserComment, tiff);
  Put16(kTypeUndefined, tiff);
  Put32(static_cast<uint32_t>(kUnicodeCharset.size() + 2 * units.size()), tiff);
  Put32(kCommentOffset, tiff);
  Put32(0, tiff);
  // UNICODE comments are in the block's byte order: big-endian here.
  tiff.append(kUnicodeCharset.data(), kUnicodeCharset.size());
  for (uint16_t unit : units) Put16(unit, tiff);
  return tiff;
}

absl::StatusOr<std::string> ExifUserComment(absl::string_view tiff) {
  TiffReader reader(tiff);
  uint32_t ifd0 = 0;
  if (!reader.ReadHeader(ifd0)) {
    return absl::InvalidArgumentError("exif: not a TIFF block");
  }
  uint16_t type = 0;
  uint32_t count = 0;
  uint32_t value = 0;
  if (!reader.FindEntry(ifd0, kTagExifIfd, type, count, value)) {
    return std::string();
  }
  uint32_t exif_ifd = 0;
  if (!reader.Read32(value, exif_ifd)) {
    return absl::InvalidArgumentError("exif: bad Exif IFD pointer");
  }
  if (!reader.FindEntry(exif_ifd, kTagUserComment, type, count, value)) {
    return std::string();
  }
  uint32_t data_offset = value;
  if (count > 4 && !reader.Read32(value, data_offset)) {
    return absl::InvalidArgumentError("exif: bad UserComment offset");
  }
  absl::string_view comment;
  if (count < kUnicodeCharset.size() ||
      !reader.Slice(data_offset, count, comment)) {
    return absl::InvalidArgumentError("exif: UserComment out of bounds");
  }
  const absl::string_view charset = comment.substr(0, 8);
  const absl::string_view text = comment.substr(8);
  if (charset == kUnicodeCharset) {
    std::vector<uint16_t> units(text.size() / 2);
    for (size_t i = 0; i < units.size(); ++i) {
      const auto b0 = static_cast<uint8_t>(text[2 * i]);
      const auto b1 = static_cast<uint8_t>(text[2 * i + 1]);
      units[i] = reader.big_endian() ? static_cast<uint16_t>((b0 << 8) | b1)
                                     : static_cast<uint16_t>((b1 << 8) | b0);
    }
    return Utf8Of(units);
  }
  if (charset == kAsciiCharset) return std::string(text);
  return absl::InvalidArgumentError("exif: UserComment in an unknown charset");
}

std::string XmpWithDescription(absl::string_view utf8_text) {
  std::string escaped;
  for (char c : utf8_text) {
    switch (c) {
      case '&':
        escaped += "&amp;";
        break;
      case '<':
        escaped += "&lt;";
        break;
      case '>':
        escaped += "&gt;";
        break;
      case '"':
        escaped += "&quot;";
        break;
      default:
        // XML 1.0 allows no other C0 control character.
        if (static_cast<uint8_t>(c) >= 0x20 || c == '\t' || c == '\n' ||
            c == '\r') {
          escaped.push_back(c);
        }
    }
  }
  return absl::StrCat(
      "<?xpacket begin=\"\xEF\xBB\xBF\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>"
      "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">"
      "<rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">"
      "<rdf:Description rdf:about=\"\" "
      "xmlns:dc=\"http://purl.org/dc/elements/1.1/\" "
      "xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\">"
      "<xmp:CreatorTool>ldmserve</xmp:CreatorTool>"
      "<dc:description><rdf:Alt><rdf:li xml:lang=\"x-default\">",
      escaped,
      "</rdf:li></rdf:Alt></dc:description>"
      "</rdf:Description></rdf:RDF></x:xmpmeta>"
      "<?xpacket end=\"r\"?>");
}

}  // namespace ldmserve
