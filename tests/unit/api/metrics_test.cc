// SPDX-License-Identifier: Apache-2.0
#include "api/metrics.h"

#include <gtest/gtest.h>

#include <string>

#include "api/api_json.h"
#include "unit/api/prometheus_checker.h"
#include "unit/api/fake_backend.h"

namespace skiff::api {
namespace {

TEST(ApiMetrics, EscapesLabelValues) {
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(ApiMetrics, FullStatsParseAsPrometheusText) {
  testing::FakeBackend backend;
  std::string text = format_prometheus_metrics(backend.stats());
  auto samples = testing::parse_prometheus_text(text);
  ASSERT_TRUE(samples) << samples.error() << "\n" << text;
  EXPECT_EQ(samples->at("skiff_vm_state{state=\"running\"}"), 1);
  EXPECT_EQ(samples->at("skiff_vm_state{state=\"paused\"}"), 0);
  EXPECT_EQ(samples->at("skiff_vm_uptime_seconds"), 12.5);
  EXPECT_EQ(samples->at("skiff_vcpu_exits_total{vcpu=\"0\",reason=\"io\"}"), 10);
  EXPECT_EQ(samples->at("skiff_vcpu_exits_total{vcpu=\"1\",reason=\"mmio\"}"), 2);
  EXPECT_EQ(samples->at("skiff_disk_reads_total{disk=\"root\"}"), 5);
  EXPECT_EQ(samples->at("skiff_disk_read_bytes_total{disk=\"root\"}"), 5 * 4096);
  EXPECT_EQ(samples->at("skiff_disk_request_duration_seconds_sum{disk=\"root\"}"), 0.005);
  EXPECT_EQ(samples->at("skiff_disk_request_duration_seconds_count{disk=\"root\"}"), 5);
  EXPECT_EQ(samples->at("skiff_disk_request_duration_max_seconds{disk=\"root\"}"), 0.002);
  EXPECT_EQ(samples->at("skiff_disk_poll_episodes_total{disk=\"root\"}"), 7);
  EXPECT_EQ(samples->at("skiff_disk_poll_hits_total{disk=\"root\"}"), 4);
  EXPECT_EQ(samples->at("skiff_disk_poll_contended_total{disk=\"root\"}"), 1);
  EXPECT_EQ(samples->at("skiff_disk_poll_window_seconds{disk=\"root\"}"), 16e-6);
  EXPECT_EQ(samples->at("skiff_net_rx_packets_total{net=\"eth0\"}"), 3);
  EXPECT_EQ(samples->at("skiff_net_tx_dropped_total{net=\"eth0\"}"), 0);
  EXPECT_EQ(samples->at("skiff_balloon_target_bytes"), 64.0 * 1024 * 1024);
  EXPECT_EQ(samples->at("skiff_balloon_actual_bytes"), 32.0 * 1024 * 1024);
  EXPECT_EQ(samples->at("skiff_balloon_guest_stat{name=\"free_memory\"}"), 1 << 20);
  EXPECT_EQ(samples->at("skiff_vsock_host_connections_total"), 2);
  EXPECT_EQ(samples->at("skiff_vsock_refused_total"), 1);
  EXPECT_EQ(samples->at("skiff_vsock_bytes_to_guest_total"), 100);
  EXPECT_EQ(samples->at("skiff_vsock_connections"), 1);
  EXPECT_EQ(samples->at(
                "skiff_vsock_connection_bytes_to_host_total{host_port=\"1073741824\",guest_port=\"5000\",initiator="
                "\"host\"}"),
            7);
}

TEST(ApiMetrics, EmptyVmHasOnlyVmFamilies) {
  VmStats stats;
  std::string text = format_prometheus_metrics(stats);
  auto samples = testing::parse_prometheus_text(text);
  ASSERT_TRUE(samples) << samples.error() << "\n" << text;
  EXPECT_EQ(samples->size(), 6u);  // five states and the uptime
  EXPECT_EQ(samples->at("skiff_vm_state{state=\"created\"}"), 1);
  EXPECT_EQ(text.find("skiff_disk"), std::string::npos);
  EXPECT_EQ(text.find("skiff_balloon"), std::string::npos);
  EXPECT_EQ(text.find("skiff_vsock"), std::string::npos);
}

TEST(ApiMetrics, HostileIdsStayInsideTheirLabel) {
  VmStats stats;
  DiskStats disk;
  disk.id = "a\"} 1\nskiff_fake 2";
  stats.disks = {disk};
  auto samples = testing::parse_prometheus_text(format_prometheus_metrics(stats));
  ASSERT_TRUE(samples) << samples.error();
  size_t disk_samples = 0;
  for (const auto& [series, value] : *samples) {
    EXPECT_NE(series.rfind("skiff_fake", 0), 0u) << series;
    if (series.rfind("skiff_disk_", 0) == 0) ++disk_samples;
  }
  EXPECT_EQ(disk_samples, 10u);
}

TEST(ApiMetrics, CheckerRejectsMalformedText) {
  EXPECT_FALSE(testing::parse_prometheus_text("skiff_x 1\n"));  // no TYPE
  EXPECT_FALSE(testing::parse_prometheus_text("# TYPE skiff_x counter\nskiff_x 1\n"));  // counter without _total
  EXPECT_FALSE(testing::parse_prometheus_text("# TYPE skiff_x_total counter\nskiff_x_total{a=b} 1\n"));
  EXPECT_FALSE(testing::parse_prometheus_text("# TYPE skiff_x gauge\nskiff_x one\n"));
  EXPECT_TRUE(testing::parse_prometheus_text("# HELP skiff_x X.\n# TYPE skiff_x gauge\nskiff_x{a=\"b\"} 1.5\n"));
}

TEST(ApiJson, StatsDocument) {
  testing::FakeBackend backend;
  nlohmann::json json = stats_to_json(backend.stats());
  EXPECT_EQ(json["state"], "running");
  EXPECT_EQ(json["uptime_s"], 12.5);
  EXPECT_EQ(json["vcpus"][0]["exits"]["mmio"], 20);
  EXPECT_EQ(json["disks"][0]["id"], "root");
  EXPECT_EQ(json["disks"][0]["read_bytes"], 5 * 4096);
  EXPECT_EQ(json["disks"][0]["latency"]["max_ns"], 2'000'000);
  EXPECT_EQ(json["disks"][0]["polling"]["hits"], 4);
  EXPECT_EQ(json["disks"][0]["polling"]["window_ns"], 16'000);
  EXPECT_EQ(json["nets"][0]["rx_bytes"], 180);
  EXPECT_EQ(json["balloon"]["actual_mib"], 32);
  EXPECT_EQ(json["balloon"]["guest_stats"]["free_memory"], 1 << 20);
  EXPECT_FALSE(json["balloon"].contains("guest_stats_age_s"));
  EXPECT_EQ(json["vsock"]["guest_cid"], 3);
  EXPECT_EQ(json["vsock"]["refused"], 1);
  EXPECT_EQ(json["vsock"]["connections"][0]["initiator"], "host");
  EXPECT_EQ(json["vsock"]["connections"][0]["host_port"], 1073741824);
  EXPECT_EQ(json["vsock"]["connections"][0]["bytes_to_host"], 7);
  VmStats bare;
  EXPECT_TRUE(stats_to_json(bare)["balloon"].is_null());
  EXPECT_TRUE(stats_to_json(bare)["vsock"].is_null());
  EXPECT_TRUE(stats_to_json(bare)["disks"].is_array());
}

TEST(ApiJson, VmInfoCarriesTheSpec) {
  testing::FakeBackend backend;
  nlohmann::json json = vm_info_to_json(backend.state(), backend.spec(), backend.uptime_s());
  EXPECT_EQ(json["state"], "running");
  EXPECT_EQ(json["spec"]["name"], "web01");
  EXPECT_EQ(json["spec"]["machine"]["memory_mib"], 512);
}

TEST(ApiJson, ErrorBodyNeverThrows) {
  EXPECT_EQ(error_body("bad \"x\""), R"({"error":"bad \"x\""})");
  EXPECT_NO_THROW(error_body("invalid utf-8 \xff"));
}

}  // namespace
}  // namespace skiff::api
