#include "server/service/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <string>

namespace ldmserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Exposition(const ServiceMetrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
}

TEST(ServiceMetricsTest, DeviceMemoryIsOneSeriesPerDeviceAndKind) {
  ServiceMetrics metrics;
  EXPECT_THAT(Exposition(metrics),
              Not(HasSubstr("ldmserve_device_memory_bytes{")));
  metrics.SetDeviceMemory("cuda:1", 1024, 4096, 8192);
  // The latest reading wins.
  metrics.SetDeviceMemory("cuda:1", 2048, 4096, 8192);
  const std::string text = Exposition(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE ldmserve_device_memory_bytes gauge"));
  EXPECT_THAT(text, HasSubstr("ldmserve_device_memory_bytes{device=\"cuda:1\","
                              "kind=\"allocated\"} 2048"));
  EXPECT_THAT(text, HasSubstr("ldmserve_device_memory_bytes{device=\"cuda:1\","
                              "kind=\"reserved\"} 4096"));
  EXPECT_THAT(text, HasSubstr("ldmserve_device_memory_bytes{device=\"cuda:1\","
                              "kind=\"total\"} 8192"));
}

TEST(ServiceMetricsTest, AnUnloadedModelsSeriesIsRemoved) {
  ServiceMetrics metrics;
  metrics.SetModelsReady({{"a", true}, {"b", false}});
  std::string text = Exposition(metrics);
  EXPECT_THAT(text, HasSubstr("ldmserve_model_ready{model=\"a\"} 1"));
  EXPECT_THAT(text, HasSubstr("ldmserve_model_ready{model=\"b\"} 0"));
  metrics.SetModelsReady({{"b", true}});
  text = Exposition(metrics);
  EXPECT_THAT(text, Not(HasSubstr("ldmserve_model_ready{model=\"a\"}")));
  EXPECT_THAT(text, HasSubstr("ldmserve_model_ready{model=\"b\"} 1"));
}

TEST(ServiceMetricsTest, QueueCapacityAndMemoryLimitForSaturationAlerts) {
  ServiceMetrics metrics;
  // No limit known: no series, rather than a 0 that reads as "full".
  EXPECT_THAT(Exposition(metrics),
              Not(HasSubstr("ldmserve_process_memory_limit_bytes ")));
  metrics.SetQueueCapacity(64);
  metrics.SetMemoryLimit(8589934592.0);
  const std::string text = Exposition(metrics);
  EXPECT_THAT(text, HasSubstr("ldmserve_queue_capacity 64"));
  EXPECT_THAT(text,
              HasSubstr("ldmserve_process_memory_limit_bytes 8589934592"));
}

TEST(ServiceMetricsTest, PerWorkerSeriesExistBeforeTheFirstCall) {
  ServiceMetrics metrics;
  metrics.AddWorkers({{0, "cuda:0"}, {1, "cuda:1"}});
  metrics.OnDenoiseCall({1, "cuda:1"}, "sd", 2, 4, absl::Milliseconds(250));
  const std::string text = Exposition(metrics);
  // The idle worker reads 0, not absent: its busy ratio is 0.
  EXPECT_THAT(text, HasSubstr("ldmserve_worker_busy_seconds_total{"
                              "device=\"cuda:0\",worker=\"0\"} 0"));
  EXPECT_THAT(text, HasSubstr("ldmserve_worker_busy_seconds_total{"
                              "device=\"cuda:1\",worker=\"1\"} 0.25"));
  EXPECT_THAT(text, HasSubstr("ldmserve_denoise_call_seconds_count{"
                              "device=\"cuda:1\",model=\"sd\","
                              "worker=\"1\"} 1"));
  EXPECT_THAT(text, Not(HasSubstr("ldmserve_denoise_call_seconds_count{"
                                  "device=\"cuda:0\"")));
}

TEST(ServiceMetricsTest, BuildInfoIsOneSeriesOfValueOne) {
  ServiceMetrics metrics;
  metrics.SetBuildInfo("0.1.0", "2.5.1", "cuda:0,cuda:1");
  EXPECT_THAT(Exposition(metrics),
              HasSubstr("ldmserve_build_info{devices=\"cuda:0,cuda:1\","
                        "libtorch=\"2.5.1\",version=\"0.1.0\"} 1"));
}

TEST(ServiceMetricsTest, LatencyHistogramsCarryTheModel) {
  ServiceMetrics metrics;
  metrics.RequestEnded("sd", "text_to_image", absl::StatusCode::kOk,
                       absl::Seconds(3));
  metrics.OnQueueWait("sd", absl::Milliseconds(30));
  const std::string text = Exposition(metrics);
  EXPECT_THAT(text, HasSubstr("ldmserve_request_duration_seconds_count{"
                              "model=\"sd\"} 1"));
  EXPECT_THAT(text, HasSubstr("ldmserve_request_duration_seconds_bucket{"
                              "model=\"sd\",le=\"2.5\"} 0"));
  EXPECT_THAT(text, HasSubstr("ldmserve_queue_wait_seconds_count{"
                              "model=\"sd\"} 1"));
}

}  // namespace
}  // namespace ldmserve
