#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "server/ldm/image_tensor.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/layers.h"
#include "server/ldm/safetensors.h"
#include "server/ldm/sampler.h"
#include "server/ldm/text_encoder.h"
#include "tests/ldm/test_util.h"

namespace ldm {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<LatentDiffusion> TinyModel(uint64_t seed = 7) {
  auto model =
      LatentDiffusion::CreateRandom(testing::TinyTextToImageConfig(), seed);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

TEST(LatentDiffusionTest, ParameterNamesMirrorTheReference) {
  auto model = TinyModel();
  const std::string path = ::testing::TempDir() + "/names.safetensors";
  ASSERT_TRUE(model->Save(path).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  for (const char* key : {
           "model.diffusion_model.time_embed.0.weight",
           "model.diffusion_model.input_blocks.0.0.weight",
           "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
           "model.diffusion_model.input_blocks.2.0.op.weight",
           "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn1."
           "to_q.weight",
           "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.ff.net."
           "0.proj.weight",
           "model.diffusion_model.middle_block.1.proj_in.weight",
           "model.diffusion_model.output_blocks.1.2.conv.weight",
           "model.diffusion_model.out.2.weight",
           "first_stage_model.encoder.down.0.block.0.norm1.weight",
           "first_stage_model.encoder.down.0.downsample.conv.weight",
           "first_stage_model.decoder.up.1.upsample.conv.weight",
           "first_stage_model.quant_conv.weight",
           "first_stage_model.post_quant_conv.weight",
           "cond_stage_model.transformer.token_emb.weight",
           "alphas_cumprod",
           "scale_factor",
       }) {
    EXPECT_TRUE((*file)->Contains(key)) << key;
  }
}

TEST(LatentDiffusionTest, UNetKeepsTheLatentShape) {
  auto model = TinyModel();
  at::Tensor x = at::randn({3, 4, 8, 12});
  at::Tensor t = at::tensor({1, 500, 999});
  at::Tensor context = at::randn({3, 8, 16});
  at::Tensor out = model->denoiser().unet().Forward(x, t, context);
  EXPECT_EQ(out.sizes(), x.sizes());
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
}

TEST(LatentDiffusionTest, AutoencoderRoundTripShapes) {
  auto model = TinyModel();
  at::Tensor image = at::rand({2, 3, 16, 24}) * 2 - 1;
  at::Tensor moments = model->first_stage().autoencoder().EncodeMoments(image);
  EXPECT_EQ(moments.sizes(), (at::IntArrayRef{2, 8, 8, 12}));
  DiagonalGaussian posterior = Autoencoder::Posterior(moments);
  EXPECT_LE(posterior.logvar.max().item<float>(), 20.0f);
  at::Tensor decoded =
      model->first_stage().autoencoder().Decode(posterior.mean);
  EXPECT_EQ(decoded.sizes(), image.sizes());
}

TEST(LatentDiffusionTest, SameSeedSameWeightsAndImages) {
  auto a = TinyModel(3);
  auto b = TinyModel(3);
  auto c = TinyModel(4);
  GenerationRequest job;
  job.prompt = "a red circle";
  job.sampler.steps = 4;
  job.seed = 11;
  auto image_a = testing::RunToTensor(*a, job);
  auto image_b = testing::RunToTensor(*b, job);
  auto image_c = testing::RunToTensor(*c, job);
  ASSERT_TRUE(image_a.ok()) << image_a.status();
  ASSERT_TRUE(image_b.ok() && image_c.ok());
  EXPECT_EQ(image_a->sizes(), (at::IntArrayRef{1, 16, 16, 3}));
  EXPECT_EQ(image_a->scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(*image_a, *image_b));
  EXPECT_FALSE(at::equal(*image_a, *image_c));
  job.seed = 12;
  auto other_seed = testing::RunToTensor(*a, job);
  EXPECT_FALSE(at::equal(*image_a, *other_seed));
}

TEST(LatentDiffusionTest, ImageIOfAJobEqualsThatSeedAlone) {
  auto model = TinyModel();
  GenerationRequest job;
  job.prompt = "a blue square";
  job.sampler.steps = 3;
  job.seed = 20;
  job.num_images = 3;
  auto three = testing::RunToTensor(*model, job);
  ASSERT_TRUE(three.ok());
  job.seed = 22;
  job.num_images = 1;
  auto third = testing::RunToTensor(*model, job);
  ASSERT_TRUE(third.ok());
  EXPECT_TRUE(at::allclose(three->slice(0, 2, 3).to(at::kFloat),
                           third->to(at::kFloat), 0, 1.0));
}

TEST(LatentDiffusionTest, GuidanceScaleOneIsTheConditionalPrediction) {
  auto model = TinyModel();
  auto text = model->EncodeText({"", "a red circle"});
  ASSERT_TRUE(text.ok());
  at::Tensor uncond = text->context.slice(0, 0, 1);
  at::Tensor cond = text->context.slice(0, 1, 2);
  SamplerOptions options;
  options.steps = 2;
  options.guidance_scale = 1.0f;
  // A scale-1 task given an unconditional context must step exactly as one
  // given none.
  auto with_uncond = model->NewImageTask(5, 8, 8, options, cond, uncond);
  auto cond_only = model->NewImageTask(5, 8, 8, options, cond, at::Tensor());
  ASSERT_TRUE(with_uncond.ok() && cond_only.ok());
  ImageTask* first = &*with_uncond;
  ImageTask* second = &*cond_only;
  ASSERT_TRUE(model->DenoiseStep({&first, 1}).ok());
  ASSERT_TRUE(model->DenoiseStep({&second, 1}).ok());
  EXPECT_TRUE(at::equal(first->sampler->latent(), second->sampler->latent()));
  // And it equals the DDIM update from the raw conditional UNet output.
  auto reference = model->NewImageTask(5, 8, 8, options, cond, at::Tensor());
  at::Tensor eps = model->denoiser().unet().Forward(
      reference->sampler->latent(),
      at::tensor({reference->sampler->timestep()}), cond);
  reference->sampler->Step(eps);
  EXPECT_TRUE(at::allclose(first->sampler->latent(),
                           reference->sampler->latent(), 1e-5, 1e-6));
  // A real guidance scale changes the step.
  options.guidance_scale = 7.5f;
  auto guided = model->NewImageTask(5, 8, 8, options, cond, uncond);
  ImageTask* third = &*guided;
  ASSERT_TRUE(model->DenoiseStep({&third, 1}).ok());
  EXPECT_FALSE(
      at::allclose(third->sampler->latent(), first->sampler->latent()));
}

TEST(LatentDiffusionTest, LoadReportsMissingAndMisshapedTensors) {
  auto model = TinyModel();
  const std::string dir = ::testing::TempDir();
  const std::string config_path = dir + "/tiny.json";
  { std::ofstream(config_path) << ModelConfigToJson(model->config()); }
  const std::string good = dir + "/good.safetensors";
  ASSERT_TRUE(model->Save(good).ok());
  auto loaded = LatentDiffusion::Load(config_path, good);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  GenerationRequest job;
  job.sampler.steps = 2;
  EXPECT_TRUE(at::equal(*testing::RunToTensor(*model, job),
                        *testing::RunToTensor(**loaded, job)));

  auto file = SafetensorsFile::Open(good);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, entry] : (*file)->entries()) {
    tensors[name] = (*file)->Get(name)->clone();
  }
  auto write_variant = [&](const std::string& name,
                           std::map<std::string, at::Tensor> variant) {
    const std::string path = dir + "/" + name;
    EXPECT_TRUE(WriteSafetensors(path, variant).ok());
    return path;
  };
  auto missing = tensors;
  missing.erase("first_stage_model.quant_conv.weight");
  auto status = LatentDiffusion::Load(
                    config_path, write_variant("missing.safetensors", missing))
                    .status();
  EXPECT_THAT(status.message(),
              HasSubstr("missing 1 tensor(s): "
                        "first_stage_model.quant_conv.weight"));

  auto misshaped = tensors;
  misshaped["model.diffusion_model.out.2.bias"] = at::zeros({5});
  status = LatentDiffusion::Load(config_path,
                                 write_variant("shape.safetensors", misshaped))
               .status();
  EXPECT_THAT(status.message(),
              HasSubstr("shape of model.diffusion_model.out.2.bias is [5], "
                        "expected [4]"));

  auto extra = tensors;
  extra["model.diffusion_model.surprise"] = at::zeros({1});
  const std::string extra_path = write_variant("extra.safetensors", extra);
  status = LatentDiffusion::Load(config_path, extra_path).status();
  EXPECT_THAT(status.message(), HasSubstr("model.diffusion_model.surprise"));
  LoadOptions lenient;
  lenient.strict = false;
  EXPECT_TRUE(LatentDiffusion::Load(config_path, extra_path, lenient).ok());
}

TEST(LatentDiffusionTest, EmaWeightsAreSkippedOrUsedWhenAsked) {
  auto model = TinyModel();
  const std::string dir = ::testing::TempDir();
  const std::string config_path = dir + "/tiny-ema.json";
  { std::ofstream(config_path) << ModelConfigToJson(model->config()); }
  const std::string plain = dir + "/plain.safetensors";
  ASSERT_TRUE(model->Save(plain).ok());
  // A CompVis checkpoint also holds the UNet's EMA under LitEma's names.
  auto file = SafetensorsFile::Open(plain);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, entry] : (*file)->entries()) {
    tensors[name] = (*file)->Get(name)->clone();
    const std::string unet = "model.diffusion_model.";
    if (name.rfind(unet, 0) == 0) {
      std::string flat = "diffusion_model." + name.substr(unet.size());
      flat.erase(std::remove(flat.begin(), flat.end(), '.'), flat.end());
      tensors["model_ema." + flat] = tensors[name] + 1.0;
    }
  }
  tensors["model_ema.num_updates"] = at::tensor(7);
  const std::string with_ema = dir + "/with-ema.safetensors";
  const absl::Status written = WriteSafetensors(with_ema, tensors);
  ASSERT_TRUE(written.ok()) << written;

  const std::string key = "model.diffusion_model.out.2.weight";
  auto training = LatentDiffusion::Load(config_path, with_ema);
  ASSERT_TRUE(training.ok()) << training.status();
  EXPECT_TRUE(at::equal((*training)->MutableParameters()[key], tensors[key]));
  LoadOptions ema;
  ema.use_ema = true;
  auto averaged = LatentDiffusion::Load(config_path, with_ema, ema);
  ASSERT_TRUE(averaged.ok()) << averaged.status();
  EXPECT_TRUE(
      at::equal((*averaged)->MutableParameters()[key], tensors[key] + 1.0));
  // The autoencoder has no EMA copy: the same weights either way.
  const std::string ae_key = "first_stage_model.quant_conv.weight";
  EXPECT_TRUE(
      at::equal((*averaged)->MutableParameters()[ae_key], tensors[ae_key]));
  auto none = LatentDiffusion::Load(config_path, plain, ema);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.status().message(), HasSubstr("no EMA weights"));
}

TEST(AutoencoderTest, VqQuantisesToTheNearestCodeBeforeDecoding) {
  ModelConfig config = testing::TinyTextToImageConfig();
  config.ae.kind = AutoencoderKind::kVq;
  config.ae.n_embed = 16;
  config.ae.embed_dim = 3;
  config.ae.z_channels = 3;
  config.ae.double_z = false;
  config.unet.in_channels = config.unet.out_channels = 3;
  auto model = LatentDiffusion::CreateRandom(config, 3);
  ASSERT_TRUE(model.ok()) << model.status();
  const Autoencoder& ae = (*model)->first_stage().autoencoder();
  const at::Tensor z = ae.EncodeMoments(at::rand({2, 3, 16, 16}) * 2 - 1);
  EXPECT_EQ(z.sizes(), (at::IntArrayRef{2, 3, 8, 8}));
  const at::Tensor quantized = ae.Quantize(z);
  // Brute force: each position's nearest codebook row.
  auto file_path = ::testing::TempDir() + "/vq.safetensors";
  ASSERT_TRUE((*model)->Save(file_path).ok());
  auto file = SafetensorsFile::Open(file_path);
  const at::Tensor codebook =
      *(*file)->Get("first_stage_model.quantize.embedding.weight");
  const at::Tensor flat = z.permute({0, 2, 3, 1}).reshape({-1, 3});
  const at::Tensor nearest =
      codebook.index_select(0, at::cdist(flat, codebook).argmin(1));
  EXPECT_TRUE(
      at::allclose(quantized.permute({0, 2, 3, 1}).reshape({-1, 3}), nearest));
  // Decoding quantises: z and its codes decode alike.
  EXPECT_TRUE(at::allclose(ae.Decode(z), ae.Decode(quantized)));
  // A VQ latent is deterministic: no posterior noise.
  auto a = (*model)->first_stage().EncodeImages(at::zeros({1, 3, 16, 16}),
                                                at::randn({1, 3, 8, 8}));
  auto b = (*model)->first_stage().EncodeImages(at::zeros({1, 3, 16, 16}),
                                                at::randn({1, 3, 8, 8}));
  EXPECT_TRUE(at::equal(*a, *b));
}

TEST(TiledDecodeTest, OneTileIsExactAndOverlapShrinksTheSeams) {
  auto model = TinyModel(3);
  const at::Tensor z = at::randn({1, 4, 24, 40});
  const at::Tensor full = *model->first_stage().DecodeLatents(z);
  EXPECT_EQ(full.sizes(), (at::IntArrayRef{1, 3, 48, 80}));
  // A tile that covers the latent decodes it exactly.
  auto whole = model->first_stage().DecodeLatentsTiled(z, {40, 8, 0});
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_TRUE(at::allclose(*whole, full, 1e-5, 1e-5));
  // Per-tile GroupNorm statistics and the decoder's receptive field make
  // tiles differ from the whole; more overlap blends them closer. Measured
  // with random weights (range about 3.6): mean |diff| 0.12 at tile 8,
  // overlap 2, and 0.04 at tile 16, overlap 6.
  auto mean_error = [&](int64_t tile, int64_t overlap) {
    auto tiled = model->first_stage().DecodeLatentsTiled(z, {tile, overlap, 0});
    EXPECT_TRUE(tiled.ok());
    EXPECT_EQ(tiled->sizes(), full.sizes());
    return (*tiled - full).abs().mean().item<double>();
  };
  const double coarse = mean_error(8, 2);
  const double fine = mean_error(16, 6);
  EXPECT_LT(fine, coarse);
  EXPECT_LT(fine, 0.06);
  // Past the threshold DecodeLatents tiles on its own.
  LoadOptions tiny_tiles;
  tiny_tiles.tiles = {16, 6, 16 * 16};
  auto tiling = LatentDiffusion::CreateRandom(model->config(), 3, tiny_tiles);
  ASSERT_TRUE(tiling.ok());
  EXPECT_TRUE(at::allclose(
      *(*tiling)->first_stage().DecodeLatents(z),
      *model->first_stage().DecodeLatentsTiled(z, {16, 6, 0}), 1e-5, 1e-5));
}

// A smooth test picture in [-1, 1], [1, 3, h, w].
at::Tensor TestPicture(int64_t h, int64_t w) {
  const at::Tensor y = at::linspace(-1, 1, h).reshape({1, 1, h, 1});
  const at::Tensor x = at::linspace(-1, 1, w).reshape({1, 1, 1, w});
  return at::cat({y.expand({1, 1, h, w}), x.expand({1, 1, h, w}),
                  (x * y).expand({1, 1, h, w})},
                 1);
}

// What img2img keeps of its input is a quality property of a trained model
// (measured with the shipped models); with random weights only the
// mechanics can be checked: the steps that run, sizes, seeds.
TEST(PipelineTest, ImageToImageRunsTheStrengthsShareOfSteps) {
  auto model = TinyModel(2);
  GenerationRequest request;
  request.prompt = "a red circle";
  request.sampler.steps = 20;
  request.sampler.strength = 0.3;
  request.task = ImageToImage{RgbImageFromTensor(TestPicture(16, 24))};
  auto prepared = model->PrepareJob(request);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->images[0].sampler->total_steps(), 6);
  auto first = testing::RunToTensor(*model, request);
  auto again = testing::RunToTensor(*model, request);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->sizes(), (at::IntArrayRef{1, 16, 24, 3}));
  EXPECT_TRUE(at::equal(*first, *again));
  request.seed = 2;
  EXPECT_FALSE(at::equal(*first, *testing::RunToTensor(*model, request)));
}

TEST(PipelineTest, InpaintingWithAPlainModelKeepsTheUnmaskedPixels) {
  auto model = TinyModel(2);
  // An input that arrived as bytes.
  const at::Tensor bytes =
      at::randint(0, 256, {16, 16, 3}, at::TensorOptions().dtype(at::kByte));
  GenerationRequest request;
  request.prompt = "a blue square";
  request.sampler.steps = 5;
  request.num_images = 2;
  at::Tensor mask = at::zeros({1, 1, 16, 16});
  mask.slice(2, 4, 12).slice(3, 4, 12).fill_(1);
  request.task = Inpaint{RgbImage{16,
                                  16,
                                  {bytes.data_ptr<uint8_t>(),
                                   bytes.data_ptr<uint8_t>() + bytes.numel()}},
                         MaskFromTensor(mask)};
  auto prepared = model->PrepareJob(request);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_TRUE(prepared->images[0].blend.has_value());
  auto images = testing::RunToTensor(*model, request);
  ASSERT_TRUE(images.ok()) << images.status();
  const at::Tensor keep = (mask[0][0] < 0.5).unsqueeze(-1);
  for (int i = 0; i < 2; ++i) {
    const at::Tensor image = (*images)[i];
    EXPECT_TRUE(
        at::equal(image.masked_select(keep), bytes.masked_select(keep)));
    EXPECT_FALSE(at::equal(image.masked_select(keep.logical_not()),
                           bytes.masked_select(keep.logical_not())));
  }
}

TEST(PipelineTest, DedicatedInpaintingAndSuperResolutionModels) {
  ModelConfig inpainting = testing::TinyTextToImageConfig();
  inpainting.kind = ModelKind::kInpaint;
  inpainting.conditioning_key = ConditioningKey::kHybrid;
  inpainting.unet.in_channels = 4 + 1 + 4;
  auto inpaint_model = LatentDiffusion::CreateRandom(inpainting, 4);
  ASSERT_TRUE(inpaint_model.ok()) << inpaint_model.status();
  GenerationRequest request;
  request.sampler.steps = 3;
  // It cannot draw from text alone.
  EXPECT_EQ((*inpaint_model)->PrepareJob(request).status().code(),
            absl::StatusCode::kFailedPrecondition);
  at::Tensor mask = at::ones({1, 1, 16, 16});
  mask.slice(2, 0, 8).fill_(0);
  const RgbImage input = RgbImageFromTensor(TestPicture(16, 16));
  request.task = Inpaint{input, MaskFromTensor(mask)};
  auto prepared = (*inpaint_model)->PrepareJob(request);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->images[0].concat.size(1), 5);
  EXPECT_FALSE(prepared->images[0].blend.has_value());
  auto inpainted = testing::RunToTensor(**inpaint_model, request);
  ASSERT_TRUE(inpainted.ok()) << inpainted.status();
  EXPECT_TRUE(at::equal(inpainted->slice(1, 0, 8),
                        Uint8ImagesTensor({input}).slice(1, 0, 8)));

  ModelConfig upscaler = testing::TinyTextToImageConfig();
  upscaler.kind = ModelKind::kSuperResolution;
  upscaler.conditioning_key = ConditioningKey::kConcat;
  upscaler.text_encoder.reset();
  upscaler.unet.use_spatial_transformer = false;
  upscaler.unet.context_dim = 0;
  upscaler.unet.num_heads = -1;
  upscaler.unet.num_head_channels = 16;
  upscaler.unet.in_channels = 4 + 3;
  auto sr_model = LatentDiffusion::CreateRandom(upscaler, 5);
  ASSERT_TRUE(sr_model.ok()) << sr_model.status();
  GenerationRequest upscale;
  upscale.sampler.steps = 3;
  upscale.sampler.guidance_scale = 1.0f;
  upscale.task = SuperResolution{RgbImageFromTensor(TestPicture(8, 12))};
  auto upscaled = testing::RunToTensor(**sr_model, upscale);
  ASSERT_TRUE(upscaled.ok()) << upscaled.status();
  EXPECT_EQ(upscaled->sizes(), (at::IntArrayRef{1, 16, 24, 3}));
}

TEST(LatentDiffusionTest, ClassLabelsConditionTheUNet) {
  ModelConfig config = testing::TinyTextToImageConfig();
  config.conditioning_key = ConditioningKey::kAdm;
  config.unet.num_classes = 10;
  auto model = LatentDiffusion::CreateRandom(config, 6);
  ASSERT_TRUE(model.ok()) << model.status();
  auto text = (*model)->EncodeText({"a red circle"});
  ASSERT_TRUE(text.ok());
  SamplerOptions options;
  options.steps = 2;
  options.guidance_scale = 1.0f;
  auto step_with_label = [&](int64_t label) {
    auto task = (*model)->NewImageTask(3, 8, 8, options, text->context, {});
    EXPECT_TRUE(task.ok());
    task->class_labels = at::tensor({label});
    ImageTask* pointer = &*task;
    EXPECT_TRUE((*model)->DenoiseStep({&pointer, 1}).ok());
    return task->sampler->latent();
  };
  EXPECT_TRUE(at::equal(step_with_label(3), step_with_label(3)));
  EXPECT_FALSE(at::allclose(step_with_label(3), step_with_label(4)));
}

// bfloat16 keeps 8 significant bits: each rounding moves a value by at most
// u = 2^-8 of itself. The bounds below follow from that, not from what one
// CPU printed: a CPU with native bf16 kernels and one that emulates them
// round differently, so only the arithmetic's own bound holds on both.
TEST(LatentDiffusionTest, Bfloat16OnTheCpuStaysWithinItsRounding) {
  auto f32 = TinyModel(3);
  LoadOptions bf16;
  bf16.dtype = at::kBFloat16;
  auto low = LatentDiffusion::CreateRandom(f32->config(), 3, bf16);
  ASSERT_TRUE(low.ok()) << low.status();
  c10::InferenceMode inference;
  // One UNet call: its layers (about 40 of them in the tiny model) each
  // round their output once, and normalisation keeps each layer's gain near
  // one, so the relative error is at most of the order of 40 u = 0.16; a
  // correct bf16 forward sits far below it (~0.01 here), a wrong one (a
  // missed cast, a bf16 softmax over long rows) far above.
  at::Generator generator = MakeGenerator(11);
  const at::Tensor x = StandardNormal({2, f32->config().unet.in_channels, 8, 8},
                                      generator, at::TensorOptions());
  auto text = f32->EncodeText({"", "a red circle"});
  ASSERT_TRUE(text.ok());
  const at::Tensor t = at::full({2}, 500.0f);
  const at::Tensor exact = f32->denoiser().unet().Forward(x, t, text->context);
  const at::Tensor rounded =
      (*low)
          ->denoiser()
          .unet()
          .Forward(x.to(at::kBFloat16), t, text->context.to(at::kBFloat16))
          .to(at::kFloat);
  const double relative =
      ((rounded - exact).norm() / exact.norm()).item<double>();
  std::printf("bf16 UNet call: relative error %.4f (u = %.4f)\n", relative,
              1.0 / 256);
  EXPECT_LT(relative, 40.0 / 256);
  EXPECT_GT(relative, 0.0);  // It did run in bf16.
  // A whole job: the sampler's state stays float32 and the decoder runs in
  // float32, so only the UNet's rounding enters, damped by each step's
  // (1 - a) share of the prediction. A bound a correct run keeps on any CPU:
  // the images agree far better than two seeds do (73 levels apart here).
  GenerationRequest request;
  request.prompt = "a red circle";
  request.sampler.steps = 5;
  auto a = testing::RunToTensor(*f32, request);
  auto b = testing::RunToTensor(**low, request);
  request.seed = 2;
  auto other_seed = testing::RunToTensor(*f32, request);
  ASSERT_TRUE(a.ok() && b.ok() && other_seed.ok()) << b.status();
  const double bf16_levels =
      (a->to(at::kFloat) - b->to(at::kFloat)).abs().mean().item<double>();
  const double seed_levels = (a->to(at::kFloat) - other_seed->to(at::kFloat))
                                 .abs()
                                 .mean()
                                 .item<double>();
  std::printf("bf16 job: mean %.2f levels from f32; another seed %.2f\n",
              bf16_levels, seed_levels);
  EXPECT_LT(bf16_levels, seed_levels / 4);
}

TEST(TiledEncodeTest, LargeImagesEncodeInBlendedTiles) {
  auto whole = TinyModel(3);
  const at::Tensor picture = TestPicture(32, 48);
  const at::Tensor noise = at::zeros({1, 4, 16, 24});
  const at::Tensor reference =
      *whole->first_stage().EncodeImages(picture, noise);
  // Relative mean error of a tiled encode against the whole one.
  auto relative_error = [&](int64_t tile, int64_t overlap) {
    LoadOptions options;
    options.tiles = {tile, overlap, 8 * 8};
    auto tiled = LatentDiffusion::CreateRandom(whole->config(), 3, options);
    EXPECT_TRUE(tiled.ok());
    auto latent = (*tiled)->first_stage().EncodeImages(picture, noise);
    EXPECT_TRUE(latent.ok()) << latent.status();
    EXPECT_EQ(latent->sizes(), reference.sizes());
    return (*latent - reference).abs().mean().item<double>() /
           reference.abs().mean().item<double>();
  };
  const double small_tiles = relative_error(8, 4);
  const double large_tiles = relative_error(16, 8);
  std::printf("tiled encode relative error: tile 8/4 %.3f, tile 16/8 %.3f\n",
              small_tiles, large_tiles);
  EXPECT_GT(small_tiles, 0.0);  // It did tile.
  EXPECT_LT(large_tiles, small_tiles);
}

TEST(BatchInvarianceTest, BatchedStepsAreBitIdenticalToStepsAlone) {
  SetBatchInvariant(true);
  auto model = TinyModel();
  auto text = model->EncodeText({"", "a red circle", "a blue square"});
  ASSERT_TRUE(text.ok());
  auto make = [&](uint64_t seed, int steps, float scale, int prompt,
                  SamplerKind kind) {
    SamplerOptions options;
    options.kind = kind;
    options.steps = steps;
    options.guidance_scale = scale;
    auto task = model->NewImageTask(seed, 8, 8, options,
                                    text->context.slice(0, prompt, prompt + 1),
                                    text->context.slice(0, 0, 1));
    EXPECT_TRUE(task.ok());
    return std::move(task).value();
  };
  ImageTask alone_a = make(1, 5, 7.5f, 1, SamplerKind::kDdim);
  ImageTask alone_b = make(2, 8, 3.0f, 2, SamplerKind::kEulerAncestral);
  ImageTask batch_a = make(1, 5, 7.5f, 1, SamplerKind::kDdim);
  ImageTask batch_b = make(2, 8, 3.0f, 2, SamplerKind::kEulerAncestral);
  for (int step = 0; step < 3; ++step) {
    ImageTask* pa = &alone_a;
    ImageTask* pb = &alone_b;
    ASSERT_TRUE(model->DenoiseStep({&pa, 1}).ok());
    ASSERT_TRUE(model->DenoiseStep({&pb, 1}).ok());
    std::vector<ImageTask*> both = {&batch_a, &batch_b};
    ASSERT_TRUE(model->DenoiseStep(both).ok());
  }
  EXPECT_TRUE(at::equal(alone_a.sampler->latent(), batch_a.sampler->latent()));
  EXPECT_TRUE(at::equal(alone_b.sampler->latent(), batch_b.sampler->latent()));
  // And decoding together equals decoding alone.
  auto together = model->first_stage().DecodeToImages(
      {batch_a.sampler->latent(), batch_b.sampler->latent()});
  auto first = model->first_stage().DecodeToImages({alone_a.sampler->latent()});
  ASSERT_TRUE(together.ok() && first.ok());
  EXPECT_TRUE(at::equal(together->slice(0, 0, 1), *first));
  SetBatchInvariant(false);
}

TEST(BatchInvarianceTest, ShippedModelJobsBatchedEqualJobsAlone) {
  // Found by the soak test: "an orange square" (seed 1, 3 steps, guidance
  // 4) decoded with 7 other latents differed by one level in one pixel from
  // its decode alone: element-wise and norm kernels outside the per-sample
  // convolutions split their work by the batch's size. Every stage now runs
  // each sample alone.
  SetBatchInvariant(true);
  const std::string dir =
      std::string(LDMSERVE_SOURCE_DIR) + "/models/shapes-txt2img";
  auto model =
      LatentDiffusion::Load(dir + "/config.json", dir + "/weights.safetensors");
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<GenerationRequest> requests(8);
  for (size_t i = 0; i < requests.size(); ++i) {
    const bool odd = i % 2 == 1;
    requests[i].prompt = odd ? "a red circle" : "an orange square";
    requests[i].seed = odd ? 2 : 1;
    requests[i].sampler.steps = odd ? 5 : 3;
    requests[i].sampler.guidance_scale = 4;
  }
  std::vector<const GenerationRequest*> pointers;
  for (const GenerationRequest& request : requests) {
    pointers.push_back(&request);
  }
  std::vector<absl::StatusOr<PreparedJob>> together =
      (*model)->PrepareJobs(pointers);
  for (bool running = true; running;) {
    std::vector<ImageTask*> batch;
    for (absl::StatusOr<PreparedJob>& job : together) {
      ASSERT_TRUE(job.ok()) << job.status();
      if (!job->images[0].sampler->done()) batch.push_back(&job->images[0]);
    }
    running = !batch.empty();
    if (running) ASSERT_TRUE((*model)->DenoiseStep(batch).ok());
  }
  std::vector<const PreparedJob*> all;
  for (const absl::StatusOr<PreparedJob>& job : together) all.push_back(&*job);
  auto decoded_together = (*model)->FinishJobs(all);
  ASSERT_TRUE(decoded_together.ok()) << decoded_together.status();
  for (size_t i : {0, 1}) {
    absl::StatusOr<PreparedJob> alone = (*model)->PrepareJob(requests[i]);
    ASSERT_TRUE(alone.ok()) << alone.status();
    while (!alone->images[0].sampler->done()) {
      ImageTask* task = &alone->images[0];
      ASSERT_TRUE((*model)->DenoiseStep({&task, 1}).ok());
    }
    const PreparedJob* job = &*alone;
    auto decoded_alone = (*model)->FinishJobs({&job, 1});
    ASSERT_TRUE(decoded_alone.ok()) << decoded_alone.status();
    EXPECT_EQ((*decoded_alone)[0][0].pixels, (*decoded_together)[i][0].pixels)
        << requests[i].prompt;
  }
  SetBatchInvariant(false);
}

TEST(BatchInvarianceTest, JobsPreparedTogetherEqualJobsPreparedAlone) {
  // The scheduler's stage thread prepares the jobs it admits together, their
  // prompts in one text-encoder call: each must get what it gets alone,
  // warnings included (only the job with an unknown word is warned).
  SetBatchInvariant(true);
  auto model = TinyModel();
  std::vector<GenerationRequest> requests(3);
  requests[0].prompt = "a red circle";
  requests[0].seed = 1;
  requests[1].prompt = "a (blue:1.4) square";
  requests[1].negative_prompt = "red";
  requests[1].seed = 2;
  requests[2].prompt = "a green circle";  // "green": not in the vocabulary.
  requests[2].seed = 3;
  std::vector<const GenerationRequest*> pointers;
  for (const GenerationRequest& request : requests)
    pointers.push_back(&request);
  std::vector<absl::StatusOr<PreparedJob>> together =
      model->PrepareJobs(pointers);
  ASSERT_EQ(together.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::StatusOr<PreparedJob> alone = model->PrepareJob(requests[i]);
    ASSERT_TRUE(alone.ok() && together[i].ok()) << i;
    const ImageTask& a = alone->images.at(0);
    const ImageTask& b = together[i]->images.at(0);
    EXPECT_TRUE(at::equal(a.cond, b.cond)) << i;
    EXPECT_TRUE(at::equal(a.uncond, b.uncond)) << i;
    EXPECT_TRUE(at::equal(a.sampler->latent(), b.sampler->latent())) << i;
    EXPECT_EQ(alone->warnings, together[i]->warnings) << i;
  }
  EXPECT_TRUE(together[0]->warnings.empty());
  EXPECT_EQ(together[2]->warnings.size(), 1u);
  // The weighted prompt's conditioning differs from the plain one's.
  EXPECT_FALSE(
      at::equal(together[1]->images[0].cond,
                model->PrepareJob(GenerationRequest{.prompt = "a blue square"})
                    ->images[0]
                    .cond));
  SetBatchInvariant(false);
}

// A tiny random text-to-image model read by a 2-layer CLIP text encoder
// with SD's own BPE files.
std::unique_ptr<LatentDiffusion> TinyClipModel() {
  const std::string tokenizer =
      std::string(LDMSERVE_SOURCE_DIR) + "/models/configs/tokenizer";
  ModelConfig config = testing::TinyTextToImageConfig();
  config.text_encoder.reset();
  ClipCondition clip;
  clip.text.hidden_size = config.unet.context_dim;
  clip.text.intermediate_size = 4 * config.unet.context_dim;
  clip.text.num_attention_heads = 2;
  clip.text.num_hidden_layers = 2;
  clip.tokenizer_dir = tokenizer;
  config.clip = clip;
  config.ctx_len = 77;
  auto model = LatentDiffusion::CreateRandom(config, 4);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(model).value() : nullptr;
}

std::string Repeated(const std::string& word, int times) {
  std::string text;
  for (int i = 0; i < times; ++i) text += word + " ";
  return text;
}

TEST(LatentDiffusionTest, ClipConditionedModelEncodesWithTheClipTokenizer) {
  std::unique_ptr<LatentDiffusion> model = TinyClipModel();
  ASSERT_NE(model, nullptr);
  auto text = model->EncodeText({"", "a red circle"});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->context.sizes(), (at::IntArrayRef{2, 77, 16}));
  EXPECT_TRUE(text->warnings.empty());
  // A whole job runs, and saving/loading keeps the text encoder.
  GenerationRequest request;
  request.prompt = "an astronaut riding a horse on mars";
  request.sampler.steps = 2;
  auto images = testing::RunToTensor(*model, request);
  ASSERT_TRUE(images.ok()) << images.status();
  const std::string dir = ::testing::TempDir();
  ASSERT_TRUE(model->Save(dir + "/clip.safetensors").ok());
  std::ofstream(dir + "/clip.json") << ModelConfigToJson(model->config());
  auto loaded =
      LatentDiffusion::Load(dir + "/clip.json", dir + "/clip.safetensors");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(at::equal(*images, *testing::RunToTensor(**loaded, request)));
}

TEST(LongPromptTest, ClipReadsLongPromptsInChunksOf75Tokens) {
  // Bit-exact comparisons of chunks encoded in different calls.
  SetBatchInvariant(true);
  std::unique_ptr<LatentDiffusion> model = TinyClipModel();
  ASSERT_NE(model, nullptr);
  // "cat" is one BPE token: 100 of them are a chunk of 75 and one of 25.
  auto text = model->EncodeText({"", Repeated("cat", 100)});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->context.sizes(), (at::IntArrayRef{2, 154, 16}));
  EXPECT_TRUE(text->warnings.empty());
  // Each chunk is what its tokens give as a prompt of their own, and the
  // shorter prompt (the empty negative one) is padded with empty chunks.
  auto first = model->EncodeText({Repeated("cat", 75)});
  auto second = model->EncodeText({Repeated("cat", 25)});
  auto empty = model->EncodeText({""});
  ASSERT_TRUE(first.ok() && second.ok() && empty.ok());
  const at::Tensor long_row = text->context[1];
  EXPECT_TRUE(at::equal(long_row.slice(0, 0, 77), first->context[0]));
  EXPECT_TRUE(at::equal(long_row.slice(0, 77, 154), second->context[0]));
  EXPECT_TRUE(at::equal(text->context[0].slice(0, 0, 77), empty->context[0]));
  EXPECT_TRUE(at::equal(text->context[0].slice(0, 77, 154), empty->context[0]));
  // 75 tokens are one chunk, as before chunks existed.
  EXPECT_EQ(first->context.size(1), 77);
  // At most 8 chunks, then truncated with a warning.
  auto longest = model->EncodeText({Repeated("cat", 700)});
  ASSERT_TRUE(longest.ok());
  EXPECT_EQ(longest->context.size(1), 8 * 77);
  ASSERT_EQ(longest->warnings.size(), 1u);
  EXPECT_THAT(longest->warnings[0], ::testing::HasSubstr("600 CLIP tokens"));
  // A weight in the second chunk lands on its token there.
  auto weighted = model->EncodeText(
      {Repeated("cat", 80) + "(dog:1.5)", Repeated("cat", 80) + "dog"});
  ASSERT_TRUE(weighted.ok());
  const at::Tensor difference =
      (weighted->context[0] - weighted->context[1]).abs().amax(1);
  // Every position moves a little (the mean is restored), the weighted
  // token's (second chunk, after its start token and 5 cats) the most.
  EXPECT_EQ(difference.argmax().item<int64_t>(), 77 + 1 + 5);
  SetBatchInvariant(false);
}

TEST(LongPromptTest, ClipSkipPicksTheEncodersLayerPerRequest) {
  std::unique_ptr<LatentDiffusion> model = TinyClipModel();
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->capabilities().max_clip_skip, 2);
  EXPECT_EQ(model->capabilities().default_clip_skip, 1);
  auto own = model->EncodeText({"a red circle"});
  auto last = model->EncodeText({"a red circle"}, 1);
  auto penultimate = model->EncodeText({"a red circle"}, 2);
  ASSERT_TRUE(own.ok() && last.ok() && penultimate.ok());
  EXPECT_TRUE(at::equal(own->context, last->context));
  EXPECT_FALSE(at::allclose(last->context, penultimate->context));
  GenerationRequest request;
  request.prompt = "a red circle";
  request.clip_skip = 3;
  EXPECT_EQ(CheckRequest(model->capabilities(), request).status().code(),
            absl::StatusCode::kInvalidArgument);
  request.clip_skip = 2;
  EXPECT_TRUE(CheckRequest(model->capabilities(), request).ok());
  // A model whose text encoder is not CLIP takes none.
  EXPECT_THAT(
      CheckRequest(TinyModel()->capabilities(), request).status().message(),
      ::testing::HasSubstr("clip_skip"));
}

TEST(BatchInvarianceTest, LongAndShortPromptsBatchedEqualThemAlone) {
  // Contexts of different lengths cannot share one UNet call: the step runs
  // each length's rows together, so every job gets what it gets alone.
  SetBatchInvariant(true);
  std::unique_ptr<LatentDiffusion> model = TinyClipModel();
  ASSERT_NE(model, nullptr);
  std::vector<GenerationRequest> requests(3);
  requests[0].prompt = "a red circle";
  requests[1].prompt = Repeated("cat", 100);
  requests[1].negative_prompt = "blurry";
  requests[2].prompt = Repeated("(dog:1.2)", 90);
  requests[2].clip_skip = 2;
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].seed = i + 1;
    requests[i].sampler.steps = 3;
  }
  std::vector<const GenerationRequest*> pointers;
  for (const GenerationRequest& request : requests) {
    pointers.push_back(&request);
  }
  std::vector<absl::StatusOr<PreparedJob>> together =
      model->PrepareJobs(pointers);
  for (bool running = true; running;) {
    std::vector<ImageTask*> batch;
    for (absl::StatusOr<PreparedJob>& job : together) {
      ASSERT_TRUE(job.ok()) << job.status();
      if (!job->images[0].sampler->done()) batch.push_back(&job->images[0]);
    }
    running = !batch.empty();
    if (running) ASSERT_TRUE(model->DenoiseStep(batch).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::StatusOr<PreparedJob> alone = model->PrepareJob(requests[i]);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_TRUE(at::equal(alone->images[0].cond, together[i]->images[0].cond))
        << i;
    while (!alone->images[0].sampler->done()) {
      ImageTask* task = &alone->images[0];
      ASSERT_TRUE(model->DenoiseStep({&task, 1}).ok());
    }
    EXPECT_TRUE(at::equal(alone->images[0].sampler->latent(),
                          together[i]->images[0].sampler->latent()))
        << i;
  }
  EXPECT_EQ(together[1]->images[0].cond.size(1), 154);
  EXPECT_EQ(together[1]->images[0].uncond.size(1), 154);
  SetBatchInvariant(false);
}

TEST(LatentDiffusionTest, TheConfigsBetaScheduleIsUsed) {
  ModelConfig config = testing::TinyTextToImageConfig();
  config.beta_schedule = BetaSchedule::kCosine;
  auto cosine = LatentDiffusion::CreateRandom(config, 1);
  ASSERT_TRUE(cosine.ok()) << cosine.status();
  // Linear 0.00085..0.012 ends at 0.0047; cosine near zero.
  EXPECT_LT((*cosine)->denoiser().schedule().alphas_cumprod_f64(999), 1e-3);
  EXPECT_GT(TinyModel()->denoiser().schedule().alphas_cumprod_f64(999), 4e-3);
}

TEST(WordTokenizerTest, MapsWordsPadsAndTruncates) {
  WordTokenizer tokenizer({"<pad>", "<unk>", "a", "red", "circle"}, 4);
  auto encoding = tokenizer.Encode("A  red, CIRCLE!");
  EXPECT_EQ(encoding.ids, (std::vector<int64_t>{2, 3, 4, 0}));
  EXPECT_FALSE(encoding.truncated);
  encoding = tokenizer.Encode("a red zebra circle a");
  EXPECT_EQ(encoding.ids, (std::vector<int64_t>{2, 3, 1, 4}));
  EXPECT_TRUE(encoding.truncated);
  EXPECT_EQ(encoding.unknown_words, 1);
}

}  // namespace
}  // namespace ldm
