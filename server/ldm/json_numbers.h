// Reading numbers from JSON without undefined behaviour: nlohmann's get<>()
// casts a double to the asked type, and a cast out of range (1e102 into an
// int64_t) is undefined. Config parsers check with NumbersFit first.
#ifndef LDMSERVE_SERVER_LDM_JSON_NUMBERS_H_
#define LDMSERVE_SERVER_LDM_JSON_NUMBERS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <vector>

namespace ldm {

template <typename T>
struct ElementOf {
  using type = T;
};
template <typename T>
struct ElementOf<std::vector<T>> {
  using type = T;
};

// Whether every number in `value` converts to `Number` without leaving its
// range (a float into an integer only when it is integral): nlohmann's
// get<>() casts, and a cast out of range is undefined behaviour.
template <typename Number>
bool NumbersFit(const nlohmann::json& value) {
  if (value.is_array()) {
    return std::all_of(
        value.begin(), value.end(),
        [](const nlohmann::json& item) { return NumbersFit<Number>(item); });
  }
  if constexpr (std::is_arithmetic_v<Number> && !std::is_same_v<Number, bool>) {
    using Limits = std::numeric_limits<Number>;
    if (value.is_number_float()) {
      const double number = value.get<double>();
      if (!std::isfinite(number)) return false;
      if constexpr (std::is_integral_v<Number>) {
        return number == std::trunc(number) &&
               number >= static_cast<double>(Limits::min()) &&
               number < static_cast<double>(Limits::max());
      } else {
        return std::fabs(number) <= static_cast<double>(Limits::max());
      }
    }
    if constexpr (std::is_integral_v<Number>) {
      if (value.is_number_unsigned()) {
        return value.get<uint64_t>() <= static_cast<uint64_t>(Limits::max());
      }
      if (value.is_number_integer()) {
        const int64_t number = value.get<int64_t>();
        return number >= static_cast<int64_t>(Limits::min()) &&
               static_cast<uint64_t>(std::max<int64_t>(number, 0)) <=
                   static_cast<uint64_t>(Limits::max());
      }
    }
  }
  return true;
}

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_JSON_NUMBERS_H_
