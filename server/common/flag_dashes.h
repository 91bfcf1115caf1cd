// Lets users type --metrics-listen for the absl flag metrics_listen: absl
// flag names are identifiers, people type dashes.
#ifndef LDMSERVE_SERVER_COMMON_FLAG_DASHES_H_
#define LDMSERVE_SERVER_COMMON_FLAG_DASHES_H_

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace ldmserve {

// argv with dashes in each --flag's name (not its value) turned into
// underscores; the strings live in `storage`.
inline std::vector<char*> NormalizeFlagDashes(
    int argc, char** argv, std::vector<std::string>* storage) {
  storage->reserve(argc);
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && absl::StartsWith(arg, "--")) {
      const size_t end = std::min(arg.find('='), arg.size());
      std::replace(arg.begin() + 2,
                   arg.begin() + static_cast<std::ptrdiff_t>(end), '-', '_');
    }
    storage->push_back(std::move(arg));
  }
  std::vector<char*> normalized;
  for (std::string& arg : *storage) normalized.push_back(arg.data());
  return normalized;
}

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_COMMON_FLAG_DASHES_H_
