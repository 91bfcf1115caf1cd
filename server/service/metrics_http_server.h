// A minimal HTTP endpoint for Prometheus: GET /metrics returns the registry
// in the text exposition format; anything else gets 404.
//
// Why not prometheus-cpp's Exposer: its civetweb starts worker threads with a
// 100 KiB stack, which is below glibc's minimum once LibTorch's static TLS is
// loaded, so pthread_create fails and the exposer cannot start in this
// process.
//
// One thread serves connections one at a time (scrapes are rare and small);
// Stop() (or the destructor) wakes and joins it.
#ifndef LDMSERVE_SERVER_SERVICE_METRICS_HTTP_SERVER_H_
#define LDMSERVE_SERVER_SERVICE_METRICS_HTTP_SERVER_H_

#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace ldmserve {

class MetricsHttpServer {
 public:
  // Listens on `address` ("host:port"; port 0 picks a free one).
  // `before_scrape` runs before each collection (to refresh gauges that are
  // read from elsewhere).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address,
      std::shared_ptr<prometheus::Registry> registry,
      std::function<void()> before_scrape = nullptr);
  ~MetricsHttpServer();

  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer() = default;
  void Serve();
  void HandleConnection(int fd);

  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> before_scrape_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_METRICS_HTTP_SERVER_H_
