// The metadata blocks JPEG and WebP files carry the generation parameters
// in: an EXIF (TIFF) block whose UserComment holds them, as AUTOMATIC1111
// writes it, and an XMP packet with them as dc:description.
#ifndef LDMSERVE_SERVER_SERVICE_IMAGE_METADATA_H_
#define LDMSERVE_SERVER_SERVICE_IMAGE_METADATA_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ldmserve {

// A big-endian TIFF block (what follows "Exif\0\0" in a JPEG APP1, or a WebP
// EXIF chunk) with one Exif IFD holding UserComment: the "UNICODE\0" charset
// and `text` in UTF-16.
std::string ExifWithUserComment(absl::string_view utf8_text);

// The UserComment of a TIFF block, as UTF-8; empty when there is none.
// INVALID_ARGUMENT when the block does not parse.
absl::StatusOr<std::string> ExifUserComment(absl::string_view tiff);

// An XMP packet whose dc:description is `utf8_text`.
std::string XmpWithDescription(absl::string_view utf8_text);

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_IMAGE_METADATA_H_
