// The soak test's client (tests/service/soak_test.py drives it): REQUESTS
// Generate calls at CONCURRENCY against a running ldmserve, each with a
// behaviour drawn from a seeded generator:
//
//   normal     reads to the end; must be OK, and its image must equal every
//              other image of the same (prompt, seed, steps)
//   cancel     cancels after reading 1-3 events (OK if it finished first)
//   deadline   a deadline of 50-1500 ms (OK or DEADLINE_EXCEEDED)
//   silent     never reads its stream, then cancels after 0.2-1.5 s
//   malformed  5%: out of limits, unknown model, corrupt PNG, no task;
//              must get INVALID_ARGUMENT or NOT_FOUND at once
//
// --only-normal --allow-unavailable: the drain check (every call reads to
// the end; calls made after SIGTERM may get UNAVAILABLE).
//
// Prints "progress N" as calls end (the driver samples the server's memory
// by progress), then one JSON summary: calls by behaviour and final code,
// and every violation found.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/load_generator.h"
#include "ldm/v1/image_synthesis.grpc.pb.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051", "server address");
ABSL_FLAG(int, requests, 400, "calls in all");
ABSL_FLAG(int, concurrency, 32, "calls in flight");
ABSL_FLAG(uint64_t, seed, 1, "seed of the behaviour draws");
ABSL_FLAG(bool, only_normal, false,
          "every call reads to the end (the drain check)");
ABSL_FLAG(bool, allow_unavailable, false,
          "UNAVAILABLE is an allowed end (calls made while the server drains)");

namespace {

using ldm::v1::GenerateRequest;
using ldm::v1::GenerateResponse;

const char* const kPrompts[] = {
    "a red circle",
    "a blue square",
    "a green triangle",
    "a yellow circle",
    "a red square above a blue circle",
    "a purple triangle",
    "a blue circle",
    "an orange square",
};

enum class Behaviour { kNormal, kCancel, kDeadline, kSilent, kMalformed };

const char* BehaviourName(Behaviour behaviour) {
  switch (behaviour) {
    case Behaviour::kNormal:
      return "normal";
    case Behaviour::kCancel:
      return "cancel";
    case Behaviour::kDeadline:
      return "deadline";
    case Behaviour::kSilent:
      return "silent";
    case Behaviour::kMalformed:
      return "malformed";
  }
  return "?";
}

struct Plan {
  Behaviour behaviour = Behaviour::kNormal;
  GenerateRequest request;
  std::string combination;  // Equal combinations must give equal images.
  int cancel_after_events = 0;
  int deadline_ms = 0;
  int silent_ms = 0;
};

Plan MakePlan(int index, uint64_t seed, bool only_normal) {
  std::mt19937_64 random(seed * 1000003 + static_cast<uint64_t>(index));
  Plan plan;
  const int draw = only_normal ? 99 : static_cast<int>(random() % 100);
  plan.behaviour = draw < 5    ? Behaviour::kMalformed
                   : draw < 15 ? Behaviour::kCancel
                   : draw < 25 ? Behaviour::kDeadline
                   : draw < 28 ? Behaviour::kSilent
                               : Behaviour::kNormal;
  const std::string prompt = kPrompts[random() % std::size(kPrompts)];
  const uint64_t image_seed = 1 + random() % 2;
  const int steps = random() % 2 == 0 ? 3 : 5;
  GenerateRequest& request = plan.request;
  request.mutable_text_to_image()->set_prompt(prompt);
  request.mutable_sampler()->set_steps(steps);
  request.set_seed(image_seed);
  request.set_client_request_id(absl::StrCat("soak-", index));
  plan.combination = absl::StrCat(prompt, "|", image_seed, "|", steps);
  plan.cancel_after_events = 1 + static_cast<int>(random() % 3);
  plan.deadline_ms = 50 + static_cast<int>(random() % 1450);
  plan.silent_ms = 200 + static_cast<int>(random() % 1300);
  if (plan.behaviour == Behaviour::kMalformed) {
    switch (random() % 5) {
      case 0:
        request.mutable_sampler()->set_steps(100000);
        break;
      case 1:
        request.set_model("no-such-model");
        break;
      case 2:
        request.mutable_image_to_image()->set_prompt(prompt);
        request.mutable_image_to_image()->set_init_image("\x89PNG broken");
        break;
      case 3:
        request.clear_text_to_image();
        break;
      default:
        request.mutable_text_to_image()->set_width(17);
        break;
    }
  }
  return plan;
}

struct Outcome {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string image;  // The first image's bytes, when OK.
  int results = 0;
};

Outcome Run(ldm::v1::ImageSynthesisService::Stub& stub, const Plan& plan) {
  grpc::ClientContext context;
  if (plan.behaviour == Behaviour::kDeadline) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(plan.deadline_ms));
  } else {
    // Nothing in a soak may hang: a call that long is a finding.
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::minutes(5));
  }
  auto reader = stub.Generate(&context, plan.request);
  Outcome outcome;
  GenerateResponse response;
  if (plan.behaviour == Behaviour::kSilent) {
    // A client that never reads: its stream fills up on the server.
    std::this_thread::sleep_for(std::chrono::milliseconds(plan.silent_ms));
    context.TryCancel();
  }
  int events = 0;
  while (reader->Read(&response)) {
    ++events;
    if (response.has_result()) {
      ++outcome.results;
      if (response.result().images_size() > 0) {
        outcome.image = response.result().images(0).data();
      }
    }
    if (plan.behaviour == Behaviour::kCancel &&
        events == plan.cancel_after_events) {
      context.TryCancel();
    }
  }
  outcome.code = reader->Finish().error_code();
  return outcome;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int requests = absl::GetFlag(FLAGS_requests);
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const bool only_normal = absl::GetFlag(FLAGS_only_normal);
  const bool allow_unavailable = absl::GetFlag(FLAGS_allow_unavailable);
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(64 << 20);
  auto stub = ldm::v1::ImageSynthesisService::NewStub(
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_addr),
                                grpc::InsecureChannelCredentials(), arguments));

  absl::Mutex mu;
  std::map<std::string, std::map<std::string, int>> counts;  // By behaviour.
  std::map<std::string, std::string> images;                 // By combination.
  std::vector<std::string> violations;
  int done = 0;
  std::atomic<int> next{0};
  auto worker = [&] {
    for (int index = next++; index < requests; index = next++) {
      const Plan plan = MakePlan(index, seed, only_normal);
      const Outcome outcome = Run(*stub, plan);
      const std::string code = ldmctl::StatusCodeName(outcome.code);
      std::string violation;
      const bool refused_while_draining =
          allow_unavailable && outcome.code == grpc::StatusCode::UNAVAILABLE;
      const bool ok = outcome.code == grpc::StatusCode::OK;
      switch (plan.behaviour) {
        case Behaviour::kNormal:
          if (!ok && !refused_while_draining) {
            violation = "a normal call ended " + code;
          }
          break;
        case Behaviour::kCancel:
        case Behaviour::kSilent:
          if (!ok && outcome.code != grpc::StatusCode::CANCELLED) {
            violation = "a cancelled call ended " + code;
          }
          break;
        case Behaviour::kDeadline:
          if (!ok && outcome.code != grpc::StatusCode::DEADLINE_EXCEEDED) {
            violation = "a call with a deadline ended " + code;
          }
          break;
        case Behaviour::kMalformed:
          if (outcome.code != grpc::StatusCode::INVALID_ARGUMENT &&
              outcome.code != grpc::StatusCode::NOT_FOUND) {
            violation = "a malformed call ended " + code;
          }
          break;
      }
      if (ok && outcome.results != 1) {
        violation =
            absl::StrCat("an OK call had ", outcome.results, " results");
      }
      absl::MutexLock lock(&mu);
      ++counts[BehaviourName(plan.behaviour)][code];
      if (ok && plan.behaviour != Behaviour::kMalformed) {
        auto [known, inserted] =
            images.emplace(plan.combination, outcome.image);
        if (!inserted && known->second != outcome.image) {
          violation = "a different image for " + plan.combination;
        }
      }
      if (!violation.empty()) {
        violations.push_back(absl::StrCat("call ", index, ": ", violation));
      }
      ++done;
      if (done % 10 == 0 || done == requests) {
        std::printf("progress %d\n", done);
        std::fflush(stdout);
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(concurrency));
  for (int i = 0; i < concurrency; ++i) threads.emplace_back(worker);
  for (std::thread& thread : threads) thread.join();

  // The summary, as JSON on one line.
  std::string json = "{\"counts\": {";
  bool first_behaviour = true;
  for (const auto& [behaviour, codes] : counts) {
    absl::StrAppend(&json, first_behaviour ? "" : ", ", "\"", behaviour,
                    "\": {");
    first_behaviour = false;
    bool first_code = true;
    for (const auto& [code, count] : codes) {
      absl::StrAppend(&json, first_code ? "" : ", ", "\"", code, "\": ", count);
      first_code = false;
    }
    json += "}";
  }
  absl::StrAppend(&json, "}, \"combinations\": ", images.size(),
                  ", \"violations\": [");
  for (size_t i = 0; i < violations.size(); ++i) {
    absl::StrAppend(&json, i == 0 ? "" : ", ", "\"", violations[i], "\"");
  }
  json += "]}";
  std::printf("summary %s\n", json.c_str());
  return violations.empty() ? 0 : 1;
}
