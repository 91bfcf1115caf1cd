// CUDA streams as the serving loop uses them. WaitForDevice: a denoising
// step ends when its work is done on the device. ScopedSideStream: a CUDA
// stream of its own for the work of one thread's scope: the scheduler's
// stage thread decodes finished jobs on one, so a decode runs beside the
// denoise thread's steps (queued on the device's default stream) instead
// of between them.
//
// A side stream's ordering is kept on the host, so no tensor crosses
// streams unfinished: the constructor waits for the default stream's
// queued work (the steps that wrote the latents to decode), the destructor
// for the side stream's (before anything the scope allocated there is
// freed). Both waits block only the calling thread. Nothing happens for a
// CPU device, in a build without CUDA, or when `on` is false.
//
// Example:
//   {
//     ldm::ScopedSideStream side(model.device(), /*on=*/true);
//     images = model.FinishJobs(prepared);  // Ends with a copy to the host.
//   }
#ifndef LDMSERVE_SERVER_LDM_DEVICE_STREAMS_H_
#define LDMSERVE_SERVER_LDM_DEVICE_STREAMS_H_

#include <c10/core/Device.h>

#include <memory>

namespace ldm {

// Blocks this thread until the work it queued on `device` (its current
// stream there) is done; does nothing for the CPU or without CUDA. Step
// timings and progress then report finished work, and the host stays at
// most a step ahead of the device.
void WaitForDevice(const c10::Device& device);

class ScopedSideStream {
 public:
  ScopedSideStream(const c10::Device& device, bool on);
  ~ScopedSideStream();
  ScopedSideStream(const ScopedSideStream&) = delete;
  ScopedSideStream& operator=(const ScopedSideStream&) = delete;

  // Whether the scope's work goes to a side stream.
  bool active() const { return state_ != nullptr; }

 private:
  struct State;  // The stream and the guard that made it current.
  std::unique_ptr<State> state_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_DEVICE_STREAMS_H_
