#include "server/ldm/text_conditioner.h"

#include <c10/core/InferenceMode.h>

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
    at::ScalarType context_dtype) const {
  // Tokens first (one row per prompt), then one encoder call for all.
  TextConditioning result;
  std::vector<int64_t> ids;
  // Each token's emphasis ("(word:1.3)"); 1 everywhere for plain prompts.
  std::vector<float> token_weights;
  bool weighted = false;
  for (const std::string& prompt : prompts) {
    const std::vector<PromptSegment> segments = ParsePromptWeights(prompt);
    LDM_ASSIGN_OR_RETURN(Tokens row, Tokenize(PromptText(segments)));
    std::vector<float> row_weights(row.ids.size(), 1.0f);
    if (HasWeights(segments)) {
      weighted = true;
      size_t position = FirstTextPosition();
      for (const PromptSegment& segment : segments) {
        const size_t count = CountTokens(segment.text);
        for (size_t k = 0; k < count && position < row.ids.size(); ++k) {
          row_weights[position++] = segment.weight;
        }
      }
    }
    ids.insert(ids.end(), row.ids.begin(), row.ids.end());
    token_weights.insert(token_weights.end(), row_weights.begin(),
                         row_weights.end());
    result.warnings.insert(result.warnings.end(), row.warnings.begin(),
                           row.warnings.end());
    result.row_warnings.push_back(std::move(row.warnings));
  }
  return CallTorch("encode text", [&] {
    c10::InferenceMode inference;
    const auto rows = static_cast<int64_t>(prompts.size());
    const at::Tensor id_tensor =
        at::tensor(ids, at::TensorOptions().dtype(at::kLong))
            .reshape({rows, -1})
            .to(device);
    at::Tensor context =
        ForEachRowIfInvariant(id_tensor.size(0), [&](int64_t begin,
                                                     int64_t end) {
          return Forward(id_tensor.slice(0, begin, end));
        }).to(at::kFloat);
    if (weighted) {
      // As those front ends do: scale each token's row by its weight, then
      // give each prompt's rows back their mean (unless it is ~0).
      const at::Tensor weights = at::tensor(token_weights)
                                     .reshape({rows, -1, 1})
                                     .to(context.device(), context.dtype());
      const at::Tensor before = context.mean({1, 2}, /*keepdim=*/true);
      const at::Tensor scaled = context * weights;
      const at::Tensor after = scaled.mean({1, 2}, /*keepdim=*/true);
      context =
          at::where(after.abs() > 1e-6, scaled * (before / after), scaled);
    }
    result.context = context.to(context_dtype);
    return result;
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
    ClipTokenizer::Padded padded = tokenizer_->EncodePadded(text);
    Tokens tokens{std::move(padded.ids), {}};
    if (padded.truncated) {
      tokens.warnings.push_back("prompt truncated to 75 CLIP tokens");
    }
    return tokens;
  }
  size_t CountTokens(const std::string& text) const override {
    return tokenizer_->Encode(text).size();
  }
  size_t FirstTextPosition() const override { return 1; }
  at::Tensor Forward(const at::Tensor& ids) const override {
    return transformer_->Encode(ids, config_.clip_skip);
  }

 private:
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
  at::Tensor Forward(const at::Tensor& ids) const override {
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

at::Tensor WordConditioner::Forward(const at::Tensor& ids) const {
  return transformer_->Forward(ids);
}

}  // namespace ldm
