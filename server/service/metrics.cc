#include "server/service/metrics.h"

#include <prometheus/labels.h>

#include <string>

#include "absl/status/status.h"

namespace ldmserve {
namespace {

const prometheus::Histogram::BucketBoundaries& SecondsBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
      1,     2.5,    5,     10,   25,    50,   100, 250};
  return *buckets;
}

const prometheus::Histogram::BucketBoundaries& CountBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      1, 2, 3, 4, 6, 8, 12, 16, 24, 32};
  return *buckets;
}

// The labels of a per-worker series.
prometheus::Labels WorkerLabels(const WorkerId& worker) {
  return {{"worker", std::to_string(worker.index)}, {"device", worker.device}};
}

}  // namespace

ServiceMetrics::ServiceMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(
          prometheus::BuildCounter()
              .Name("ldmserve_requests_total")
              .Help("Generate calls by model, task and final status code.")
              .Register(*registry_)),
      client_requests_(
          prometheus::BuildCounter()
              .Name("ldmserve_client_requests_total")
              .Help("With --auth-tokens: Generate calls by client (token "
                    "name) and final status code.")
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
      queue_capacity_(prometheus::BuildGauge()
                          .Name("ldmserve_queue_capacity")
                          .Help("Jobs the queue holds before refusing "
                                "(--queue-size).")
                          .Register(*registry_)
                          .Add({})),
      running_jobs_(prometheus::BuildGauge()
                        .Name("ldmserve_running_jobs")
                        .Help("Jobs in a running batch.")
                        .Register(*registry_)
                        .Add({})),
      tracked_jobs_(prometheus::BuildGauge()
                        .Name("ldmserve_tracked_jobs")
                        .Help("Jobs GetJob can find: queued, running and "
                              "finished ones still kept.")
                        .Register(*registry_)
                        .Add({})),
      kept_result_bytes_(
          prometheus::BuildGauge()
              .Name("ldmserve_kept_result_bytes")
              .Help("Bytes of finished jobs' results kept for GetJob and "
                    "WatchJob (bounded by --job-retention-mib).")
              .Register(*registry_)
              .Add({})),
      build_info_(prometheus::BuildGauge()
                      .Name("ldmserve_build_info")
                      .Help("Constant 1; the labels say what runs: ldmserve "
                            "version, LibTorch version, serving devices.")
                      .Register(*registry_)),
      request_seconds_(prometheus::BuildHistogram()
                           .Name("ldmserve_request_duration_seconds")
                           .Help("Generate calls from arrival to final status.")
                           .Register(*registry_)),
      queue_wait_seconds_(prometheus::BuildHistogram()
                              .Name("ldmserve_queue_wait_seconds")
                              .Help("Time jobs spent queued.")
                              .Register(*registry_)),
      step_seconds_(prometheus::BuildHistogram()
                        .Name("ldmserve_denoise_call_seconds")
                        .Help("One batched denoising (UNet) call.")
                        .Register(*registry_)),
      stage_seconds_(prometheus::BuildHistogram()
                         .Name("ldmserve_stage_seconds")
                         .Help("Encode (per job) and decode (per batch) "
                               "stages.")
                         .Register(*registry_)),
      batch_jobs_(prometheus::BuildHistogram()
                      .Name("ldmserve_batch_jobs")
                      .Help("Jobs sharing one denoising call.")
                      .Register(*registry_)
                      .Add({}, CountBuckets())),
      batch_images_(prometheus::BuildHistogram()
                        .Name("ldmserve_batch_images")
                        .Help("Images sharing one denoising call.")
                        .Register(*registry_)
                        .Add({}, CountBuckets())),
      busy_seconds_(prometheus::BuildCounter()
                        .Name("ldmserve_worker_busy_seconds_total")
                        .Help("Seconds workers spent in denoising calls "
                              "(rate() of it is the busy ratio).")
                        .Register(*registry_)),
      model_ready_(prometheus::BuildGauge()
                       .Name("ldmserve_model_ready")
                       .Help("1 when the model is loaded and serving.")
                       .Register(*registry_)),
      resident_memory_(prometheus::BuildGauge()
                           .Name("ldmserve_process_resident_memory_bytes")
                           .Help("Resident memory of the server process.")
                           .Register(*registry_)
                           .Add({})),
      memory_limit_(prometheus::BuildGauge()
                        .Name("ldmserve_process_memory_limit_bytes")
                        .Help("Memory limit of the server's container "
                              "(cgroup); absent when unlimited.")
                        .Register(*registry_)),
      device_memory_(prometheus::BuildGauge()
                         .Name("ldmserve_device_memory_bytes")
                         .Help("GPU memory held by LibTorch's caching "
                               "allocator: in tensors (allocated) and taken "
                               "from the driver (reserved); the device's "
                               "memory (total).")
                         .Register(*registry_)) {}

void ServiceMetrics::RequestEnded(const std::string& model,
                                  const std::string& task,
                                  absl::StatusCode code,
                                  absl::Duration duration) {
  requests_
      .Add({{"model", model},
            {"task", task},
            {"code", absl::StatusCodeToString(code)}})
      .Increment();
  request_seconds_.Add({{"model", model}}, SecondsBuckets())
      .Observe(absl::ToDoubleSeconds(duration));
}

void ServiceMetrics::ClientRequestEnded(const std::string& client,
                                        absl::StatusCode code) {
  client_requests_
      .Add({{"client", client}, {"code", absl::StatusCodeToString(code)}})
      .Increment();
}

void ServiceMetrics::SetBuildInfo(const std::string& version,
                                  const std::string& libtorch,
                                  const std::string& devices) {
  build_info_
      .Add({{"version", version}, {"libtorch", libtorch}, {"devices", devices}})
      .Set(1);
}

void ServiceMetrics::AddWorkers(const std::vector<WorkerId>& workers) {
  for (const WorkerId& worker : workers) {
    busy_seconds_.Add(WorkerLabels(worker));
  }
}

void ServiceMetrics::OnQueueWait(const std::string& model,
                                 absl::Duration wait) {
  queue_wait_seconds_.Add({{"model", model}}, SecondsBuckets())
      .Observe(absl::ToDoubleSeconds(wait));
}

void ServiceMetrics::OnDenoiseCall(const WorkerId& worker,
                                   const std::string& model, int jobs,
                                   int images, absl::Duration duration) {
  prometheus::Labels labels = WorkerLabels(worker);
  busy_seconds_.Add(labels).Increment(absl::ToDoubleSeconds(duration));
  labels.emplace("model", model);
  step_seconds_.Add(labels, SecondsBuckets())
      .Observe(absl::ToDoubleSeconds(duration));
  batch_jobs_.Observe(jobs);
  batch_images_.Observe(images);
}

void ServiceMetrics::OnStage(const WorkerId& worker, const char* stage,
                             absl::Duration duration) {
  prometheus::Labels labels = WorkerLabels(worker);
  labels.emplace("stage", stage);
  stage_seconds_.Add(labels, SecondsBuckets())
      .Observe(absl::ToDoubleSeconds(duration));
}

void ServiceMetrics::SetModelsReady(const std::map<std::string, bool>& ready) {
  absl::MutexLock lock(&mu_);
  for (auto it = model_ready_series_.begin();
       it != model_ready_series_.end();) {
    if (ready.count(it->first) == 0) {
      model_ready_.Remove(it->second);
      it = model_ready_series_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [model, is_ready] : ready) {
    prometheus::Gauge*& series = model_ready_series_[model];
    if (series == nullptr) series = &model_ready_.Add({{"model", model}});
    series->Set(is_ready ? 1 : 0);
  }
}

void ServiceMetrics::SetResidentMemory(double bytes) {
  resident_memory_.Set(bytes);
}

void ServiceMetrics::SetMemoryLimit(double bytes) {
  memory_limit_.Add({}).Set(bytes);
}

void ServiceMetrics::SetDeviceMemory(const std::string& device,
                                     double allocated_bytes,
                                     double reserved_bytes,
                                     double total_bytes) {
  device_memory_.Add({{"device", device}, {"kind", "allocated"}})
      .Set(allocated_bytes);
  device_memory_.Add({{"device", device}, {"kind", "reserved"}})
      .Set(reserved_bytes);
  device_memory_.Add({{"device", device}, {"kind", "total"}}).Set(total_bytes);
}

void ServiceMetrics::ImagesGenerated(int count) { images_.Increment(count); }

void ServiceMetrics::SetQueueDepth(int depth) { queue_depth_.Set(depth); }

void ServiceMetrics::SetQueueCapacity(int jobs) { queue_capacity_.Set(jobs); }

void ServiceMetrics::SetRunningJobs(int jobs) { running_jobs_.Set(jobs); }

void ServiceMetrics::SetTrackedJobs(int jobs, size_t result_bytes) {
  tracked_jobs_.Set(jobs);
  kept_result_bytes_.Set(static_cast<double>(result_bytes));
}

}  // namespace ldmserve
