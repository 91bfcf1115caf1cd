#include "server/service/metrics.h"

#include "absl/status/status.h"

namespace ldmserve {

ServiceMetrics::ServiceMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("ldmserve_requests_total")
                    .Help("Generate calls by final status code.")
                    .Register(*registry_)),
      images_(prometheus::BuildCounter()
                  .Name("ldmserve_images_generated_total")
                  .Help("Images returned to clients.")
                  .Register(*registry_)
                  .Add({})),
      queue_depth_(prometheus::BuildGauge()
                       .Name("ldmserve_queue_depth")
                       .Help("Jobs waiting in the queue.")
                       .Register(*registry_)
                       .Add({})),
      running_jobs_(prometheus::BuildGauge()
                        .Name("ldmserve_running_jobs")
                        .Help("Jobs in a running batch.")
                        .Register(*registry_)
                        .Add({})),
      request_seconds_(
          prometheus::BuildHistogram()
              .Name("ldmserve_request_duration_seconds")
              .Help("Generate calls from admission to final status.")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{
                           0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100,
                           250})) {}

void ServiceMetrics::RequestEnded(absl::StatusCode code,
                                  absl::Duration duration) {
  requests_.Add({{"code", absl::StatusCodeToString(code)}}).Increment();
  request_seconds_.Observe(absl::ToDoubleSeconds(duration));
}

void ServiceMetrics::ImagesGenerated(int count) { images_.Increment(count); }

void ServiceMetrics::SetQueueDepth(int depth) { queue_depth_.Set(depth); }

void ServiceMetrics::SetRunningJobs(int jobs) { running_jobs_.Set(jobs); }

}  // namespace ldmserve
