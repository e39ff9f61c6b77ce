// SPDX-License-Identifier: Apache-2.0
#include "api/api_requests.h"

#include <gtest/gtest.h>

#include <string>

namespace skiff::api {
namespace {

using std::chrono::milliseconds;

// The error message of a parse that must fail.
template <typename T>
std::string failure(const Result<T>& result) {
  EXPECT_FALSE(result);
  if (result) return {};
  EXPECT_EQ(result.error().kind(), ErrorKind::kConfig);
  return result.error().message();
}

TEST(ApiRequests, ShutdownDefaultsWithoutBodyOrField) {
  EXPECT_EQ(parse_shutdown_request("")->timeout, kDefaultShutdownTimeout);
  EXPECT_EQ(parse_shutdown_request(" \r\n")->timeout, kDefaultShutdownTimeout);
  EXPECT_EQ(parse_shutdown_request("{}")->timeout, kDefaultShutdownTimeout);
  EXPECT_EQ(parse_shutdown_request(R"({"timeout_s": null})")->timeout, kDefaultShutdownTimeout);
}

TEST(ApiRequests, ShutdownTimeout) {
  EXPECT_EQ(parse_shutdown_request(R"({"timeout_s": 30})")->timeout, milliseconds(30'000));
  EXPECT_EQ(parse_shutdown_request(R"({"timeout_s": 0.25})")->timeout, milliseconds(250));
  EXPECT_EQ(parse_shutdown_request(R"({"timeout_s": 0})")->timeout, milliseconds(0));
  EXPECT_EQ(parse_shutdown_request(R"({"timeout_s": 3600})")->timeout, milliseconds(3'600'000));
}

TEST(ApiRequests, ShutdownRefusesBadTimeouts) {
  EXPECT_NE(failure(parse_shutdown_request(R"({"timeout_s": -1})")).find("out of range"), std::string::npos);
  EXPECT_NE(failure(parse_shutdown_request(R"({"timeout_s": 3601})")).find("out of range"), std::string::npos);
  EXPECT_NE(failure(parse_shutdown_request(R"({"timeout_s": 1e308})")).find("out of range"), std::string::npos);
  EXPECT_EQ(failure(parse_shutdown_request(R"({"timeout_s": "10"})")),
            "timeout_s must be a number of seconds, got string");
  EXPECT_NE(failure(parse_shutdown_request(R"({"timeout_s": true})")).find("got boolean"), std::string::npos);
  EXPECT_NE(failure(parse_shutdown_request(R"({"timeout": 10})")).find("unknown field \"timeout\""),
            std::string::npos);
}

TEST(ApiRequests, BadJsonIsRefused) {
  for (const char* body : {"{", "{\"timeout_s\": }", "not json", "{\"a\":1}}", "\xff\xfe", "{'timeout_s': 1}"}) {
    SCOPED_TRACE(body);
    EXPECT_EQ(failure(parse_shutdown_request(body)), "request body is not valid JSON");
    EXPECT_EQ(failure(parse_balloon_request(body)), "request body is not valid JSON");
    EXPECT_EQ(failure(parse_empty_request(body)), "request body is not valid JSON");
  }
}

TEST(ApiRequests, BodyMustBeAnObject) {
  EXPECT_EQ(failure(parse_balloon_request("[1]")), "request body must be a JSON object, got array");
  EXPECT_EQ(failure(parse_balloon_request("64")), "request body must be a JSON object, got number");
  EXPECT_EQ(failure(parse_shutdown_request("null")), "request body must be a JSON object, got null");
  EXPECT_EQ(failure(parse_empty_request("\"x\"")), "request body must be a JSON object, got string");
}

TEST(ApiRequests, BalloonTarget) {
  EXPECT_EQ(parse_balloon_request(R"({"target_mib": 0})")->target_mib, 0u);
  EXPECT_EQ(parse_balloon_request(R"({"target_mib": 256})")->target_mib, 256u);
  EXPECT_EQ(parse_balloon_request(R"({"target_mib": 1048576})")->target_mib, kMaxBalloonTargetMib);
}

TEST(ApiRequests, BalloonRefusesMissingNegativeHugeAndWrongTypes) {
  EXPECT_NE(failure(parse_balloon_request("")).find("needs a body"), std::string::npos);
  EXPECT_NE(failure(parse_balloon_request("{}")).find("missing field \"target_mib\""), std::string::npos);
  EXPECT_EQ(failure(parse_balloon_request(R"({"target_mib": -1})")), "target_mib -1 is negative");
  EXPECT_NE(failure(parse_balloon_request(R"({"target_mib": 1048577})")).find("out of range"), std::string::npos);
  EXPECT_NE(failure(parse_balloon_request(R"({"target_mib": 18446744073709551615})")).find("out of range"),
            std::string::npos);
  // Beyond 64 bits nlohmann reads a double.
  EXPECT_NE(failure(parse_balloon_request(R"({"target_mib": 99999999999999999999999})")).find("out of range"),
            std::string::npos);
  EXPECT_NE(failure(parse_balloon_request(R"({"target_mib": 1.5})")).find("whole number"), std::string::npos);
  EXPECT_NE(failure(parse_balloon_request(R"({"target_mib": 64.0})")).find("whole number"), std::string::npos);
  EXPECT_EQ(failure(parse_balloon_request(R"({"target_mib": "64"})")),
            "target_mib must be an unsigned integer (MiB), got string");
  EXPECT_NE(failure(parse_balloon_request(R"({"target_mib": null})")).find("got null"), std::string::npos);
  EXPECT_NE(failure(parse_balloon_request(R"({"target_mib": [64]})")).find("got array"), std::string::npos);
  EXPECT_NE(failure(parse_balloon_request(R"({"target_mib": 64, "extra": 1})")).find("unknown field \"extra\""),
            std::string::npos);
}

TEST(ApiRequests, EmptyRequests) {
  EXPECT_TRUE(parse_empty_request(""));
  EXPECT_TRUE(parse_empty_request("{}"));
  EXPECT_EQ(failure(parse_empty_request(R"({"force": true})")),
            "unknown field \"force\" in the request body (expected: none)");
}

TEST(ApiRequests, HugeBodiesAreRefusedBeforeParsing) {
  std::string huge = R"({"target_mib": 1, "pad": ")" + std::string(kMaxRequestBodyBytes, 'x') + "\"}";
  EXPECT_NE(failure(parse_balloon_request(huge)).find("the limit is 65536"), std::string::npos);
  EXPECT_NE(failure(parse_shutdown_request(huge)).find("the limit is 65536"), std::string::npos);
  // Deep nesting within the limit is parsed without blowing the stack, then refused.
  std::string deep = std::string(20000, '[') + std::string(20000, ']');
  EXPECT_FALSE(parse_balloon_request(deep));
}

}  // namespace
}  // namespace skiff::api
