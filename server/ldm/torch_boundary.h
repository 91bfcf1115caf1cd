// The one exception boundary: LibTorch reports errors by throwing
// c10::Error; everything above server/ldm/ works with absl::Status.
//
// Example:
//   absl::StatusOr<at::Tensor> out = ldm::CallTorch("unet forward",
//       [&] { return unet.Forward(x, t, context); });
#ifndef LDMSERVE_SERVER_LDM_TORCH_BOUNDARY_H_
#define LDMSERVE_SERVER_LDM_TORCH_BOUNDARY_H_

#include <c10/util/Exception.h>

#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ldm {

// Turns a LibTorch failure into a status. Out-of-memory becomes
// RESOURCE_EXHAUSTED (the scheduler may retry a smaller batch); anything else
// INTERNAL.
inline absl::Status StatusFromTorchError(absl::string_view what,
                                         const std::exception& error) {
  std::string message = error.what();
  // c10 appends a long C++ backtrace; the first line is what a user needs.
  if (auto newline = message.find('\n'); newline != std::string::npos) {
    message.resize(newline);
  }
  const bool out_of_memory =
      dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr ||
      absl::StrContains(message, "out of memory") ||
      absl::StrContains(message, "DefaultCPUAllocator: can't allocate");
  if (out_of_memory) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", message));
  }
  return absl::InternalError(absl::StrCat(what, ": ", message));
}

// Runs `fn`, returning its value, or the status of what it threw.
template <typename Fn>
auto CallTorch(absl::string_view what, Fn&& fn)
    -> absl::StatusOr<std::invoke_result_t<Fn>> {
  try {
    return std::forward<Fn>(fn)();
  } catch (const std::exception& error) {
    return StatusFromTorchError(what, error);
  }
}

// As CallTorch, for functions that return a status themselves.
template <typename Fn>
absl::Status CallTorchStatus(absl::string_view what, Fn&& fn) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const std::exception& error) {
    return StatusFromTorchError(what, error);
  }
}

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_TORCH_BOUNDARY_H_
