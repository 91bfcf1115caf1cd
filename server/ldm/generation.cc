#include "server/ldm/generation.h"

#include <algorithm>
#include <array>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/enum_names.h"
#include "server/common/status_macros.h"

namespace ldm {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

// An image field's pixels match its sides, and the sides are multiples of
// `multiple`.
absl::Status CheckImage(absl::string_view field, const RgbImage& image,
                        int64_t multiple) {
  if (image.width <= 0 || image.height <= 0 ||
      static_cast<int64_t>(image.pixels.size()) !=
          image.width * image.height * 3) {
    return Invalid(
        field, absl::StrCat("an RGB image of ", image.width, "x", image.height,
                            " has ", image.pixels.size(), " bytes"));
  }
  if (image.width % multiple != 0 || image.height % multiple != 0) {
    return Invalid(
        field, absl::StrCat("sides must be multiples of ", multiple, " (got ",
                            image.width, "x", image.height, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> CheckSide(absl::string_view field,
                                  std::optional<int64_t> value, int64_t native,
                                  int64_t multiple) {
  if (!value.has_value()) return native;
  if (*value <= 0 || *value % multiple != 0) {
    return Invalid(field, absl::StrCat("must be a positive multiple of ",
                                       multiple, " (got ", *value, ")"));
  }
  return *value;
}

// The geometry of an output `width` x `height` for a model whose latent
// pixel covers `factor` pixels.
ImageGeometry Geometry(int64_t width, int64_t height, int64_t factor) {
  return {width, height, width / factor, height / factor};
}

struct GeometryOf {
  const ModelCapabilities& model;

  absl::StatusOr<ImageGeometry> operator()(const TextToImage& task) const {
    LDM_ASSIGN_OR_RETURN(int64_t width,
                         CheckSide("text_to_image.width", task.width,
                                   model.native_width, model.size_multiple));
    LDM_ASSIGN_OR_RETURN(int64_t height,
                         CheckSide("text_to_image.height", task.height,
                                   model.native_height, model.size_multiple));
    return Geometry(width, height, model.downsampling_factor);
  }
  absl::StatusOr<ImageGeometry> operator()(const ImageToImage& task) const {
    LDM_RETURN_IF_ERROR(CheckImage("image_to_image.init_image", task.init_image,
                                   model.size_multiple));
    return Geometry(task.init_image.width, task.init_image.height,
                    model.downsampling_factor);
  }
  absl::StatusOr<ImageGeometry> operator()(const Inpaint& task) const {
    LDM_RETURN_IF_ERROR(
        CheckImage("inpaint.image", task.image, model.size_multiple));
    const Mask& mask = task.mask;
    if (mask.width != task.image.width || mask.height != task.image.height) {
      return Invalid("inpaint.mask",
                     absl::StrCat("must be the image's size ", task.image.width,
                                  "x", task.image.height, " (got ", mask.width,
                                  "x", mask.height, ")"));
    }
    if (static_cast<int64_t>(mask.repaint.size()) != mask.width * mask.height) {
      return Invalid("inpaint.mask", "one value a pixel");
    }
    return Geometry(task.image.width, task.image.height,
                    model.downsampling_factor);
  }
  absl::StatusOr<ImageGeometry> operator()(const SuperResolution& task) const {
    // The low-resolution image is the latent's size: its sides obey the
    // UNet's multiple.
    const int64_t factor = model.downsampling_factor;
    LDM_RETURN_IF_ERROR(
        CheckImage("super_resolution.low_res_image", task.low_res_image,
                   std::max<int64_t>(1, model.size_multiple / factor)));
    return ImageGeometry{task.low_res_image.width * factor,
                         task.low_res_image.height * factor,
                         task.low_res_image.width, task.low_res_image.height};
  }
};

}  // namespace

namespace {
constexpr std::array<EnumName<Task>, 4> kTaskNames = {{
    {Task::kTextToImage, "text_to_image"},
    {Task::kImageToImage, "image_to_image"},
    {Task::kInpaint, "inpaint"},
    {Task::kSuperResolution, "super_resolution"},
}};
}  // namespace

absl::string_view TaskName(Task task) { return NameOf(kTaskNames, task); }

std::optional<Task> TaskFromName(absl::string_view name) {
  return ValueOf(kTaskNames, name);
}

std::string TaskNames(const std::vector<Task>& tasks) {
  return absl::StrJoin(tasks, ", ", [](std::string* out, Task task) {
    absl::StrAppend(out, TaskName(task));
  });
}

Task TaskOf(const TaskInput& input) {
  static_assert(
      std::is_same_v<std::variant_alternative_t<
                         static_cast<size_t>(Task::kInpaint), TaskInput>,
                     Inpaint> &&
          std::is_same_v<
              std::variant_alternative_t<
                  static_cast<size_t>(Task::kSuperResolution), TaskInput>,
              SuperResolution>,
      "TaskInput's alternatives are in Task's order");
  return static_cast<Task>(input.index());
}

Mask MaskFromRgb(const RgbImage& image) {
  Mask mask{image.width, image.height, {}};
  const size_t pixels = image.pixels.size() / 3;
  mask.repaint.resize(pixels);
  for (size_t i = 0; i < pixels; ++i) {
    mask.repaint[i] = image.pixels[3 * i] >= 128 ? 1 : 0;
  }
  return mask;
}

absl::StatusOr<ImageGeometry> CheckRequest(const ModelCapabilities& model,
                                           const GenerationRequest& request) {
  const Task task = TaskOf(request.task);
  if (std::find(model.tasks.begin(), model.tasks.end(), task) ==
      model.tasks.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("this model cannot run ", TaskName(task), " (it runs ",
                     TaskNames(model.tasks), ")"));
  }
  if (request.num_images < 1) {
    return Invalid("num_images", "at least 1");
  }
  if (request.clip_skip != 0) {
    if (model.max_clip_skip == 0) {
      return Invalid("clip_skip",
                     "0 for this model (its text encoder is not CLIP)");
    }
    if (request.clip_skip < 1 || request.clip_skip > model.max_clip_skip) {
      return Invalid("clip_skip", absl::StrCat("1..", model.max_clip_skip,
                                               " (the text encoder's layers)"));
    }
  }
  return std::visit(GeometryOf{model}, request.task);
}

}  // namespace ldm
