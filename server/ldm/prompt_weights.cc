#include "server/ldm/prompt_weights.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace ldm {
namespace {

constexpr float kRoundMultiplier = 1.1f;
constexpr float kSquareMultiplier = 1.0f / 1.1f;

void Multiply(std::vector<PromptSegment>& segments, size_t from, float by) {
  for (size_t i = from; i < segments.size(); ++i) {
    // Clamped: nested weights would otherwise overflow to inf (found by
    // fuzz_prompt_weights).
    segments[i].weight = std::clamp(segments[i].weight * by, -kMaxPromptWeight,
                                    kMaxPromptWeight);
  }
}

}  // namespace

std::vector<PromptSegment> ParsePromptWeights(const std::string& prompt) {
  std::vector<PromptSegment> segments;
  std::vector<size_t> round, square;  // Where each open bracket's text starts.
  std::string text;
  auto flush = [&] {
    if (!text.empty()) segments.push_back({text, 1.0f});
    text.clear();
  };
  for (size_t i = 0; i < prompt.size(); ++i) {
    const char c = prompt[i];
    if (c == '\\' && i + 1 < prompt.size()) {
      text.push_back(prompt[++i]);
    } else if (c == '(') {
      flush();
      round.push_back(segments.size());
    } else if (c == '[') {
      flush();
      square.push_back(segments.size());
    } else if (c == ':' && !round.empty()) {
      // "(text:1.3)": a number, then the closing parenthesis.
      const char* start = prompt.c_str() + i + 1;
      char* end = nullptr;
      const float weight = std::strtof(start, &end);
      size_t after = static_cast<size_t>(end - prompt.c_str());
      while (after < prompt.size() && prompt[after] == ' ') ++after;
      // "nan", "inf" and 1e30 are numbers to strtof, not weights.
      if (end != start && std::isfinite(weight) &&
          std::abs(weight) <= kMaxPromptWeight && after < prompt.size() &&
          prompt[after] == ')') {
        flush();
        Multiply(segments, round.back(), weight);
        round.pop_back();
        i = after;
      } else {
        text.push_back(c);
      }
    } else if (c == ')' && !round.empty()) {
      flush();
      Multiply(segments, round.back(), kRoundMultiplier);
      round.pop_back();
    } else if (c == ']' && !square.empty()) {
      flush();
      Multiply(segments, square.back(), kSquareMultiplier);
      square.pop_back();
    } else {
      text.push_back(c);
    }
  }
  flush();
  for (size_t start : round) Multiply(segments, start, kRoundMultiplier);
  for (size_t start : square) Multiply(segments, start, kSquareMultiplier);
  std::vector<PromptSegment> merged;
  for (PromptSegment& segment : segments) {
    if (!merged.empty() && merged.back().weight == segment.weight) {
      merged.back().text += segment.text;
    } else {
      merged.push_back(std::move(segment));
    }
  }
  return merged;
}

std::string PromptText(const std::vector<PromptSegment>& segments) {
  std::string text;
  for (const PromptSegment& segment : segments) text += segment.text;
  return text;
}

bool HasWeights(const std::vector<PromptSegment>& segments) {
  for (const PromptSegment& segment : segments) {
    if (segment.weight != 1.0f) return true;
  }
  return false;
}

}  // namespace ldm
