// Status-propagation macros for every layer (Debian's Abseil 20220623 has no
// status_macros.h).
//
// Example:
//   absl::StatusOr<Model> Load(const std::string& path) {
//     LDM_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
//     LDM_RETURN_IF_ERROR(file.CheckKeys(expected));
//     ...
//   }
#ifndef LDMSERVE_SERVER_COMMON_STATUS_MACROS_H_
#define LDMSERVE_SERVER_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LDM_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status ldm_status_ = (expr);       \
    if (!ldm_status_.ok()) return ldm_status_; \
  } while (false)

#define LDM_STATUS_CONCAT_INNER_(a, b) a##b
#define LDM_STATUS_CONCAT_(a, b) LDM_STATUS_CONCAT_INNER_(a, b)

#define LDM_ASSIGN_OR_RETURN(lhs, expr)                                        \
  LDM_ASSIGN_OR_RETURN_IMPL_(LDM_STATUS_CONCAT_(ldm_statusor_, __LINE__), lhs, \
                             expr)

// `lhs` may be a declaration ("const int n"), so it cannot be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define LDM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)    \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
// NOLINTEND(bugprone-macro-parentheses)

#endif  // LDMSERVE_SERVER_COMMON_STATUS_MACROS_H_
