#include "server/service/auth_tokens.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ldmserve {
namespace {

constexpr size_t kMinTokenBytes = 16;
constexpr size_t kMaxTokenBytes = 512;
constexpr size_t kMaxNameBytes = 64;
constexpr int kMaxJobsLimit = 10000;
constexpr size_t kMaxFileBytes = 1 << 20;

bool IsNameCharacter(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '-';
}

// Equal strings in a time that depends on their lengths only, not on where
// they first differ: a caller cannot find a token byte by byte.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  const size_t length = std::max(a.size(), b.size());
  unsigned int difference = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < length; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    difference |= x ^ y;
  }
  return difference == 0;
}

}  // namespace

AuthTokens::Lease& AuthTokens::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = other.owner_;
    name_ = std::move(other.name_);
    other.owner_ = nullptr;
  }
  return *this;
}

void AuthTokens::Lease::Release() {
  if (owner_ == nullptr) return;
  owner_->ReleaseSlot(name_);
  owner_ = nullptr;
}

absl::StatusOr<std::vector<AuthTokens::Client>> AuthTokens::Parse(
    absl::string_view text, absl::string_view source, int default_max_jobs) {
  std::vector<Client> clients;
  std::set<std::string> names;
  std::set<std::string> tokens;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_number, ": ", what));
    };
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() < 2 || fields.size() > 3) {
      return error("expected NAME TOKEN [MAX_JOBS]");
    }
    Client client;
    client.name = std::string(fields[0]);
    client.token = std::string(fields[1]);
    client.max_jobs = default_max_jobs;
    if (client.name.size() > kMaxNameBytes ||
        !std::all_of(client.name.begin(), client.name.end(), IsNameCharacter)) {
      return error(
          absl::StrCat("a name is 1 to ", kMaxNameBytes, " of [A-Za-z0-9._-]"));
    }
    // The token itself never goes into a message.
    if (client.token.size() < kMinTokenBytes ||
        client.token.size() > kMaxTokenBytes) {
      return error(absl::StrCat("the token of ", client.name, " must be ",
                                kMinTokenBytes, " to ", kMaxTokenBytes,
                                " characters"));
    }
    if (!std::all_of(client.token.begin(), client.token.end(),
                     [](char c) { return c > ' ' && c < 0x7f; })) {
      return error(absl::StrCat("the token of ", client.name,
                                " must be printable ASCII"));
    }
    if (fields.size() == 3 &&
        (!absl::SimpleAtoi(fields[2], &client.max_jobs) ||
         client.max_jobs < 1 || client.max_jobs > kMaxJobsLimit)) {
      return error(absl::StrCat("MAX_JOBS of ", client.name,
                                " must be an integer in [1, ", kMaxJobsLimit,
                                "]"));
    }
    if (!names.insert(client.name).second) {
      return error(absl::StrCat("name ", client.name, " given twice"));
    }
    if (!tokens.insert(client.token).second) {
      return error(absl::StrCat("the token of ", client.name,
                                " is another client's too"));
    }
    clients.push_back(std::move(client));
  }
  if (clients.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no clients (NAME TOKEN [MAX_JOBS] a line)"));
  }
  return clients;
}

absl::StatusOr<std::unique_ptr<AuthTokens>> AuthTokens::FromFile(
    std::string path, int default_max_jobs) {
  std::unique_ptr<AuthTokens> tokens(
      new AuthTokens(std::move(path), default_max_jobs));
  absl::StatusOr<int> loaded = tokens->Reload();
  if (!loaded.ok()) return loaded.status();
  return tokens;
}

absl::StatusOr<int> AuthTokens::Reload() {
  std::ifstream file(path_, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path_));
  }
  std::string text(kMaxFileBytes + 1, '\0');
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(file.gcount()));
  if (text.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": larger than ", kMaxFileBytes, " bytes"));
  }
  absl::StatusOr<std::vector<Client>> clients =
      Parse(text, path_, default_max_jobs_);
  if (!clients.ok()) return clients.status();
  const int count = static_cast<int>(clients->size());
  absl::MutexLock lock(&mu_);
  clients_ = *std::move(clients);
  return count;
}

absl::StatusOr<std::string> AuthTokens::Authenticate(
    absl::string_view authorization) const {
  // RFC 6750: the scheme is case-insensitive.
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()),
                              kScheme)) {
    return absl::UnauthenticatedError(
        "this server needs a token: authorization: Bearer TOKEN");
  }
  const absl::string_view presented =
      absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  absl::MutexLock lock(&mu_);
  const Client* found = nullptr;
  // Every token is compared, matched or not.
  for (const Client& client : clients_) {
    if (ConstantTimeEquals(presented, client.token)) found = &client;
  }
  if (found == nullptr) {
    return absl::UnauthenticatedError("unknown or revoked token");
  }
  return found->name;
}

absl::StatusOr<AuthTokens::Lease> AuthTokens::Acquire(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto client = std::find_if(clients_.begin(), clients_.end(),
                             [&](const Client& c) { return c.name == name; });
  if (client == clients_.end()) {
    return absl::UnauthenticatedError("unknown or revoked token");
  }
  int& in_flight = in_flight_[name];
  if (in_flight >= client->max_jobs) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "client ", name, " has ", in_flight,
        " jobs in flight, its limit (MAX_JOBS ", client->max_jobs, ")"));
  }
  ++in_flight;
  return Lease(this, name);
}

int AuthTokens::InFlight(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto found = in_flight_.find(name);
  return found == in_flight_.end() ? 0 : found->second;
}

void AuthTokens::ReleaseSlot(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto found = in_flight_.find(name);
  if (found == in_flight_.end()) return;
  if (--found->second <= 0) in_flight_.erase(found);
}

}  // namespace ldmserve
