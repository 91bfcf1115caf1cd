#include "server/runtime/job.h"

#include <utility>

namespace ldmserve {

const char* TaskKindName(TaskKind kind) {
  switch (kind) {
    case TaskKind::kTextToImage:
      return "text_to_image";
    case TaskKind::kImageToImage:
      return "image_to_image";
    case TaskKind::kInpaint:
      return "inpaint";
    case TaskKind::kSuperResolution:
      return "super_resolution";
  }
  return "unknown";
}

Job::Job(std::string id, JobSpec spec, const ldm::LatentDiffusion* model,
         std::shared_ptr<JobSink> sink, absl::Time deadline,
         std::vector<const ldm::LatentDiffusion*> copies)
    : id_(std::move(id)),
      spec_(std::move(spec)),
      model_(model),
      copies_(copies.empty() ? std::vector<const ldm::LatentDiffusion*>{model}
                             : std::move(copies)),
      sink_(std::move(sink)),
      deadline_(deadline),
      admitted_at_(absl::Now()) {}

const ldm::LatentDiffusion* Job::ModelOn(const at::Device& device) const {
  for (const ldm::LatentDiffusion* copy : copies_) {
    if (copy->device() == device) return copy;
  }
  return nullptr;
}

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
