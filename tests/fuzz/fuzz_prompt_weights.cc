// The prompt emphasis syntax ((text:1.3), [text], escapes): segments whose
// text is the prompt less its syntax, with finite positive weights.
#include <cmath>
#include <cstdint>
#include <string>

#include "server/ldm/prompt_weights.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string prompt(reinterpret_cast<const char*>(data), size);
  const std::vector<ldm::PromptSegment> segments =
      ldm::ParsePromptWeights(prompt);
  size_t text_bytes = 0;
  for (const ldm::PromptSegment& segment : segments) {
    LDM_FUZZ_CHECK(std::isfinite(segment.weight));
    LDM_FUZZ_CHECK(std::abs(segment.weight) <= ldm::kMaxPromptWeight);
    text_bytes += segment.text.size();
  }
  // The syntax is removed, never added.
  LDM_FUZZ_CHECK(text_bytes <= prompt.size());
  LDM_FUZZ_CHECK(ldm::PromptText(segments).size() == text_bytes);
  return 0;
}
