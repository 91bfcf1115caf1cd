#include "client/load_loop.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace ldmctl {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from a hash.
double Unit(uint64_t bits) {
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// Collects outcomes from the client threads.
class Recorder {
 public:
  void Add(const Outcome& outcome) {
    absl::MutexLock lock(&mu_);
    ++report_.requests;
    if (outcome.code == "OK") {
      ++report_.ok;
      report_.images += outcome.images;
      report_.latencies.push_back(outcome.latency_seconds);
    } else {
      ++report_.errors[outcome.code];
    }
  }
  LoadReport Take() {
    absl::MutexLock lock(&mu_);
    return std::move(report_);
  }

 private:
  absl::Mutex mu_;
  LoadReport report_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

PlannedRequest PlanRequest(const LoadOptions& options, int64_t index) {
  const uint64_t base = Mix(options.seed ^ Mix(static_cast<uint64_t>(index)));
  PlannedRequest plan;
  plan.task = options.tasks[static_cast<size_t>(
      Unit(Mix(base ^ 1)) * static_cast<double>(options.tasks.size()))];
  plan.steps = options.steps[static_cast<size_t>(
      Unit(Mix(base ^ 2)) * static_cast<double>(options.steps.size()))];
  plan.seed = options.seed * 1000003 + static_cast<uint64_t>(index) + 1;
  return plan;
}

double LoadReport::Percentile(double p) const {
  if (latencies.empty()) return 0;
  std::vector<double> sorted = latencies;
  std::sort(sorted.begin(), sorted.end());
  // Nearest rank.
  const auto rank = static_cast<size_t>(
      std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

double LoadReport::ImagesPerSecond() const {
  return wall_seconds > 0 ? images / wall_seconds : 0;
}

std::string LoadReport::ToJson() const {
  double mean = 0;
  for (double latency : latencies) mean += latency;
  if (!latencies.empty()) mean /= static_cast<double>(latencies.size());
  nlohmann::json json = {
      {"requests", requests},
      {"ok", ok},
      {"images", images},
      {"wall_seconds", wall_seconds},
      {"images_per_second", ImagesPerSecond()},
      {"requests_per_second", wall_seconds > 0 ? ok / wall_seconds : 0},
      {"latency_seconds",
       {{"p50", Percentile(50)},
        {"p95", Percentile(95)},
        {"p99", Percentile(99)},
        {"mean", mean}}},
      {"errors", errors}};
  return json.dump(1);
}

std::string LoadReport::Summary() const {
  std::string errors_text;
  for (const auto& [code, count] : errors) {
    absl::StrAppendFormat(&errors_text, " %s=%d", code, count);
  }
  return absl::StrFormat(
      "requests %d, ok %d, images %d in %.2f s: %.3f images/s\n"
      "latency p50 %.3f s, p95 %.3f s, p99 %.3f s\n"
      "errors:%s\n",
      requests, ok, images, wall_seconds, ImagesPerSecond(), Percentile(50),
      Percentile(95), Percentile(99),
      errors_text.empty() ? " none" : errors_text);
}

LoadReport RunLoadLoop(const LoadOptions& options,
                       const RunOneRequest& run_one) {
  Recorder recorder;
  const absl::Time start = absl::Now();
  const absl::Time stop = start + options.duration;
  auto within_count = [&](int64_t index) {
    return options.max_requests <= 0 || index < options.max_requests;
  };
  std::vector<std::thread> clients;

  if (options.rate <= 0) {
    // Closed loop: each client sends its next request when the last ends.
    std::atomic<int64_t> next_index{0};
    for (int c = 0; c < std::max(1, options.concurrency); ++c) {
      clients.emplace_back([&] {
        while (absl::Now() < stop) {
          const int64_t index = next_index.fetch_add(1);
          if (!within_count(index)) break;
          recorder.Add(run_one(index, absl::Now()));
        }
      });
    }
  } else {
    // Open loop: arrivals on a Poisson clock, served by a bounded pool; a
    // request that waits for a free client still counts from its arrival.
    struct Arrival {
      int64_t index;
      absl::Time time;
    };
    absl::Mutex mu;
    std::deque<Arrival> pending;
    bool closed = false;
    for (int c = 0; c < std::max(1, options.max_in_flight); ++c) {
      clients.emplace_back([&] {
        while (true) {
          Arrival arrival;
          {
            absl::MutexLock lock(&mu);
            const auto ready = [&] { return !pending.empty() || closed; };
            mu.Await(absl::Condition(&ready));
            if (pending.empty()) return;
            arrival = pending.front();
            pending.pop_front();
          }
          recorder.Add(run_one(arrival.index, arrival.time));
        }
      });
    }
    absl::Time next = start;
    for (int64_t index = 0; within_count(index); ++index) {
      // Exponential gaps: a Poisson process of the given rate.
      const double gap =
          -std::log(1.0 - Unit(Mix(options.seed ^ Mix(~index)))) / options.rate;
      next += absl::Seconds(gap);
      if (next >= stop) break;
      absl::SleepFor(next - absl::Now());  // Pacing, not synchronisation.
      absl::MutexLock lock(&mu);
      pending.push_back({index, next});
    }
    absl::MutexLock lock(&mu);
    closed = true;
  }
  for (std::thread& client : clients) client.join();
  LoadReport report = recorder.Take();
  report.wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return report;
}

}  // namespace ldmctl
