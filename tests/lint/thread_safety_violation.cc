// Not built: lint.thread_safety_catches compiles it to prove that the
// thread-safety analysis reports an unguarded access.
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ldmserve {

class Counter {
 public:
  void Increment() { ++count_; }  // Deliberately without mu_.

 private:
  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ldmserve
