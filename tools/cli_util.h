// Small helpers shared by the offline tools (ldmtool, ldmtrain).
#ifndef LDMSERVE_TOOLS_CLI_UTIL_H_
#define LDMSERVE_TOOLS_CLI_UTIL_H_

#include <ATen/ATen.h>

#include <fstream>
#include <map>
#include <string>

namespace ldmtools {

// "--name value" pairs from argv[first...].
inline std::map<std::string, std::string> ParseOptions(int argc, char** argv,
                                                       int first) {
  std::map<std::string, std::string> options;
  for (int i = first; i + 1 < argc; i += 2) {
    std::string name = argv[i];
    if (name.rfind("--", 0) == 0) options[name.substr(2)] = argv[i + 1];
  }
  return options;
}

// Writes uint8 [H, W, 3] as binary PPM (convert to PNG with any image tool).
inline bool WritePpm(const std::string& path, const at::Tensor& image) {
  const at::Tensor pixels = image.contiguous();
  std::ofstream out(path, std::ios::binary);
  out << "P6\n" << pixels.size(1) << " " << pixels.size(0) << "\n255\n";
  out.write(reinterpret_cast<const char*>(pixels.data_ptr<uint8_t>()),
            pixels.numel());
  return static_cast<bool>(out);
}

}  // namespace ldmtools

#endif  // LDMSERVE_TOOLS_CLI_UTIL_H_
