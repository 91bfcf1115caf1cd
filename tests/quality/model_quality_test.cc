// Quality of the shipped shapes models, measured through the engine's real
// pipelines (PrepareJob / batched DenoiseStep / FinishJobs, the stages the
// server runs) and scored by the scene probe.
// Prints what it measures. The asserted floors sit a margin below what the
// shipped weights reach, so a regression in the engine or the weights fails.
// The floors are issue 5's targets; docs/models.md has the figures.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/ldm/image_tensor.h"
#include "server/ldm/latent_diffusion.h"
#include "tests/quality/scene_probe.h"
#include "tools/shapes/shapes_world.h"
#include "tools/train/shapes_batch.h"

namespace shapes {
namespace {

constexpr int kSteps = 25;

// The guidance the model is served with: its config's default.
float Guidance(const ldm::LatentDiffusion& model) {
  return static_cast<float>(model.config().default_guidance_scale);
}

std::unique_ptr<ldm::LatentDiffusion> LoadShipped(const std::string& name) {
  at::set_num_threads(2);
  const std::string dir = std::string(LDMSERVE_SOURCE_DIR) + "/models/" + name;
  auto model = ldm::LatentDiffusion::Load(dir + "/config.json",
                                          dir + "/weights.safetensors");
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

std::vector<uint8_t> Bytes(const at::Tensor& image) {
  const at::Tensor contiguous = image.contiguous();
  const uint8_t* data = contiguous.data_ptr<uint8_t>();
  return {data, data + contiguous.numel()};
}

double Percent(int part, int whole) { return 100.0 * part / whole; }

// "circle 10/10 square 9/10 ...": right of asked, per shape asked for.
void PrintShapeCounts(const int (&right)[kNumShapes],
                      const int (&asked)[kNumShapes]) {
  std::printf("  shape right, by the shape asked:");
  for (int k = 0; k < kNumShapes; ++k) {
    std::printf(" %s %d/%d", ShapeName(static_cast<Shape>(k)), right[k],
                asked[k]);
  }
  std::printf("\n");
}

// A text-to-image request as these tests send it: one image, kSteps DDIM
// steps unless `sampler` says otherwise.
ldm::GenerationRequest PromptRequest(std::string prompt, uint64_t seed,
                                     float guidance,
                                     ldm::SamplerOptions sampler = {}) {
  ldm::GenerationRequest request;
  request.prompt = std::move(prompt);
  request.seed = seed;
  request.sampler = sampler;
  if (sampler.steps == ldm::SamplerOptions().steps) {
    request.sampler.steps = kSteps;
  }
  request.sampler.guidance_scale = guidance;
  return request;
}

// Runs `requests` (one image each, the same step count) as the scheduler
// does: every job prepared, then one batched DenoiseStep for all of them per
// step, one decode. Returns one uint8 [H, W, 3] image per request.
std::vector<at::Tensor> RunBatched(
    const ldm::LatentDiffusion& model,
    const std::vector<ldm::GenerationRequest>& requests) {
  std::vector<ldm::PreparedJob> jobs;
  std::vector<ldm::ImageTask*> tasks;
  for (const ldm::GenerationRequest& request : requests) {
    auto job = model.PrepareJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    if (!job.ok()) return {};
    jobs.push_back(*std::move(job));
  }
  for (ldm::PreparedJob& job : jobs) tasks.push_back(&job.images[0]);
  while (!tasks.front()->sampler->done()) {
    const absl::Status status = model.DenoiseStep(tasks);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) return {};
  }
  std::vector<const ldm::PreparedJob*> finishing;
  for (const ldm::PreparedJob& job : jobs) finishing.push_back(&job);
  auto finished = model.FinishJobs(finishing);
  EXPECT_TRUE(finished.ok()) << finished.status();
  if (!finished.ok()) return {};
  std::vector<at::Tensor> images;
  for (const std::vector<ldm::RgbImage>& own : *finished) {
    images.push_back(ldm::Uint8ImagesTensor(own)[0]);
  }
  return images;
}

struct Scores {
  int colour = 0, position = 0, total = 0;
  // Per shape asked for: how often it was drawn right, and asked.
  int shape_right[kNumShapes] = {}, shape_asked[kNumShapes] = {};
  int shape() const {
    int right = 0;
    for (int count : shape_right) right += count;
    return right;
  }
};

// Single-object prompts "a COLOR SHAPE POSITION", one seed each; with
// `with_prompt` false the prompt is empty. Over 40 prompts every colour
// meets every position once, every shape comes 10 times and meets every
// colour and every position: no attribute aliases another (one that did
// would let a model score on shape by getting colour right).
Scores ScoreTextToImage(const ldm::LatentDiffusion& model, float guidance,
                        bool with_prompt, int count,
                        const ldm::SamplerOptions& sampler = {}) {
  struct Asked {
    Color color;
    Shape shape;
    Position position;
  };
  std::vector<Asked> asked;
  std::vector<ldm::GenerationRequest> requests;
  for (int i = 0; i < count; ++i) {
    const Asked want{static_cast<Color>(i % kNumColors),
                     static_cast<Shape>((i / kNumColors + i) % kNumShapes),
                     static_cast<Position>(i % kNumPositions)};
    const std::string prompt = std::string("a ") + ColorName(want.color) + " " +
                               ShapeName(want.shape) + " " +
                               PositionPhrase(want.position);
    asked.push_back(want);
    requests.push_back(
        PromptRequest(with_prompt ? prompt : "", 1000 + i, guidance, sampler));
  }
  Scores scores;
  const std::vector<at::Tensor> images = RunBatched(model, requests);
  for (size_t i = 0; i < images.size(); ++i) {
    const ProbeResult probe = ProbeScene(Bytes(images[i]));
    ++scores.total;
    const int shape = static_cast<int>(asked[i].shape);
    ++scores.shape_asked[shape];
    if (probe.objects.empty()) continue;
    const ProbedObject& seen = probe.objects[0];
    scores.colour += seen.color == asked[i].color;
    scores.shape_right[shape] += seen.shape == asked[i].shape;
    scores.position += seen.position == asked[i].position;
  }
  return scores;
}

TEST(ModelQualityTest, TextToImageFollowsThePrompt) {
  auto model = LoadShipped("shapes-txt2img");
  ASSERT_NE(model, nullptr);
  constexpr int kPrompts = 40;
  ASSERT_GT(Guidance(*model), 1) << "the shipped config sets its guidance";
  std::printf("txt2img guidance scale %.1f (the config's default)\n",
              Guidance(*model));
  const Scores guided =
      ScoreTextToImage(*model, Guidance(*model), true, kPrompts);
  const Scores unguided = ScoreTextToImage(*model, 1.0f, true, kPrompts);
  const Scores unconditional = ScoreTextToImage(*model, 1.0f, false, kPrompts);
  for (const auto& [name, s] :
       {std::pair<const char*, const Scores&>{"guided", guided},
        {"guidance off (cfg 1)", unguided},
        {"empty prompt", unconditional}}) {
    std::printf(
        "txt2img %-22s %d prompts, %d DDIM steps: colour %.1f%%, shape "
        "%.1f%%, position %.1f%%\n",
        name, s.total, kSteps, Percent(s.colour, s.total),
        Percent(s.shape(), s.total), Percent(s.position, s.total));
    PrintShapeCounts(s.shape_right, s.shape_asked);
  }
  // Measured with the shipped weights (session 7): colour, shape and
  // position 100% guided (also with seeds 7000 + i); at cfg 1 shape 97.5%;
  // empty prompt 17.5% / 20% / 20% (chance: 12.5%, 25%, about 20%). All
  // held to issue 5's targets.
  EXPECT_GE(Percent(guided.colour, guided.total), 90);
  EXPECT_GE(Percent(guided.position, guided.total), 80);
  EXPECT_GE(Percent(guided.shape(), guided.total), 80);
  // The conditioning works, and guidance does not weaken it.
  EXPECT_GE(guided.colour, unconditional.colour + kPrompts / 2);
  EXPECT_GE(guided.shape(), unconditional.shape() + kPrompts / 2);
  EXPECT_GE(guided.position, unconditional.position + kPrompts / 2);
  EXPECT_GE(guided.colour + guided.shape() + guided.position,
            unguided.colour + unguided.shape() + unguided.position);
}

// Two-object prompts "a C1 S1 RELATION a C2 S2", two different colours, one
// seed each. The probed objects are matched to the asked ones by colour.
struct TwoObjectScores {
  int total = 0;
  int both_found = 0;  // An object of each asked colour.
  int relation = 0;    // ... placed as asked.
  int shapes = 0;      // Objects (two per prompt) of the asked shape.
  int all_right = 0;   // Colours, both shapes and the relation.
  // Per shape asked for (either place), when its object was found.
  int shape_right[kNumShapes] = {}, shape_asked[kNumShapes] = {};
};

bool RelationHolds(Relation relation, const ProbedObject& first,
                   const ProbedObject& second) {
  const float dx = first.center_x - second.center_x;
  const float dy = first.center_y - second.center_y;
  switch (relation) {
    case Relation::kAbove:
      return dy < 0 && -dy > std::abs(dx);
    case Relation::kBelow:
      return dy > 0 && dy > std::abs(dx);
    case Relation::kLeftOf:
      return dx < 0 && -dx > std::abs(dy);
    case Relation::kRightOf:
      return dx > 0 && dx > std::abs(dy);
  }
  return false;
}

// The largest probed object of `color`, or null.
const ProbedObject* FindColour(const ProbeResult& probe, Color color) {
  for (const ProbedObject& object : probe.objects) {
    if (object.color == color) return &object;  // Largest first.
  }
  return nullptr;
}

// Prompt 0 is issue 5's example, "a red circle above a blue square"; over
// the rest every relation and every shape comes in both places.
TwoObjectScores ScoreTwoObjects(const ldm::LatentDiffusion& model,
                                float guidance, int count) {
  struct Asked {
    Color color[2];
    Shape shape[2];
    Relation relation;
  };
  std::vector<Asked> asked;
  std::vector<ldm::GenerationRequest> requests;
  for (int i = 0; i < count; ++i) {
    const int first_color = i % kNumColors;
    const int second_color =
        (first_color + 1 + (i / kNumColors) % 3 + 2 * (i % 2)) % kNumColors;
    Asked want{
        {static_cast<Color>(first_color), static_cast<Color>(second_color)},
        {static_cast<Shape>(i % kNumShapes),
         static_cast<Shape>((i / kNumShapes + i + 1) % kNumShapes)},
        static_cast<Relation>((i + i / kNumRelations) % kNumRelations)};
    if (i == 0) {
      want = {{Color::kRed, Color::kBlue},
              {Shape::kCircle, Shape::kSquare},
              Relation::kAbove};
    }
    asked.push_back(want);
    requests.push_back(PromptRequest(
        std::string("a ") + ColorName(want.color[0]) + " " +
            ShapeName(want.shape[0]) + " " + RelationPhrase(want.relation) +
            " a " + ColorName(want.color[1]) + " " + ShapeName(want.shape[1]),
        4000 + i, guidance));
  }
  TwoObjectScores scores;
  const std::vector<at::Tensor> images = RunBatched(model, requests);
  for (size_t i = 0; i < images.size(); ++i) {
    ++scores.total;
    const ProbeResult probe = ProbeScene(Bytes(images[i]));
    const ProbedObject* first = FindColour(probe, asked[i].color[0]);
    const ProbedObject* second = FindColour(probe, asked[i].color[1]);
    if (first == nullptr || second == nullptr) continue;
    ++scores.both_found;
    const bool relation = RelationHolds(asked[i].relation, *first, *second);
    int shapes = 0;
    for (const auto& [seen, want] :
         {std::pair{first, asked[i].shape[0]}, {second, asked[i].shape[1]}}) {
      ++scores.shape_asked[static_cast<int>(want)];
      scores.shape_right[static_cast<int>(want)] += seen->shape == want;
      shapes += seen->shape == want;
    }
    scores.relation += relation;
    scores.shapes += shapes;
    scores.all_right += relation && shapes == 2;
  }
  return scores;
}

TEST(ModelQualityTest, EverySamplerDrawsThePromptIn15To25Steps) {
  // The samplers other front ends offer, at the step counts their users
  // pick: each must draw what it is asked about as well as DDIM does.
  auto model = LoadShipped("shapes-txt2img");
  ASSERT_NE(model, nullptr);
  constexpr int kPrompts = 20;  // Every colour and position 5 times.
  struct Case {
    const char* name;
    ldm::SamplerKind kind;
    int steps;
    ldm::SigmaSchedule schedule = ldm::SigmaSchedule::kUniform;
  };
  using ldm::SamplerKind;
  using ldm::SigmaSchedule;
  const Case cases[] = {
      {"DDIM", SamplerKind::kDdim, 20},
      {"PLMS", SamplerKind::kPlms, 20},
      {"DDPM", SamplerKind::kDdpm, 25},
      {"Euler a", SamplerKind::kEulerAncestral, 20},
      {"Euler", SamplerKind::kEuler, 20},
      {"Euler Exponential", SamplerKind::kEuler, 20,
       SigmaSchedule::kExponential},
      {"Heun", SamplerKind::kHeun, 15},
      {"LMS", SamplerKind::kLms, 20},
      {"DPM++ 2M", SamplerKind::kDpmSolverPP2M, 15},
      {"DPM++ 2M Karras", SamplerKind::kDpmSolverPP2M, 15,
       SigmaSchedule::kKarras},
      {"DPM++ 2M SDE", SamplerKind::kDpmSolverPP2MSde, 20},
      {"DPM++ 2M SDE Karras", SamplerKind::kDpmSolverPP2MSde, 20,
       SigmaSchedule::kKarras},
      {"DPM++ 2S a", SamplerKind::kDpmSolverPP2SAncestral, 15},
      {"DPM++ 2S a Karras", SamplerKind::kDpmSolverPP2SAncestral, 15,
       SigmaSchedule::kKarras},
      {"UniPC", SamplerKind::kUniPc, 15},
      {"UniPC Karras", SamplerKind::kUniPc, 15, SigmaSchedule::kKarras},
  };
  for (const Case& c : cases) {
    ldm::SamplerOptions sampler;
    sampler.kind = c.kind;
    sampler.steps = c.steps;
    sampler.sigma_schedule = c.schedule;
    const Scores scores =
        ScoreTextToImage(*model, Guidance(*model), true, kPrompts, sampler);
    std::printf(
        "sampler %-20s %2d steps, %d prompts: colour %.1f%%, shape %.1f%%, "
        "position %.1f%%\n",
        c.name, c.steps, kPrompts, Percent(scores.colour, scores.total),
        Percent(scores.shape(), scores.total),
        Percent(scores.position, scores.total));
    // Measured (docs/benchmarks.md): 100% on all three for most; PLMS's
    // colour 70% and DPM++ 2M SDE's 80% at these counts are the lowest.
    EXPECT_GE(Percent(scores.colour, scores.total), 60) << c.name;
    EXPECT_GE(Percent(scores.shape(), scores.total), 80) << c.name;
    EXPECT_GE(Percent(scores.position, scores.total), 80) << c.name;
  }
}

TEST(ModelQualityTest, TextToImageDrawsTwoObjects) {
  auto model = LoadShipped("shapes-txt2img");
  ASSERT_NE(model, nullptr);
  constexpr int kPrompts = 24;
  const TwoObjectScores guided =
      ScoreTwoObjects(*model, Guidance(*model), kPrompts);
  std::printf(
      "txt2img two objects, %d prompts, %d DDIM steps, guidance %.1f: both "
      "colours found %.1f%%, relation %.1f%%, shapes %.1f%% (of %d objects), "
      "all right %.1f%%\n",
      guided.total, kSteps, Guidance(*model),
      Percent(guided.both_found, guided.total),
      Percent(guided.relation, guided.total),
      Percent(guided.shapes, 2 * guided.total), 2 * guided.total,
      Percent(guided.all_right, guided.total));
  PrintShapeCounts(guided.shape_right, guided.shape_asked);
  // Measured with the shipped weights (session 7): both colours, relation,
  // shapes and all right 95.8% each (seeds 9000 + i: 95.8, 95.8, 91.7,
  // 87.5%); the weights before (session 6) drew both objects in place but
  // as blobs: shapes 35.4%, all right 12.5%. Issue 5 sets no two-object
  // target; these floors sit below what is measured.
  EXPECT_GE(Percent(guided.both_found, guided.total), 85);
  EXPECT_GE(Percent(guided.relation, guided.total), 80);
  EXPECT_GE(Percent(guided.shapes, 2 * guided.total), 80);
  EXPECT_GE(Percent(guided.all_right, guided.total), 70);
}

TEST(ModelQualityTest, InpaintingKeepsTheUnmaskedPixels) {
  auto model = LoadShipped("shapes-inpaint");
  ASSERT_NE(model, nullptr);
  constexpr int kCases = 24;
  int colour = 0, shape = 0;
  double worst_kept_psnr = 1e9;
  std::vector<ldmtrain::InpaintCase> cases;
  std::vector<ldm::GenerationRequest> requests;
  for (int i = 0; i < kCases; ++i) {
    cases.push_back(ldmtrain::MakeInpaintCase(i));
    ldm::GenerationRequest request;
    request.prompt = cases.back().prompt;
    request.seed = 2000 + i;
    request.sampler.steps = kSteps;
    request.sampler.guidance_scale = Guidance(*model);
    request.task =
        ldm::Inpaint{{64, 64, cases.back().image}, {64, 64, cases.back().mask}};
    requests.push_back(request);
  }
  ASSERT_GT(Guidance(*model), 1) << "the shipped config sets its guidance";
  const std::vector<at::Tensor> images = RunBatched(*model, requests);
  ASSERT_EQ(images.size(), cases.size());
  for (int i = 0; i < kCases; ++i) {
    const ldmtrain::InpaintCase& probe = cases[i];
    const std::vector<uint8_t> result = Bytes(images[i]);
    // PSNR of the unmasked pixels against the input.
    double squared = 0;
    int kept = 0;
    for (size_t p = 0; p < probe.mask.size(); ++p) {
      if (probe.mask[p] != 0) continue;
      for (int c = 0; c < 3; ++c) {
        const double d =
            static_cast<double>(result[p * 3 + c]) - probe.image[p * 3 + c];
        squared += d * d;
      }
      kept += 3;
    }
    const double mse = squared / kept;
    worst_kept_psnr = std::min(
        worst_kept_psnr, mse == 0 ? 1e9 : 10 * std::log10(255.0 * 255 / mse));
    const ProbeResult seen = ProbeScene(result, &probe.mask);
    if (seen.objects.empty()) continue;
    colour += seen.objects[0].color == probe.color;
    shape += seen.objects[0].shape == probe.shape;
  }
  std::printf(
      "inpaint %d cases: unmasked PSNR >= %s dB; object in the mask: colour "
      "%.1f%%, shape %.1f%%\n",
      kCases,
      worst_kept_psnr >= 1e9 ? "inf (identical)"
                             : std::to_string(worst_kept_psnr).c_str(),
      Percent(colour, kCases), Percent(shape, kCases));
  EXPECT_GE(worst_kept_psnr, 40);
  // The asked-for object lands in the mask: colour measured 100% (chance
  // 12.5%), shape 95.8% (chance 25%); both held to issue 5's target.
  EXPECT_GE(Percent(colour, kCases), 80);
  EXPECT_GE(Percent(shape, kCases), 80);
}

TEST(ModelQualityTest, SuperResolutionPsnr) {
  auto model = LoadShipped("shapes-sr");
  ASSERT_NE(model, nullptr);
  constexpr int kImages = 24;
  std::vector<std::vector<uint8_t>> truths;
  for (int i = 0; i < kImages; ++i) {
    truths.push_back(RenderScene(HeldOutScene(i)));
  }
  const at::Tensor truth = ldmtrain::ImagesToTensor(truths);
  // As a client sends it: in bytes (the bicubic baseline gets the same).
  const at::Tensor low_res_bytes =
      ldm::RoundToUint8Images(ldmtrain::DownsampleBicubic(truth));
  const std::vector<ldm::RgbImage> low_res_images =
      ldm::RgbImagesFromTensor(low_res_bytes).value();
  const at::Tensor low_res =
      ldm::ImagesTensorFromRgb(low_res_bytes.data_ptr<uint8_t>(), kImages,
                               ldmtrain::kLowResSize, ldmtrain::kLowResSize)
          .value();
  std::vector<ldm::GenerationRequest> requests;
  for (int i = 0; i < kImages; ++i) {
    ldm::GenerationRequest request;
    request.task = ldm::SuperResolution{low_res_images[i]};
    request.seed = 3000 + i;
    request.sampler.steps = kSteps;
    // As served: the paper samples super-resolution with DDIM eta 1.
    request.sampler.eta = model->config().default_eta;
    requests.push_back(request);
  }
  const std::vector<at::Tensor> upscaled = RunBatched(*model, requests);
  ASSERT_EQ(upscaled.size(), static_cast<size_t>(kImages));
  const at::Tensor truth_bytes = ldm::RoundToUint8Images(truth);
  const double model_psnr = ldmtrain::Psnr(at::stack(upscaled), truth_bytes);
  const double bicubic_psnr = ldmtrain::Psnr(
      ldm::RoundToUint8Images(ldmtrain::UpsampleBicubic(low_res)), truth_bytes);
  std::printf(
      "super-resolution %d held-out images: model %.2f dB, bicubic %.2f dB "
      "(%+.2f dB)\n",
      kImages, model_psnr, bicubic_psnr, model_psnr - bicubic_psnr);
  // Measured 32.6 dB against bicubic's 28.65 dB (+3.9 dB); the issue's
  // target is bicubic + 2 dB.
  EXPECT_GE(model_psnr, bicubic_psnr + 2.0);
}

}  // namespace
}  // namespace shapes
