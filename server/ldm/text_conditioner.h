// The text stage of a latent diffusion model: prompts -> the context its
// UNet cross-attends to. One implementation per text-encoder family, each a
// tokenizer and a transformer:
//
//   ClipConditioner   SD v1: CLIP's BPE tokenizer and text transformer
//   BertConditioner   the paper's text-to-image model: BERT's WordPiece
//                     tokens into an x-transformers encoder
//   WordConditioner   our own small models: a word-level vocabulary into
//                     the same x-transformers encoder
//
// Only WordConditioner is declared here, for the trainer; the others live in
// text_conditioner.cc behind MakeTextConditioner.
//
// Prompt weights ("(word:1.3)", prompt_weights.h) are applied here, once for
// all families. A family may split a long prompt into chunks (CLIP: 75
// tokens each, as the common SD front ends do), each encoded alone and the
// contexts concatenated along L; the prompts of one group (one job's
// negative and positive prompt) are padded with empty chunks to the same
// length, and groups never pad each other, so a job's context does not
// depend on what else is encoded with it. Encode() is const and
// thread-safe; every LibTorch error comes back as a status.
#ifndef LDMSERVE_SERVER_LDM_TEXT_CONDITIONER_H_
#define LDMSERVE_SERVER_LDM_TEXT_CONDITIONER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/ldm/model_config.h"
#include "server/ldm/parameters.h"

namespace ldm {

class TextTransformer;
class WordTokenizer;

struct TextConditioning {
  at::Tensor context;  // [B, L, D]
  std::vector<std::string> warnings;
  std::vector<std::vector<std::string>> row_warnings;  // Per prompt (row).
};

// Prompts encoded to one context: rows of one length.
struct PromptGroup {
  std::vector<std::string> prompts;
  // Which CLIP layer's output (1 = the last, 2 = the penultimate); 0 = the
  // model's own. Other families have one output and take 0 only.
  int clip_skip = 0;
};

class TextConditioner {
 public:
  virtual ~TextConditioner();

  // Reads the tokenizer's files, where the family has any (the transformer's
  // parameters are declared at construction and loaded with the rest).
  virtual absl::Status LoadTokenizer() { return absl::OkStatus(); }

  // One row per prompt: [B, L, D] on `device`, in `context_dtype` (the
  // UNet's: what its cross-attention reads).
  absl::StatusOr<TextConditioning> Encode(
      const std::vector<std::string>& prompts, at::Device device,
      at::ScalarType context_dtype, int clip_skip = 0) const;
  // One context per group, the groups' prompts encoded together (one
  // encoder call per distinct row length and clip_skip).
  absl::StatusOr<std::vector<TextConditioning>> EncodeGroups(
      const std::vector<PromptGroup>& groups, at::Device device,
      at::ScalarType context_dtype) const;

 protected:
  struct Tokens {
    // One or more chunks of `chunk_length` ids, each padded to it.
    std::vector<int64_t> ids;
    std::vector<std::string> warnings;
    size_t chunk_length = 0;  // 0: the whole row is one chunk.
  };
  // The padded ids of one prompt (weights already stripped from it);
  // FAILED_PRECONDITION where the tokenizer's files were not loaded.
  virtual absl::StatusOr<Tokens> Tokenize(const std::string& text) const = 0;
  // The number of tokens `text` becomes inside a row, without start, end or
  // padding: how many positions a weighted segment covers.
  virtual size_t CountTokens(const std::string& text) const = 0;
  // The row position of the first text token (1 after a start token).
  virtual size_t FirstTextPosition() const = 0;
  // The row position of the `index`th text token: after the first, in
  // order, unless the family splits prompts into chunks.
  virtual size_t TextPosition(size_t index) const {
    return FirstTextPosition() + index;
  }
  // ids [B, L] int64 on the device -> [B, L, D]; one chunk per row.
  // `clip_skip` as in PromptGroup (0 = the model's own).
  virtual at::Tensor Forward(const at::Tensor& ids, int clip_skip) const = 0;
};

// The family `config` names, its parameters declared under `scope` (the
// model's cond_stage_model); null for a model without text conditioning.
// INVALID_ARGUMENT where the encoder's width is not the UNet's context_dim.
absl::StatusOr<std::unique_ptr<TextConditioner>> MakeTextConditioner(
    const ModelConfig& config, const ParamScope& scope);

class WordConditioner : public TextConditioner {
 public:
  WordConditioner(const TextEncoderConfig& config, const ParamScope& scope);
  ~WordConditioner() override;

  // For training (tools/train), which trains the encoder with the UNet.
  const TextTransformer& transformer() const { return *transformer_; }
  const WordTokenizer& tokenizer() const { return *tokenizer_; }

 protected:
  absl::StatusOr<Tokens> Tokenize(const std::string& text) const override;
  size_t CountTokens(const std::string& text) const override;
  size_t FirstTextPosition() const override { return 0; }
  at::Tensor Forward(const at::Tensor& ids, int clip_skip) const override;

 private:
  TextEncoderConfig config_;
  std::unique_ptr<TextTransformer> transformer_;
  std::unique_ptr<WordTokenizer> tokenizer_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_TEXT_CONDITIONER_H_
