// The load loop behind `ldmctl bench` (over gRPC) and `schedbench` (the
// scheduler in process): closed-loop (a fixed number of clients, each
// sending its next request when the last one ends) or open-loop (Poisson
// arrivals at a rate, whatever the server's speed), bounded by a duration
// and a request count, with a per-request mix of tasks and step counts drawn
// from a seed. It measures what a user sees: end-to-end latency (from the
// request's arrival, so queueing inside an overloaded client counts too),
// images per second, and final status codes. It knows nothing of transport:
// the caller runs each request.
//
// Thread-safe: RunLoadLoop may be called from any thread; it owns its
// threads and joins them all before returning. `run_one` is called from
// several threads at once.
#ifndef LDMSERVE_CLIENT_LOAD_LOOP_H_
#define LDMSERVE_CLIENT_LOAD_LOOP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace ldmctl {

struct LoadOptions {
  int concurrency = 1;     // Closed loop: clients in flight.
  double rate = 0;         // Open loop when > 0: requests per second.
  int max_in_flight = 64;  // Open loop: client-side cap on open calls.
  absl::Duration duration = absl::Seconds(10);  // No new request after it.
  int max_requests = 0;          // 0 = no count limit (duration only).
  std::vector<int> steps = {0};  // Drawn per request.
  std::vector<std::string> tasks = {"txt2img"};  // Drawn per request.
  uint64_t seed = 1;                             // The mix's seed.
  double timeout_seconds = 0;  // Per-request deadline; 0 = none.
};

// What request `index` is: its task, step count and image seed.
struct PlannedRequest {
  std::string task;
  int steps = 0;
  uint64_t seed = 0;
};
PlannedRequest PlanRequest(const LoadOptions& options, int64_t index);

// How one request ended.
struct Outcome {
  std::string code = "OK";  // Status code name ("OK", "INTERNAL", ...).
  double latency_seconds = 0;
  int images = 0;
};

struct LoadReport {
  int requests = 0;
  int ok = 0;
  int images = 0;
  double wall_seconds = 0;
  std::vector<double> latencies;      // Seconds, successful requests.
  std::map<std::string, int> errors;  // Status code name -> count.

  double Percentile(double p) const;  // Of `latencies`; 0 when empty.
  double ImagesPerSecond() const;
  // {"requests", "ok", "images", "wall_seconds", "images_per_second",
  //  "requests_per_second", "latency_seconds": {"p50", "p95", "p99", "mean"},
  //  "errors": {CODE: count}}
  std::string ToJson() const;
  std::string Summary() const;  // A few human-readable lines.
};

// Runs request `index`, which arrived at `arrival`, to its end; its latency
// counts from `arrival`.
using RunOneRequest = std::function<Outcome(int64_t index, absl::Time arrival)>;

LoadReport RunLoadLoop(const LoadOptions& options,
                       const RunOneRequest& run_one);

}  // namespace ldmctl

#endif  // LDMSERVE_CLIENT_LOAD_LOOP_H_
