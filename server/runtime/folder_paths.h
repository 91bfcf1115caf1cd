// Files a client names inside a folder the operator chose (the model
// folder of LoadModel, the LoRA folder): names that are safe in a label, a
// log line and a file name, and paths that stay inside their folder
// whatever they and their links say.
#ifndef LDMSERVE_SERVER_RUNTIME_FOLDER_PATHS_H_
#define LDMSERVE_SERVER_RUNTIME_FOLDER_PATHS_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ldmserve {

// OK for 1 to `max_bytes` of [A-Za-z0-9._-] not starting with '.';
// INVALID_ARGUMENT naming `field` otherwise.
absl::Status CheckSafeName(absl::string_view field, const std::string& name,
                           size_t max_bytes = 64);

// The canonical path of `relative` inside `folder`: INVALID_ARGUMENT naming
// `field` for an absolute path, '..' or an over-long one; NOT_FOUND when it
// does not exist or its links lead outside the folder; FAILED_PRECONDITION
// without a folder.
// `folder_name` ("model folder") is how messages call the folder.
absl::StatusOr<std::string> ResolveInFolder(absl::string_view field,
                                            const std::string& folder,
                                            absl::string_view folder_name,
                                            const std::string& relative);

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_RUNTIME_FOLDER_PATHS_H_
