// How a job's images travel as files: the encoding of its results and what
// was done to its input images to fit the model. Chosen by the service from
// the request, carried with the job (JobSpec), read back by the service.
#ifndef LDMSERVE_SERVER_COMMON_IMAGE_FILE_H_
#define LDMSERVE_SERVER_COMMON_IMAGE_FILE_H_

#include <cstdint>

namespace ldmserve {

enum class ImageFileFormat { kPng, kJpeg, kWebp, kWebpLossless };

struct ImageEncoding {
  ImageFileFormat format = ImageFileFormat::kPng;
  // 1..100, for the lossy formats (JPEG, WebP).
  int quality = 90;
};

// What to do with an input image whose sides are not multiples of the
// model's size multiple.
enum class ResizeMode {
  kExact,  // Refuse it (the request's sides must fit).
  kScale,  // Scale each side to the nearest multiple.
  kCrop,   // Crop the centre down to the largest multiple.
  kPad,    // Pad right and bottom up to the next multiple, edges repeated.
};

// What was done: the input's size and the size the model got.
struct InputFit {
  ResizeMode mode = ResizeMode::kExact;
  int64_t original_width = 0;
  int64_t original_height = 0;
  int64_t width = 0;
  int64_t height = 0;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_COMMON_IMAGE_FILE_H_
