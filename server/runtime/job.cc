#include "server/runtime/job.h"

#include <utility>

#include "server/ldm/latent_diffusion.h"

namespace ldmserve {

Job::Job(std::string id, JobSpec spec,
         std::vector<const ldm::LatentDiffusion*> copies,
         std::shared_ptr<JobSink> sink, absl::Time deadline,
         std::shared_ptr<const void> model_lease)
    : model_lease_(std::move(model_lease)),
      id_(std::move(id)),
      spec_(std::move(spec)),
      copies_(std::move(copies)),
      sink_(std::move(sink)),
      deadline_(deadline),
      admitted_at_(absl::Now()) {}

// Here, where a PreparedJob is a complete type.
Job::~Job() = default;

void Job::Cancel(absl::Status reason) {
  absl::MutexLock lock(&mu_);
  if (cancelled_.load(std::memory_order_relaxed)) return;
  cancel_reason_ = std::move(reason);
  cancelled_.store(true, std::memory_order_release);
}

absl::Status Job::StopReason(absl::Time now) const {
  if (cancelled_.load(std::memory_order_acquire)) {
    absl::MutexLock lock(&mu_);
    return cancel_reason_;
  }
  if (now >= deadline_) {
    return absl::DeadlineExceededError("deadline exceeded while generating");
  }
  return absl::OkStatus();
}

}  // namespace ldmserve
