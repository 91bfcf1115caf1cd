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

namespace ldmserve {

class ServiceMetrics {
 public:
  ServiceMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // A Generate call ended with `code` after `duration` (admitted or not).
  void RequestEnded(absl::StatusCode code, absl::Duration duration);
  void ImagesGenerated(int count);
  void SetQueueDepth(int depth);
  void SetRunningJobs(int jobs);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Counter& images_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& running_jobs_;
  prometheus::Histogram& request_seconds_;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_METRICS_H_
