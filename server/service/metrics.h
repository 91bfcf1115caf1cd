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

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/runtime/scheduler.h"

namespace ldmserve {

class ServiceMetrics : public SchedulerObserver {
 public:
  ServiceMetrics();

  // ldmserve_build_info: constant 1, what runs in its labels.
  void SetBuildInfo(const std::string& version, const std::string& libtorch,
                    const std::string& devices);
  // Creates each worker's series at 0, so that an idle worker shows as idle
  // rather than absent.
  void AddWorkers(const std::vector<WorkerId>& workers);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // A Generate call ended with `code` after `duration` (admitted or not).
  // `model` and `task` are empty when the request named none we serve (a
  // label holds only registry names: clients cannot add series).
  void RequestEnded(const std::string& model, const std::string& task,
                    absl::StatusCode code, absl::Duration duration);
  // With --auth-tokens: a Generate call of the client named `client` (the
  // token's name, never the token) ended with `code`.
  void ClientRequestEnded(const std::string& client, absl::StatusCode code);
  void ImagesGenerated(int count);
  void SetQueueDepth(int depth);
  // The most jobs the queue takes before RESOURCE_EXHAUSTED (--queue-size).
  void SetQueueCapacity(int jobs);
  void SetRunningJobs(int jobs);
  // Jobs the JobTracker indexes and the bytes of results it keeps.
  void SetTrackedJobs(int jobs, size_t result_bytes);
  // Every served model and whether it is ready; the series of models no
  // longer served (unloaded) are removed.
  void SetModelsReady(const std::map<std::string, bool>& ready)
      ABSL_LOCKS_EXCLUDED(mu_);
  void SetResidentMemory(double bytes);
  // The container's memory limit; the series exists only once set.
  void SetMemoryLimit(double bytes);
  // A CUDA device's memory as LibTorch's caching allocator holds it, and
  // the device's total.
  void SetDeviceMemory(const std::string& device, double allocated_bytes,
                       double reserved_bytes, double total_bytes);

  // SchedulerObserver.
  void OnQueueWait(const std::string& model, absl::Duration wait) override;
  void OnDenoiseCall(const WorkerId& worker, const std::string& model, int jobs,
                     int images, absl::Duration duration) override;
  void OnStage(const WorkerId& worker, const char* stage,
               absl::Duration duration) override;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& client_requests_;
  prometheus::Counter& images_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& queue_capacity_;
  prometheus::Gauge& running_jobs_;
  prometheus::Gauge& tracked_jobs_;
  prometheus::Gauge& kept_result_bytes_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Family<prometheus::Histogram>& queue_wait_seconds_;
  prometheus::Family<prometheus::Histogram>& step_seconds_;
  prometheus::Family<prometheus::Histogram>& stage_seconds_;
  prometheus::Histogram& batch_jobs_;
  prometheus::Histogram& batch_images_;
  prometheus::Family<prometheus::Counter>& busy_seconds_;
  prometheus::Family<prometheus::Gauge>& model_ready_;
  absl::Mutex mu_;
  std::map<std::string, prometheus::Gauge*> model_ready_series_
      ABSL_GUARDED_BY(mu_);
  prometheus::Gauge& resident_memory_;
  prometheus::Family<prometheus::Gauge>& memory_limit_;
  prometheus::Family<prometheus::Gauge>& device_memory_;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_METRICS_H_
