#include "server/ldm/device_streams.h"

#if defined(LDMSERVE_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#endif

namespace ldm {

void WaitForDevice(const c10::Device& device) {
#if defined(LDMSERVE_WITH_CUDA)
  if (!device.is_cuda()) return;
  c10::cuda::getCurrentCUDAStream(device.has_index() ? device.index() : 0)
      .synchronize();
#else
  (void)device;
#endif
}

struct ScopedSideStream::State {
#if defined(LDMSERVE_WITH_CUDA)
  explicit State(c10::cuda::CUDAStream side) : stream(side), guard(side) {}
  c10::cuda::CUDAStream stream;
  c10::cuda::CUDAStreamGuard guard;
#endif
};

ScopedSideStream::ScopedSideStream(const c10::Device& device, bool on) {
#if defined(LDMSERVE_WITH_CUDA)
  if (!on || !device.is_cuda()) return;
  try {
    const c10::DeviceIndex index = device.has_index() ? device.index() : 0;
    c10::cuda::getDefaultCUDAStream(index).synchronize();
    state_ = std::make_unique<State>(
        c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index));
  } catch (const c10::Error&) {
    // No side stream (the device is gone or out of streams): the scope's
    // work stays on the default stream, ordered as before.
    state_.reset();
  }
#else
  (void)device;
  (void)on;
#endif
}

ScopedSideStream::~ScopedSideStream() {
#if defined(LDMSERVE_WITH_CUDA)
  if (state_ == nullptr) return;
  try {
    state_->stream.synchronize();
  } catch (const c10::Error&) {
    // A failed device fails the next call that uses it; a destructor must
    // not throw.
  }
#endif
}

}  // namespace ldm
