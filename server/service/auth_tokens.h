// Bearer tokens for ldmserve (--auth-tokens=FILE). The file holds one client
// a line:
//
//   # NAME  TOKEN                              [MAX_JOBS]
//   alice   3f0c1d6e9a8b4c2d7e5f6a1b2c3d4e5f   4
//   batch   a1b2c3d4e5f60718293a4b5c6d7e8f90
//
// A call carries `authorization: Bearer TOKEN`; the client's NAME (never its
// token) is what logs and metrics show. MAX_JOBS bounds the client's
// Generate calls in flight (the server's --token-max-jobs where absent).
// Reload() rereads the file (SIGHUP); a file that does not parse leaves the
// previous tokens in force.
//
// Example:
//   LDM_ASSIGN_OR_RETURN(auto tokens, AuthTokens::FromFile(path, 8));
//   LDM_ASSIGN_OR_RETURN(std::string name, tokens->Authenticate(header));
//   LDM_ASSIGN_OR_RETURN(AuthTokens::Lease lease, tokens->Acquire(name));
#ifndef LDMSERVE_SERVER_SERVICE_AUTH_TOKENS_H_
#define LDMSERVE_SERVER_SERVICE_AUTH_TOKENS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace ldmserve {

class AuthTokens {
 public:
  struct Client {
    std::string name;
    std::string token;
    int max_jobs = 0;
  };

  // One slot of a client's concurrency, given back when destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease() { Release(); }
    void Release();

   private:
    friend class AuthTokens;
    Lease(AuthTokens* owner, std::string name)
        : owner_(owner), name_(std::move(name)) {}
    AuthTokens* owner_ = nullptr;
    std::string name_;
  };

  // Parses a tokens file's text; errors name `source` and the line.
  static absl::StatusOr<std::vector<Client>> Parse(absl::string_view text,
                                                   absl::string_view source,
                                                   int default_max_jobs);
  static absl::StatusOr<std::unique_ptr<AuthTokens>> FromFile(
      std::string path, int default_max_jobs);

  // Rereads the file; on error the tokens in force stay. Returns the number
  // of clients now in force.
  absl::StatusOr<int> Reload() ABSL_LOCKS_EXCLUDED(mu_);

  // The client whose token `authorization` ("Bearer TOKEN") carries, or
  // UNAUTHENTICATED. Compares in time independent of where tokens differ.
  absl::StatusOr<std::string> Authenticate(
      absl::string_view authorization) const ABSL_LOCKS_EXCLUDED(mu_);

  // A slot of `name`'s MAX_JOBS, or RESOURCE_EXHAUSTED when all are held.
  // Slots are counted by name, so that they survive a reload.
  absl::StatusOr<Lease> Acquire(const std::string& name)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The jobs `name` holds now.
  int InFlight(const std::string& name) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  AuthTokens(std::string path, int default_max_jobs)
      : path_(std::move(path)), default_max_jobs_(default_max_jobs) {}
  void ReleaseSlot(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string path_;
  const int default_max_jobs_;
  mutable absl::Mutex mu_;
  std::vector<Client> clients_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_AUTH_TOKENS_H_
