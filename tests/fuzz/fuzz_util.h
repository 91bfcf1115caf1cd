// Shared by the fuzz targets: each defines LLVMFuzzerTestOneInput and is
// linked either with libFuzzer (preset fuzz) or with replay_main.cc (every
// build: the corpus replayed as a regression test).
#ifndef LDMSERVE_TESTS_FUZZ_FUZZ_UTIL_H_
#define LDMSERVE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <set>
#include <string>

#include "absl/status/status.h"

namespace ldmserve::fuzz {

// A failed check is a finding: abort, so that libFuzzer keeps the input.
#define LDM_FUZZ_CHECK(condition)                                           \
  do {                                                                      \
    if (!(condition)) {                                                     \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #condition);                                             \
      std::abort();                                                         \
    }                                                                       \
  } while (false)

// An error for untrusted input must be one of `codes` and say something.
inline void RequireClearStatus(const absl::Status& status,
                               std::initializer_list<absl::StatusCode> codes) {
  bool expected = false;
  for (absl::StatusCode code : codes) expected |= status.code() == code;
  if (!expected || status.message().empty()) {
    std::fprintf(stderr, "unexpected status: %s\n", status.ToString().c_str());
    std::abort();
  }
}

// The input files this process wrote, removed when it exits normally (a
// crashing input's file stays, beside libFuzzer's own copy of it).
class ProcessInputFiles {
 public:
  static void Add(const std::string& path) {
    static ProcessInputFiles files;
    files.paths_.insert(path);
  }
  ~ProcessInputFiles() {
    for (const std::string& path : paths_) std::remove(path.c_str());
  }

 private:
  std::set<std::string> paths_;
};

// The input as a file (parsers that take a path); one per process and
// suffix, rewritten for each input.
inline std::string WriteInputFile(const uint8_t* data, size_t size,
                                  const char* suffix) {
  const char* directory = std::getenv("TMPDIR");
  std::string path = std::string(directory != nullptr ? directory : "/tmp") +
                     "/ldmserve-fuzz-" + std::to_string(getpid()) + suffix;
  ProcessInputFiles::Add(path);
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(data),
             static_cast<std::streamsize>(size));
  return path;
}

// The repository's root, for the shipped vocabularies.
inline std::string SourceDir() {
  const char* override_dir = std::getenv("LDMSERVE_SOURCE_DIR");
  return override_dir != nullptr ? override_dir : LDMSERVE_SOURCE_DIR;
}

}  // namespace ldmserve::fuzz

#endif  // LDMSERVE_TESTS_FUZZ_FUZZ_UTIL_H_
