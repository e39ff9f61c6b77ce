// SPDX-License-Identifier: Apache-2.0
// The router without sockets: every endpoint and error class.
#include "api/api_router.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "unit/api/fake_backend.h"

namespace skiff::api {
namespace {

using nlohmann::json;
using testing::FakeBackend;

std::string error_of(const ApiReply& reply) { return json::parse(reply.body).at("error").get<std::string>(); }

TEST(ApiRouter, Endpoints) {
  FakeBackend backend;
  EXPECT_EQ(handle_api_request(backend, "GET", "/vm", "").status, 200);
  EXPECT_EQ(handle_api_request(backend, "HEAD", "/vm", "").status, 200);
  EXPECT_EQ(handle_api_request(backend, "GET", "/vm/stats", "").status, 200);
  EXPECT_EQ(handle_api_request(backend, "GET", "/metrics", "").content_type,
            "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(handle_api_request(backend, "PUT", "/vm/pause", "").status, 200);
  EXPECT_EQ(handle_api_request(backend, "PUT", "/vm/resume", " ").status, 200);
  EXPECT_EQ(handle_api_request(backend, "PUT", "/balloon", R"({"target_mib": 8})").status, 200);
  EXPECT_EQ(backend.balloon_target, 8u);
  EXPECT_EQ(handle_api_request(backend, "PUT", "/vm/shutdown", R"({"timeout_s": 1.5})").status, 202);
  EXPECT_EQ(backend.last_shutdown_timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(handle_api_request(backend, "PUT", "/vm/stop", "").status, 200);
  EXPECT_EQ(backend.state(), VmState::stopped);
}

TEST(ApiRouter, Errors) {
  FakeBackend backend;
  ApiReply missing = handle_api_request(backend, "GET", "/vm/nothing", "");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(error_of(missing), "no such endpoint: GET /vm/nothing (docs/api.md lists them)");
  ApiReply wrong = handle_api_request(backend, "PUT", "/metrics", "");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.allow, "GET, HEAD");
  EXPECT_EQ(error_of(wrong), "/metrics does not take PUT; use GET");
  EXPECT_EQ(handle_api_request(backend, "HEAD", "/vm/pause", "").status, 405);
  EXPECT_EQ(handle_api_request(backend, "PUT", "/vm/pause", R"({"now": true})").status, 400);
  EXPECT_EQ(handle_api_request(backend, "PUT", "/vm/resume", "").status, 409);
  EXPECT_EQ(error_of(handle_api_request(backend, "PUT", "/vm/resume", "")), "cannot resume: the VM is running");
}

// The error's kind decides the status: the state refusing (kState) 409, a wrong value
// (kConfig) 400, a failure of the VM 500.
TEST(ApiRouter, ErrorKindsDecideTheStatus) {
  FakeBackend backend;
  ApiReply refused = handle_api_request(backend, "PUT", "/vm/resume", "");
  EXPECT_EQ(refused.status, 409);
  EXPECT_EQ(backend.resume().error().kind(), ErrorKind::kState);
  EXPECT_EQ(handle_api_request(backend, "PUT", "/balloon", R"({"target_mib": 4096})").status, 400);
  backend.fail_stop = true;
  EXPECT_EQ(handle_api_request(backend, "PUT", "/vm/stop", "").status, 500);
}

TEST(ApiRouter, CreatedVm) {
  FakeBackend backend(VmState::created);
  EXPECT_EQ(error_of(handle_api_request(backend, "PUT", "/vm/pause", "")), "cannot pause: the VM is created");
  // A balloon target may be set before start: the driver reads it when it comes up.
  EXPECT_EQ(handle_api_request(backend, "PUT", "/balloon", R"({"target_mib": 16})").status, 200);
  EXPECT_EQ(handle_api_request(backend, "PUT", "/vm/stop", "").status, 200);
  EXPECT_EQ(backend.state(), VmState::stopped);
}

}  // namespace
}  // namespace skiff::api
