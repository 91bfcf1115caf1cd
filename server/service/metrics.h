// The service's Prometheus metrics, served on --metrics-listen at /metrics.
// Names follow Prometheus conventions (base units, _total on counters); see
// docs/metrics.md.
//
// Thread-safety: all methods are thread-safe.
#ifndef LDMSERVE_SERVER_SERVICE_METRICS_H_
#define LDMSERVE_SERVER_SERVICE_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/runtime/scheduler.h"

namespace ldmserve {

class ServiceMetrics : public SchedulerObserver {
 public:
  ServiceMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // A Generate call ended with `code` after `duration` (admitted or not).
  // `model` and `task` are empty when the request named none we know.
  void RequestEnded(const std::string& model, const std::string& task,
                    absl::StatusCode code, absl::Duration duration);
  void ImagesGenerated(int count);
  void SetQueueDepth(int depth);
  void SetRunningJobs(int jobs);
  void SetModelReady(const std::string& model, bool ready);
  void SetResidentMemory(double bytes);
  // A CUDA device's memory as LibTorch's caching allocator holds it.
  void SetDeviceMemory(const std::string& device, double allocated_bytes,
                       double reserved_bytes);

  // SchedulerObserver.
  void OnQueueWait(absl::Duration wait) override;
  void OnDenoiseCall(int jobs, int images, absl::Duration duration) override;
  void OnStage(const char* stage, absl::Duration duration) override;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Counter& images_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& running_jobs_;
  prometheus::Histogram& request_seconds_;
  prometheus::Histogram& queue_wait_seconds_;
  prometheus::Histogram& step_seconds_;
  prometheus::Family<prometheus::Histogram>& stage_seconds_;
  prometheus::Histogram& batch_jobs_;
  prometheus::Histogram& batch_images_;
  prometheus::Counter& busy_seconds_;
  prometheus::Family<prometheus::Gauge>& model_ready_;
  prometheus::Gauge& resident_memory_;
  prometheus::Family<prometheus::Gauge>& device_memory_;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_METRICS_H_
