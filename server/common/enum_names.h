// An enum's names written once, as one table read both ways: the name of a
// value (for files and messages) and the value of a name (for parsing), so
// that a name is parsed once, where it enters, and code past that point
// compares enums, never strings.
//
//   constexpr std::array<EnumName<Color>, 2> kColorNames = {
//       {{Color::kRed, "red"}, {Color::kBlue, "blue"}}};
//   NameOf(kColorNames, Color::kRed)      -> "red"
//   ValueOf(kColorNames, "blue")          -> Color::kBlue
//   JoinedNames(kColorNames)              -> "red, blue"
#ifndef LDMSERVE_SERVER_COMMON_ENUM_NAMES_H_
#define LDMSERVE_SERVER_COMMON_ENUM_NAMES_H_

#include <array>
#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace ldm {

template <typename Enum>
struct EnumName {
  Enum value;
  absl::string_view name;
};

// "unknown" for a value the table lacks (a cast from a bad integer).
template <typename Enum, size_t N>
constexpr absl::string_view NameOf(const std::array<EnumName<Enum>, N>& names,
                                   Enum value) {
  for (const EnumName<Enum>& entry : names) {
    if (entry.value == value) return entry.name;
  }
  return "unknown";
}

template <typename Enum, size_t N>
constexpr std::optional<Enum> ValueOf(
    const std::array<EnumName<Enum>, N>& names, absl::string_view name) {
  for (const EnumName<Enum>& entry : names) {
    if (entry.name == name) return entry.value;
  }
  return std::nullopt;
}

// The names in table order, joined by ", " (for "must be one of ...").
template <typename Enum, size_t N>
std::string JoinedNames(const std::array<EnumName<Enum>, N>& names) {
  std::string joined;
  for (const EnumName<Enum>& entry : names) {
    if (!joined.empty()) joined += ", ";
    joined.append(entry.name.data(), entry.name.size());
  }
  return joined;
}

}  // namespace ldm

#endif  // LDMSERVE_SERVER_COMMON_ENUM_NAMES_H_
