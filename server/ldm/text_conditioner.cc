#include "server/ldm/text_conditioner.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/ldm/clip_text_model.h"
#include "server/ldm/clip_tokenizer.h"
#include "server/ldm/layers.h"
#include "server/ldm/prompt_weights.h"
#include "server/ldm/text_encoder.h"
#include "server/ldm/torch_boundary.h"
#include "server/ldm/wordpiece_tokenizer.h"

namespace ldm {

TextConditioner::~TextConditioner() = default;

absl::StatusOr<TextConditioning> TextConditioner::Encode(
    const std::vector<std::string>& prompts, at::Device device,
    at::ScalarType context_dtype, int clip_skip) const {
  LDM_ASSIGN_OR_RETURN(
      std::vector<TextConditioning> encoded,
      EncodeGroups({PromptGroup{prompts, clip_skip}}, device, context_dtype));
  return std::move(encoded.front());
}

absl::StatusOr<std::vector<TextConditioning>> TextConditioner::EncodeGroups(
    const std::vector<PromptGroup>& groups, at::Device device,
    at::ScalarType context_dtype) const {
  // Tokens first, one row per prompt, each group's rows padded to one
  // length; then one encoder call per distinct (length, clip_skip).
  struct Row {
    std::vector<int64_t> ids;
    // Each token's emphasis ("(word:1.3)"); 1 everywhere for plain prompts.
    std::vector<float> weights;
    bool weighted = false;
    size_t chunk_length = 0;
    int clip_skip = 0;
  };
  std::vector<TextConditioning> results(groups.size());
  std::vector<std::vector<Row>> rows(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    size_t longest = 0;
    for (const std::string& prompt : groups[g].prompts) {
      const std::vector<PromptSegment> segments = ParsePromptWeights(prompt);
      LDM_ASSIGN_OR_RETURN(Tokens tokens, Tokenize(PromptText(segments)));
      Row row;
      row.weights.assign(tokens.ids.size(), 1.0f);
      if (HasWeights(segments)) {
        row.weighted = true;
        size_t index = 0;
        for (const PromptSegment& segment : segments) {
          const size_t count = CountTokens(segment.text);
          for (size_t k = 0; k < count; ++k) {
            const size_t position = TextPosition(index++);
            if (position < row.weights.size()) {
              row.weights[position] = segment.weight;
            }
          }
        }
      }
      row.chunk_length =
          tokens.chunk_length == 0 ? tokens.ids.size() : tokens.chunk_length;
      row.clip_skip = groups[g].clip_skip;
      row.ids = std::move(tokens.ids);
      longest = std::max(longest, row.ids.size());
      results[g].warnings.insert(results[g].warnings.end(),
                                 tokens.warnings.begin(),
                                 tokens.warnings.end());
      results[g].row_warnings.push_back(std::move(tokens.warnings));
      rows[g].push_back(std::move(row));
    }
    for (Row& row : rows[g]) {
      if (row.ids.size() == longest) continue;
      // Empty chunks, as the front ends pad the shorter of two prompts.
      LDM_ASSIGN_OR_RETURN(Tokens empty, Tokenize(""));
      while (row.ids.size() < longest) {
        row.ids.insert(row.ids.end(), empty.ids.begin(), empty.ids.end());
      }
      row.weights.resize(longest, 1.0f);
    }
  }
  return CallTorch("encode text", [&] {
    c10::InferenceMode inference;
    // (row length, clip_skip) -> its rows, as (group, index in group).
    std::map<std::pair<size_t, int>, std::vector<std::pair<size_t, size_t>>>
        batches;
    for (size_t g = 0; g < rows.size(); ++g) {
      for (size_t r = 0; r < rows[g].size(); ++r) {
        batches[{rows[g][r].ids.size(), rows[g][r].clip_skip}].emplace_back(g,
                                                                            r);
      }
    }
    std::vector<std::vector<at::Tensor>> contexts(rows.size());
    for (size_t g = 0; g < rows.size(); ++g) contexts[g].resize(rows[g].size());
    for (const auto& [key, members] : batches) {
      // Plain names: lambdas may not capture structured bindings in C++17.
      const size_t length = key.first;
      const int clip_skip = key.second;
      const size_t chunk_length =
          rows[members[0].first][members[0].second].chunk_length;
      std::vector<int64_t> ids;
      std::vector<float> weights;
      bool weighted = false;
      for (const auto& [g, r] : members) {
        const Row& row = rows[g][r];
        ids.insert(ids.end(), row.ids.begin(), row.ids.end());
        weights.insert(weights.end(), row.weights.begin(), row.weights.end());
        weighted = weighted || row.weighted;
      }
      const auto count = static_cast<int64_t>(members.size());
      // Each chunk a row of its own through the encoder.
      const at::Tensor chunk_ids =
          at::tensor(ids, at::TensorOptions().dtype(at::kLong))
              .reshape({-1, static_cast<int64_t>(chunk_length)})
              .to(device);
      at::Tensor context =
          ForEachRowIfInvariant(chunk_ids.size(0), [&](int64_t begin,
                                                       int64_t end) {
            return Forward(chunk_ids.slice(0, begin, end), clip_skip);
          }).to(at::kFloat);
      context = context.reshape({count, static_cast<int64_t>(length), -1});
      if (weighted) {
        // As those front ends do: scale each token's row by its weight,
        // then give each prompt's rows back their mean (unless it is ~0).
        const at::Tensor token_weights =
            at::tensor(weights)
                .reshape({count, -1, 1})
                .to(context.device(), context.dtype());
        const at::Tensor before = context.mean({1, 2}, /*keepdim=*/true);
        const at::Tensor scaled = context * token_weights;
        const at::Tensor after = scaled.mean({1, 2}, /*keepdim=*/true);
        context =
            at::where(after.abs() > 1e-6, scaled * (before / after), scaled);
      }
      for (int64_t i = 0; i < count; ++i) {
        const auto& [g, r] = members[static_cast<size_t>(i)];
        contexts[g][r] = context.slice(0, i, i + 1);
      }
    }
    for (size_t g = 0; g < rows.size(); ++g) {
      results[g].context = at::cat(contexts[g], 0).to(context_dtype);
    }
    return results;
  });
}

namespace {

// --- CLIP -------------------------------------------------------------------

class ClipConditioner : public TextConditioner {
 public:
  ClipConditioner(std::string model_name, const ClipCondition& config,
                  const ParamScope& scope)
      : model_name_(std::move(model_name)),
        config_(config),
        transformer_(std::make_unique<ClipTextModel>(
            config.text, scope.Sub("transformer").Sub("text_model"))) {}

  absl::Status LoadTokenizer() override {
    LDM_ASSIGN_OR_RETURN(tokenizer_,
                         ClipTokenizer::Load(config_.tokenizer_dir));
    return absl::OkStatus();
  }

 protected:
  absl::StatusOr<Tokens> Tokenize(const std::string& text) const override {
    if (!tokenizer_) {
      return absl::FailedPreconditionError(
          absl::StrCat("model ", model_name_, ": no CLIP tokenizer at ",
                       config_.tokenizer_dir));
    }
    ClipTokenizer::Chunked chunked =
        tokenizer_->EncodeChunked(text, kMaxChunks);
    Tokens tokens{std::move(chunked.ids), {}, ClipTokenizer::kContextLength};
    if (chunked.truncated) {
      tokens.warnings.push_back(absl::StrCat(
          "prompt truncated to ", kMaxChunks * ClipTokenizer::kIdsPerChunk,
          " CLIP tokens (", kMaxChunks, " chunks of ",
          ClipTokenizer::kIdsPerChunk, ")"));
    }
    return tokens;
  }
  size_t CountTokens(const std::string& text) const override {
    return tokenizer_->Encode(text).size();
  }
  size_t FirstTextPosition() const override { return 1; }
  size_t TextPosition(size_t index) const override {
    // Chunk by chunk, each after its start token.
    constexpr size_t kIds = ClipTokenizer::kIdsPerChunk;
    return (index / kIds) * ClipTokenizer::kContextLength + 1 + index % kIds;
  }
  at::Tensor Forward(const at::Tensor& ids, int clip_skip) const override {
    return transformer_->Encode(ids,
                                clip_skip > 0 ? clip_skip : config_.clip_skip);
  }

 private:
  // The longest prompt: 8 chunks of 75 tokens; cross-attention's cost grows
  // with the context's length.
  static constexpr int kMaxChunks = 8;

  std::string model_name_;
  ClipCondition config_;
  std::unique_ptr<ClipTextModel> transformer_;
  std::unique_ptr<ClipTokenizer> tokenizer_;
};

// --- BERT -------------------------------------------------------------------

class BertConditioner : public TextConditioner {
 public:
  BertConditioner(std::string model_name, const TextEncoderConfig& config,
                  const ParamScope& scope)
      : model_name_(std::move(model_name)),
        config_(config),
        transformer_(std::make_unique<TextTransformer>(config, scope)) {}

  absl::Status LoadTokenizer() override {
    absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> loaded =
        WordPieceTokenizer::Load(config_.vocab_file);
    if (!loaded.ok()) {
      return absl::Status(
          loaded.status().code(),
          absl::StrCat("model ", model_name_,
                       " reads prompts with BERT's WordPiece vocabulary "
                       "(bert-base-uncased vocab.txt): ",
                       loaded.status().message()));
    }
    if ((*loaded)->vocab_size() != config_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_.vocab_file, ": ", (*loaded)->vocab_size(),
                       " tokens, the config says ", config_.vocab_size));
    }
    tokenizer_ = std::move(*loaded);
    return absl::OkStatus();
  }

 protected:
  absl::StatusOr<Tokens> Tokenize(const std::string& text) const override {
    if (!tokenizer_) {
      return absl::FailedPreconditionError(
          absl::StrCat("model ", model_name_, ": no BERT vocabulary at ",
                       config_.vocab_file));
    }
    WordPieceTokenizer::Padded padded =
        tokenizer_->EncodePadded(text, config_.max_length);
    Tokens tokens{std::move(padded.ids), {}};
    if (padded.truncated) {
      tokens.warnings.push_back(absl::StrCat(
          "prompt truncated to ", config_.max_length - 2, " BERT tokens"));
    }
    return tokens;
  }
  size_t CountTokens(const std::string& text) const override {
    return tokenizer_->Encode(text).size();
  }
  size_t FirstTextPosition() const override { return 1; }
  at::Tensor Forward(const at::Tensor& ids, int) const override {
    return transformer_->Forward(ids);
  }

 private:
  std::string model_name_;
  TextEncoderConfig config_;
  std::unique_ptr<TextTransformer> transformer_;
  std::unique_ptr<WordPieceTokenizer> tokenizer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TextConditioner>> MakeTextConditioner(
    const ModelConfig& config, const ParamScope& scope) {
  if (config.clip && config.text_encoder) {
    return absl::InvalidArgumentError(
        "config: cond_stage (CLIP) and text_encoder are exclusive");
  }
  const int64_t context_dim = config.unet.context_dim;
  if (config.clip) {
    if (config.clip->text.hidden_size != context_dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: cond_stage.hidden_size ", config.clip->text.hidden_size,
          " != unet.context_dim ", context_dim));
    }
    return std::make_unique<ClipConditioner>(config.name, *config.clip, scope);
  }
  if (!config.text_encoder) return nullptr;
  const TextEncoderConfig& text = *config.text_encoder;
  if (text.dim != context_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: text_encoder.dim ", text.dim,
                     " != unet.context_dim ", context_dim));
  }
  if (text.uses_wordpiece()) {
    return std::make_unique<BertConditioner>(config.name, text, scope);
  }
  return std::make_unique<WordConditioner>(text, scope);
}

// --- Word-level -------------------------------------------------------------

WordConditioner::WordConditioner(const TextEncoderConfig& config,
                                 const ParamScope& scope)
    : config_(config),
      transformer_(std::make_unique<TextTransformer>(config, scope)),
      tokenizer_(
          std::make_unique<WordTokenizer>(config.vocab, config.max_length)) {}

WordConditioner::~WordConditioner() = default;

absl::StatusOr<TextConditioner::Tokens> WordConditioner::Tokenize(
    const std::string& text) const {
  WordTokenizer::Encoding encoding = tokenizer_->Encode(text);
  Tokens tokens{std::move(encoding.ids), {}};
  if (encoding.truncated) {
    tokens.warnings.push_back(
        absl::StrCat("prompt truncated to ", config_.max_length, " words"));
  }
  if (encoding.unknown_words > 0) {
    tokens.warnings.push_back(absl::StrCat(
        encoding.unknown_words, " word(s) not in the model's vocabulary"));
  }
  return tokens;
}

size_t WordConditioner::CountTokens(const std::string& text) const {
  size_t count = 0;
  for (int64_t id : tokenizer_->Encode(text).ids) {
    count += id != WordTokenizer::kPadId;
  }
  return count;
}

at::Tensor WordConditioner::Forward(const at::Tensor& ids, int) const {
  return transformer_->Forward(ids);
}

}  // namespace ldm
