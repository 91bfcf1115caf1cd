#include "server/service/auth_tokens.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace ldmserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAliceToken[] = "alice-0123456789abcdef";
constexpr char kBatchToken[] = "batch-fedcba9876543210";

std::string WriteFile(const std::string& name, const std::string& text) {
  const char* directory = std::getenv("TEST_TMPDIR");
  const std::string path =
      std::string(directory != nullptr ? directory : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(AuthTokensTest, ParsesNamesTokensAndLimits) {
  auto clients = AuthTokens::Parse(
      "# NAME TOKEN [MAX_JOBS]\n\n"
      "alice alice-0123456789abcdef 2\n"
      "  batch\tbatch-fedcba9876543210  \n",
      "tokens", 8);
  ASSERT_TRUE(clients.ok()) << clients.status();
  ASSERT_EQ(clients->size(), 2u);
  EXPECT_EQ((*clients)[0].name, "alice");
  EXPECT_EQ((*clients)[0].max_jobs, 2);
  EXPECT_EQ((*clients)[1].name, "batch");
  EXPECT_EQ((*clients)[1].token, kBatchToken);
  EXPECT_EQ((*clients)[1].max_jobs, 8);
}

TEST(AuthTokensTest, BadLinesNameTheLineAndNeverTheToken) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"alice\n", "tokens:1: expected NAME TOKEN [MAX_JOBS]"},
      {"# c\nalice short\n", "tokens:2: the token of alice must be 16 to"},
      {"al/ice alice-0123456789abcdef\n", "tokens:1: a name is 1 to 64"},
      {"alice alice-0123456789abcdef 0\n", "MAX_JOBS of alice must be"},
      {"alice alice-0123456789abcdef x\n", "MAX_JOBS of alice must be"},
      {"a alice-0123456789abcdef\na batch-fedcba9876543210\n",
       "tokens:2: name a given twice"},
      {"a alice-0123456789abcdef\nb alice-0123456789abcdef\n",
       "tokens:2: the token of b is another client's too"},
      {"# nobody\n", "tokens: no clients"},
  };
  for (const Case& c : cases) {
    auto clients = AuthTokens::Parse(c.text, "tokens", 8);
    ASSERT_FALSE(clients.ok()) << c.text;
    EXPECT_EQ(clients.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(clients.status().message(), HasSubstr(c.message)) << c.text;
    EXPECT_THAT(clients.status().message(), Not(HasSubstr("0123456789")));
  }
}

TEST(AuthTokensTest, AuthenticatesBearerTokensOnly) {
  auto tokens = AuthTokens::FromFile(
      WriteFile("auth_bearer", absl::StrCat("alice ", kAliceToken, "\n",
                                            "batch ", kBatchToken, "\n")),
      8);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ((*tokens)
                ->Authenticate(absl::StrCat("Bearer ", kAliceToken))
                .value_or(""),
            "alice");
  EXPECT_EQ((*tokens)
                ->Authenticate(absl::StrCat("bearer ", kBatchToken))
                .value_or(""),
            "batch");
  const std::string refused[] = {
      "",
      kAliceToken,                                // No scheme.
      absl::StrCat("Basic ", kAliceToken),        // Another scheme.
      "Bearer alice-0123456789abcdeF",            // One byte off.
      absl::StrCat("Bearer ", kAliceToken, "0"),  // One byte more.
      "Bearer alice-0123456789abcde",             // One byte less.
      "Bearer ",
  };
  for (const std::string& header : refused) {
    auto name = (*tokens)->Authenticate(header);
    EXPECT_EQ(name.status().code(), absl::StatusCode::kUnauthenticated)
        << header;
  }
}

TEST(AuthTokensTest, ReloadSwapsTokensAndKeepsThemWhenTheFileIsBad) {
  const std::string path =
      WriteFile("auth_reload", absl::StrCat("alice ", kAliceToken, "\n"));
  auto tokens = AuthTokens::FromFile(path, 8);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  WriteFile("auth_reload", absl::StrCat("batch ", kBatchToken, "\n"));
  ASSERT_EQ((*tokens)->Reload().value_or(0), 1);
  EXPECT_FALSE(
      (*tokens)->Authenticate(absl::StrCat("Bearer ", kAliceToken)).ok());
  EXPECT_TRUE(
      (*tokens)->Authenticate(absl::StrCat("Bearer ", kBatchToken)).ok());
  WriteFile("auth_reload", "batch\n");
  EXPECT_FALSE((*tokens)->Reload().ok());
  EXPECT_TRUE(
      (*tokens)->Authenticate(absl::StrCat("Bearer ", kBatchToken)).ok());
}

TEST(AuthTokensTest, EachClientHoldsAtMostItsJobs) {
  auto tokens = AuthTokens::FromFile(
      WriteFile("auth_jobs", absl::StrCat("alice ", kAliceToken, " 2\n",
                                          "batch ", kBatchToken, "\n")),
      1);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  auto first = (*tokens)->Acquire("alice");
  auto second = (*tokens)->Acquire("alice");
  ASSERT_TRUE(first.ok() && second.ok());
  auto third = (*tokens)->Acquire("alice");
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("client alice has 2 jobs"));
  // Another client's slots are its own (the default: 1).
  auto batch = (*tokens)->Acquire("batch");
  EXPECT_TRUE(batch.ok());
  EXPECT_FALSE((*tokens)->Acquire("batch").ok());
  EXPECT_EQ((*tokens)->InFlight("alice"), 2);
  first->Release();
  EXPECT_EQ((*tokens)->InFlight("alice"), 1);
  {
    AuthTokens::Lease moved = *std::move(second);
    EXPECT_EQ((*tokens)->InFlight("alice"), 1);
  }
  EXPECT_EQ((*tokens)->InFlight("alice"), 0);
  EXPECT_TRUE((*tokens)->Acquire("alice").ok());
}

}  // namespace
}  // namespace ldmserve
