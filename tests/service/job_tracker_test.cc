// TrackedJob and JobTracker without a server: what a watcher that attaches
// late is told, and how finished jobs are kept (time, count, bytes, owner).
#include "server/service/job_tracker.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace ldmserve {
namespace {

using ldm::v1::GenerateResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Records what a stream would write.
class RecordingWatcher : public JobWatcher {
 public:
  void Send(const GenerateResponse& event) override { events.push_back(event); }
  void End(const absl::Status& status,
           const GenerateResponse* result) override {
    ++ends;
    final_status = status;
    if (result != nullptr) events.push_back(*result);
  }
  // "queued:N", "started", "progress:STEP", "result" per event.
  std::vector<std::string> Kinds() const {
    std::vector<std::string> kinds;
    for (const GenerateResponse& event : events) {
      if (event.has_queued()) {
        kinds.push_back("queued:" + std::to_string(event.queued().position()));
      } else if (event.has_started()) {
        kinds.push_back("started");
      } else if (event.has_progress()) {
        kinds.push_back("progress:" + std::to_string(event.progress().step()));
      } else if (event.has_result()) {
        kinds.push_back("result");
      }
    }
    return kinds;
  }

  std::vector<GenerateResponse> events;
  int ends = 0;
  absl::Status final_status;
};

JobResult OneImageResult() {
  JobResult result;
  result.model_name = "m";
  ldm::RgbImage image;
  image.width = 4;
  image.height = 4;
  image.pixels.assign(4 * 4 * 3, 128);
  result.images.push_back(std::move(image));
  result.seeds.push_back(7);
  return result;
}

ProgressEvent Step(int step, int total) {
  ProgressEvent event;
  event.step = step;
  event.total_steps = total;
  return event;
}

class JobTrackerTest : public ::testing::Test {
 protected:
  std::shared_ptr<TrackedJob> NewJob(const std::string& id,
                                     const std::string& client = "") {
    auto job =
        std::make_shared<TrackedJob>(id, "request-" + id, &metrics_, &tracker_);
    if (!client.empty()) job->SetClient(client, AuthTokens::Lease());
    tracker_.Add(job);
    return job;
  }

  static JobRetention KeepThree() {
    JobRetention retention;
    retention.time = absl::Minutes(10);
    retention.max_finished_jobs = 3;
    return retention;
  }

  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
  ServiceMetrics metrics_;
  JobTracker tracker_{KeepThree(), [this] { return now_; }};
};

TEST_F(JobTrackerTest, ALateWatcherGetsTheStateSoFarThenTheRest) {
  std::shared_ptr<TrackedJob> job = NewJob("a");
  auto early = std::make_shared<RecordingWatcher>();
  job->Watch(early);
  job->OnQueued(2);
  job->OnQueued(2);  // Unchanged: not sent again.
  job->OnQueued(0);
  auto queued_watcher = std::make_shared<RecordingWatcher>();
  job->Watch(queued_watcher);
  EXPECT_THAT(queued_watcher->Kinds(), ElementsAre("queued:0"));

  job->OnStarted(absl::Seconds(1));
  job->OnProgress(Step(1, 3));
  job->OnProgress(Step(2, 3));
  auto running_watcher = std::make_shared<RecordingWatcher>();
  job->Watch(running_watcher);
  // Only the latest progress: the past steps are of no use to it.
  EXPECT_THAT(running_watcher->Kinds(), ElementsAre("started", "progress:2"));
  EXPECT_EQ(running_watcher->events[0].started().queue_time_ms(), 1000u);

  job->OnProgress(Step(3, 3));
  job->OnResult(OneImageResult());
  EXPECT_THAT(early->Kinds(),
              ElementsAre("queued:2", "queued:0", "started", "progress:1",
                          "progress:2", "progress:3", "result"));
  for (const auto& watcher : {early, queued_watcher, running_watcher}) {
    EXPECT_EQ(watcher->ends, 1);
    EXPECT_TRUE(watcher->final_status.ok());
    EXPECT_EQ(watcher->events.back().job_id(), "a");
    EXPECT_EQ(watcher->events.back().client_request_id(), "request-a");
    ASSERT_EQ(watcher->events.back().result().images_size(), 1);
    EXPECT_EQ(watcher->events.back().result().images(0).seed(), 7u);
  }
  // After the end: the result at once, then OK.
  auto late = std::make_shared<RecordingWatcher>();
  job->Watch(late);
  EXPECT_THAT(late->Kinds(), ElementsAre("result"));
  EXPECT_EQ(late->ends, 1);

  const ldm::v1::Job described = job->Describe(/*with_result=*/true);
  EXPECT_EQ(described.state(), ldm::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(described.step(), 3u);
  EXPECT_EQ(described.total_steps(), 3u);
  EXPECT_EQ(described.result().images_size(), 1);
  EXPECT_GT(described.finished_unix_ms(), 0);
  EXPECT_FALSE(job->Describe(/*with_result=*/false).has_result());
}

TEST_F(JobTrackerTest, TheEndIsToldOnceAndNothingFollowsIt) {
  std::shared_ptr<TrackedJob> job = NewJob("a");
  auto watcher = std::make_shared<RecordingWatcher>();
  job->Watch(watcher);
  job->OnStarted(absl::ZeroDuration());
  job->OnError(absl::CancelledError("cancelled by the client"));
  job->OnError(absl::InternalError("late"));
  job->OnResult(OneImageResult());
  job->OnProgress(Step(1, 2));
  EXPECT_EQ(watcher->ends, 1);
  EXPECT_EQ(watcher->final_status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(watcher->Kinds(), ElementsAre("started"));
  EXPECT_EQ(job->Describe(false).state(), ldm::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job->runtime_job(), nullptr);

  std::shared_ptr<TrackedJob> failed = NewJob("b");
  failed->OnError(absl::DeadlineExceededError("deadline exceeded"));
  const ldm::v1::Job described = failed->Describe(false);
  EXPECT_EQ(described.state(), ldm::v1::JOB_STATE_FAILED);
  EXPECT_EQ(described.status_code(),
            static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(described.status_message(), "deadline exceeded");
}

TEST_F(JobTrackerTest, AnUnwatchedStreamHearsNoMore) {
  std::shared_ptr<TrackedJob> job = NewJob("a");
  auto watcher = std::make_shared<RecordingWatcher>();
  job->Watch(watcher);
  job->OnQueued(1);
  job->Unwatch(watcher.get());
  job->OnQueued(0);
  job->OnError(absl::CancelledError("x"));
  EXPECT_THAT(watcher->Kinds(), ElementsAre("queued:1"));
  EXPECT_EQ(watcher->ends, 0);
}

TEST_F(JobTrackerTest, FinishedJobsAreForgottenAfterTheirTime) {
  std::shared_ptr<TrackedJob> job = NewJob("a");
  std::shared_ptr<TrackedJob> running = NewJob("b");
  job->OnResult(OneImageResult());
  now_ += absl::Minutes(9);
  EXPECT_TRUE(tracker_.Find("a", std::nullopt).ok());
  now_ += absl::Minutes(2);
  const absl::StatusOr<std::shared_ptr<TrackedJob>> gone =
      tracker_.Find("a", std::nullopt);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(gone.status().message(), HasSubstr("job_id"));
  // A job still running is never forgotten, however long it takes.
  EXPECT_TRUE(tracker_.Find("b", std::nullopt).ok());
  EXPECT_EQ(tracker_.size(), 1);
  EXPECT_EQ(tracker_.result_bytes(), 0u);
}

TEST_F(JobTrackerTest, OnlyTheNewestFinishedJobsAreKept) {
  for (const char* id : {"1", "2", "3", "4", "5"}) {
    NewJob(id)->OnError(absl::CancelledError("x"));
  }
  std::vector<std::string> kept;
  for (const auto& job : tracker_.List(std::nullopt)) kept.push_back(job->id());
  EXPECT_THAT(kept, ElementsAre("3", "4", "5"));
}

TEST_F(JobTrackerTest, ResultsBeyondTheBudgetAreDroppedOldestFirst) {
  std::shared_ptr<TrackedJob> first = NewJob("first");
  first->OnResult(OneImageResult());
  const size_t one_result = tracker_.result_bytes();
  ASSERT_GT(one_result, 0u);
  // A budget for one result and a half: the second result pushes the first
  // out, the job itself stays.
  JobRetention retention;
  retention.result_bytes = one_result * 3 / 2;
  JobTracker tight(retention, [this] { return now_; });
  std::vector<std::shared_ptr<TrackedJob>> jobs;
  // Ids as long as the first's: results of the same size.
  for (const std::string id : {"older", "newer"}) {
    jobs.push_back(
        std::make_shared<TrackedJob>(id, "request-" + id, &metrics_, &tight));
    tight.Add(jobs.back());
    jobs.back()->OnResult(OneImageResult());
  }
  EXPECT_EQ(tight.result_bytes(), one_result);
  const ldm::v1::Job old_job = jobs[0]->Describe(/*with_result=*/true);
  EXPECT_EQ(old_job.state(), ldm::v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(old_job.result_dropped());
  EXPECT_FALSE(old_job.has_result());
  EXPECT_EQ(jobs[1]->Describe(true).result().images_size(), 1);
  // Watching a job whose result is gone says so.
  auto watcher = std::make_shared<RecordingWatcher>();
  jobs[0]->Watch(watcher);
  EXPECT_EQ(watcher->final_status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(watcher->final_status.message(),
              HasSubstr("--job-retention-mib"));
}

TEST_F(JobTrackerTest, WithTokensAClientFindsOnlyItsOwnJobs) {
  NewJob("alice-1", "alice");
  NewJob("bob-1", "bob");
  EXPECT_TRUE(tracker_.Find("alice-1", std::string("alice")).ok());
  EXPECT_EQ(tracker_.Find("alice-1", std::string("bob")).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(tracker_.Find("alice-1", std::nullopt).ok());
  const auto listed = tracker_.List(std::string("bob"));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]->id(), "bob-1");
  EXPECT_EQ(tracker_.List(std::nullopt).size(), 2u);
}

TEST_F(JobTrackerTest, ARefusedJobLeavesNoTrace) {
  std::shared_ptr<TrackedJob> job = NewJob("a");
  tracker_.Remove("a");
  job->Reject(absl::ResourceExhaustedError("the queue is full"));
  EXPECT_EQ(tracker_.Find("a", std::nullopt).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(tracker_.size(), 0);
}

}  // namespace
}  // namespace ldmserve
