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
  metrics.SetDeviceMemory("cuda:1", 1024, 4096);
  metrics.SetDeviceMemory("cuda:1", 2048, 4096);  // The latest reading wins.
  const std::string text = Exposition(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE ldmserve_device_memory_bytes gauge"));
  EXPECT_THAT(text, HasSubstr("ldmserve_device_memory_bytes{device=\"cuda:1\","
                              "kind=\"allocated\"} 2048"));
  EXPECT_THAT(text, HasSubstr("ldmserve_device_memory_bytes{device=\"cuda:1\","
                              "kind=\"reserved\"} 4096"));
}

}  // namespace
}  // namespace ldmserve
