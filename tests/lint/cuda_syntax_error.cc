// Seeded for lint.cuda_syntax_catches: an error only the CUDA path sees.
#include "server/ldm/unet_runner.h"

#if defined(LDMSERVE_WITH_CUDA_GRAPHS)
#include <ATen/cuda/CUDAGraph.h>
static_assert(sizeof(at::cuda::CUDAGraph) == 0, "seeded");
#endif
