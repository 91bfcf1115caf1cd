#include "server/runtime/folder_paths.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ldmserve {
namespace {

constexpr size_t kMaxPathBytes = 1024;

}  // namespace

absl::Status CheckSafeName(absl::string_view field, const std::string& name,
                           size_t max_bytes) {
  if (name.empty() || name.size() > max_bytes || name.front() == '.') {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": 1 to ", max_bytes,
        " characters of A-Z a-z 0-9 . _ -, not starting with '.'"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": character '", std::string(1, c),
                       "' not allowed (A-Z a-z 0-9 . _ -)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveInFolder(absl::string_view field,
                                            const std::string& folder,
                                            absl::string_view folder_name,
                                            const std::string& relative) {
  if (relative.empty() || relative.size() > kMaxPathBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": a path of 1 to ", kMaxPathBytes,
                     " bytes relative to the server's ", folder_name));
  }
  const std::filesystem::path path(relative);
  if (path.is_absolute() || std::any_of(path.begin(), path.end(),
                                        [](const std::filesystem::path& part) {
                                          return part == "..";
                                        })) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be relative to the server's ", folder_name,
                     ", without '..'"));
  }
  if (folder.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("this server has no ", folder_name));
  }
  std::error_code error;
  const std::filesystem::path root =
      std::filesystem::weakly_canonical(folder, error);
  const std::filesystem::path file =
      std::filesystem::weakly_canonical(root / path, error);
  if (error || !absl::StartsWith(file.string(), root.string() + "/") ||
      !std::filesystem::exists(file, error)) {
    return absl::NotFoundError(absl::StrCat(field, ": no file '", relative,
                                            "' in the server's ", folder_name));
  }
  return file.string();
}

}  // namespace ldmserve
