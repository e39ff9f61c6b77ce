// SPDX-License-Identifier: Apache-2.0
// Tier 2: a running test guest driven through the control API's Unix socket (docs/api.md):
// pause stops the guest's progress and resume continues it, the statistics move, the
// Prometheus text parses, a balloon target set over HTTP reaches the guest's driver, a
// graceful shutdown powers the guest off, and the socket is 0600 and gone with the VM.
#include <sys/stat.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "api/api_client.h"
#include "guest_runner.h"
#include "skiff/vm.h"
#include "tests/unit/api/prometheus_checker.h"

namespace skiff::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

size_t tick_lines(const std::string& console) {
  size_t count = 0;
  for (size_t at = console.find("SKIFF-GUEST tick="); at != std::string::npos;
       at = console.find("SKIFF-GUEST tick=", at + 1)) {
    if (console.find('\n', at) != std::string::npos) ++count;
  }
  return count;
}

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << *reason;
    char name[] = "/tmp/skiff-api-test-XXXXXX";
    ASSERT_NE(mkdtemp(name), nullptr);
    dir_ = name;
    socket_ = dir_ / "vm.sock";
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  api::ApiReply request(std::string_view method, std::string_view path, std::string_view body = {}) {
    auto reply = api::send_api_request(socket_, method, path, body, 10s);
    EXPECT_TRUE(reply) << method << " " << path << ": " << reply.error().message();
    return reply ? *reply : api::ApiReply{599, "", "", ""};
  }
  json request_json(std::string_view method, std::string_view path, int expect_status = 200,
                    std::string_view body = {}) {
    auto reply = request(method, path, body);
    EXPECT_EQ(reply.status, expect_status) << method << " " << path << ": " << reply.body;
    auto parsed = json::parse(reply.body, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << reply.body;
    return parsed;
  }

  std::filesystem::path dir_;
  std::filesystem::path socket_;
};

TEST_F(ApiTest, PauseResumeStatsMetricsAndShutdownOverTheSocket) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=wait-shutdown", 1, 64);
  spec.name = "api-guest";
  spec.api = ApiSpec{socket_};
  {
    LiveGuest guest(spec);
    ASSERT_FALSE(guest.error()) << *guest.error();
    struct stat status {};
    ASSERT_EQ(::stat(socket_.c_str(), &status), 0);
    EXPECT_TRUE(S_ISSOCK(status.st_mode));
    EXPECT_EQ(status.st_mode & 0777, 0600u);
    ASSERT_TRUE(guest.next_line("tick=")) << guest.console();

    json vm = request_json("GET", "/vm");
    EXPECT_EQ(vm["state"], "running") << vm.dump();
    EXPECT_EQ(vm["spec"]["name"], "api-guest") << vm.dump();
    EXPECT_GT(vm["uptime_s"].get<double>(), 0.0);

    json first = request_json("GET", "/vm/stats");
    ASSERT_EQ(first["vcpus"].size(), 1u) << first.dump();

    // Pause: no progress until resumed.
    request_json("PUT", "/vm/pause");
    EXPECT_EQ(request_json("GET", "/vm")["state"], "paused");
    EXPECT_EQ(guest.vm().state(), VmState::paused);
    const size_t at_pause = tick_lines(guest.console());
    std::this_thread::sleep_for(600ms);
    EXPECT_EQ(tick_lines(guest.console()), at_pause) << "the guest ran while paused";
    request_json("PUT", "/vm/resume");
    EXPECT_EQ(request_json("GET", "/vm")["state"], "running");
    ASSERT_TRUE(guest.next_line("tick=", 10s)) << guest.console();

    // The counters moved: the guest printed (port I/O exits) since the first snapshot.
    json second = request_json("GET", "/vm/stats");
    EXPECT_GT(second["vcpus"][0]["exits"]["io"].get<uint64_t>(), first["vcpus"][0]["exits"]["io"].get<uint64_t>())
        << first.dump() << "\n" << second.dump();
    EXPECT_GT(second["uptime_s"].get<double>(), first["uptime_s"].get<double>());

    auto metrics = request("GET", "/metrics");
    EXPECT_EQ(metrics.status, 200);
    auto samples = api::testing::parse_prometheus_text(metrics.body);
    ASSERT_TRUE(samples) << samples.error() << "\n" << metrics.body;
    EXPECT_NE(metrics.body.find("skiff_vcpu_exits_total{"), std::string::npos) << metrics.body;

    // No balloon in this VM: 400 with the reason; unknown path: 404; the VM keeps running.
    auto no_balloon = request("PUT", "/balloon", R"({"target_mib": 8})");
    EXPECT_EQ(no_balloon.status, 400) << no_balloon.body;
    EXPECT_EQ(request("GET", "/nope").status, 404);
    EXPECT_EQ(request("PUT", "/vm/pause", "{not json").status, 400);
    EXPECT_EQ(guest.vm().state(), VmState::running);

    request_json("PUT", "/vm/shutdown", 202, R"({"timeout_s": 20})");  // accepted: it takes a while
    EXPECT_TRUE(guest.next_line("shutdown-request=acpi", 20s)) << guest.console();
    auto exit = guest.wait(20s);
    ASSERT_TRUE(exit);
    EXPECT_EQ(exit->reason, StopReason::kGuestPowerOff) << exit->detail;
    EXPECT_EQ(request_json("GET", "/vm")["state"], "stopped");
    EXPECT_EQ(request("PUT", "/vm/pause").status, 409);
  }
  EXPECT_FALSE(std::filesystem::exists(socket_)) << "the socket outlived the VM";
}

TEST_F(ApiTest, BalloonTargetReachesTheGuest) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.virtio=1 skiff.balloon=32 skiff.exit=0", 1, 96);
  spec.balloon = BalloonSpec{};
  spec.balloon->stats_interval_s = 1;
  spec.api = ApiSpec{socket_};
  LiveGuest guest(spec);
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.next_line("virtio-balloon touched=")) << guest.console();

  request_json("PUT", "/balloon", 200, R"({"target_mib": 16})");
  auto inflated = guest.next_line("virtio-balloon inflated=", 30s);
  ASSERT_TRUE(inflated) << guest.console();
  EXPECT_EQ(field_u64(report_fields(*inflated), "inflated"), 16u * 256);
  json stats = request_json("GET", "/vm/stats");
  ASSERT_TRUE(stats.contains("balloon")) << stats.dump();
  EXPECT_EQ(stats["balloon"]["target_mib"], 16);
  EXPECT_EQ(stats["balloon"]["actual_mib"], 16);
  EXPECT_EQ(stats["balloon"]["bytes_released"], 16u << 20);

  EXPECT_EQ(request("PUT", "/balloon", R"({"target_mib": 96})").status, 400) << "as large as guest RAM";
  EXPECT_EQ(request("PUT", "/balloon", R"({"target_mib": "many"})").status, 400);

  request_json("PUT", "/balloon", 200, R"({"target_mib": 0})");
  auto deflated = guest.next_line("virtio-balloon deflated=", 30s);
  ASSERT_TRUE(deflated) << guest.console();
  EXPECT_EQ(field_u64(report_fields(*deflated), "rewrite-ok"), 1u);
  auto exit = guest.wait(30s);
  ASSERT_TRUE(exit) << guest.console();
  EXPECT_EQ(exit->exit_code, 0) << exit->detail;
}

TEST_F(ApiTest, StopOverTheSocketEndsAHungGuest) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=halt", 1, 64);
  spec.api = ApiSpec{socket_};
  LiveGuest guest(spec);
  ASSERT_FALSE(guest.error()) << *guest.error();
  ASSERT_TRUE(guest.next_line("action=halt")) << guest.console();
  request_json("PUT", "/vm/stop");
  auto exit = guest.wait(10s);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->reason, StopReason::kStopRequested);
  EXPECT_EQ(exit->exit_code, kExitStopped);
}

TEST_F(ApiTest, ASocketInUseIsRefused) {
  auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.action=halt", 1, 64);
  spec.api = ApiSpec{socket_};
  auto first = Vm::create(spec, test_vm_options());
  ASSERT_TRUE(first) << first.error().message();
  auto second = Vm::create(spec, test_vm_options());
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("in use"), std::string::npos) << second.error().message();
}

}  // namespace
}  // namespace skiff::test
