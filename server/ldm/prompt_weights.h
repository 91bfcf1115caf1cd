// The emphasis syntax users of other Stable Diffusion front ends write in
// prompts, parsed into weighted segments:
//
//   (text:1.3)  weight 1.3        (text)  x 1.1        [text]  / 1.1
//
// Brackets nest (weights multiply, the product clamped to +-kMaxPromptWeight);
// \( \) \[ \] are literal characters; a bracket left open still applies to
// the text after it, as in those tools. "(text:W)" with W not a finite
// number within +-kMaxPromptWeight ("nan", "1e30") is text.
// The text encoder sees the prompt without the syntax; each token's output
// row is then scaled by its weight, and the row set rescaled to its original
// mean (LatentDiffusion::EncodeText).
//
// Thread-safe: pure functions.
//
// Example:
//   ParsePromptWeights("a (red:1.5) circle")
//     -> {{"a ", 1}, {"red", 1.5}, {" circle", 1}}
#ifndef LDMSERVE_SERVER_LDM_PROMPT_WEIGHTS_H_
#define LDMSERVE_SERVER_LDM_PROMPT_WEIGHTS_H_

#include <string>
#include <vector>

namespace ldm {

inline constexpr float kMaxPromptWeight = 100.0f;

struct PromptSegment {
  std::string text;
  float weight = 1.0f;
};

// Adjacent segments of equal weight are merged; an empty prompt gives no
// segments.
std::vector<PromptSegment> ParsePromptWeights(const std::string& prompt);

// The prompt as the tokenizer sees it: the segments' text, concatenated.
std::string PromptText(const std::vector<PromptSegment>& segments);

bool HasWeights(const std::vector<PromptSegment>& segments);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_PROMPT_WEIGHTS_H_
