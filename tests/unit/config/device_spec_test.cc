// SPDX-License-Identifier: Apache-2.0
// "disks", "nets", "balloon", "vsock" and "api": parsing, defaults, every rule, round trips,
// and the host checks of disk paths (the vsock socket's directory: spec_validator_test.cc).
#include <sys/stat.h>

#include <string>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "skiff/spec.h"
#include "unit/config/spec_test_util.h"

namespace skiff {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing_util::spec_with_top;
using testing_util::TempDir;

const std::filesystem::path kBase = "/srv/vms/web01";

DiskSpec make_disk(std::string id, std::filesystem::path path) {
  DiskSpec disk;
  disk.id = std::move(id);
  disk.path = std::move(path);
  return disk;
}

TEST(DiskSpec, DefaultsAndRelativePath) {
  auto spec = parse_spec(spec_with_top(R"("disks": [{"id": "root", "path": "root.img"}])"), kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  ASSERT_EQ(spec->disks.size(), 1u);
  const DiskSpec& disk = spec->disks[0];
  EXPECT_EQ(disk.id, "root");
  EXPECT_EQ(disk.path, kBase / "root.img");
  EXPECT_FALSE(disk.read_only);
  EXPECT_FALSE(disk.shared);
  EXPECT_FALSE(disk.cache.has_value());
  EXPECT_EQ(disk.io_engine, IoEngine::kIoUring);
  EXPECT_EQ(disk.discard, DiscardMode::kUnmap);
  EXPECT_EQ(disk.serial, "");
  EXPECT_EQ(disk.queues, 1);
  EXPECT_EQ(disk.queue_size, 256);
  EXPECT_FALSE(disk.rate_limit.limited());
  EXPECT_EQ(disk.poll_max_us, 32u);
  EXPECT_EQ(disk.transport, VirtioTransport::kPci);
}

TEST(DiskSpec, EveryField) {
  auto spec = parse_spec(spec_with_top(R"("disks": [{
      "id": "data", "path": "/dev/zvol/tank/vms/web01", "read_only": true, "shared": true,
      "cache": "unsafe", "io_engine": "sync", "discard": "ignore", "serial": "WEB01-DATA",
      "queues": 4, "queue_size": 128,
      "rate_limit": {"bytes_per_second": 104857600, "ops_per_second": 5000},
      "poll_max_us": 100, "transport": "mmio"}])"),
                         kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  const DiskSpec& disk = spec->disks[0];
  EXPECT_EQ(disk.path, "/dev/zvol/tank/vms/web01");
  EXPECT_TRUE(disk.read_only);
  EXPECT_TRUE(disk.shared);
  EXPECT_EQ(disk.cache, DiskCache::kUnsafe);
  EXPECT_EQ(disk.io_engine, IoEngine::kSync);
  EXPECT_EQ(disk.discard, DiscardMode::kIgnore);
  EXPECT_EQ(disk.serial, "WEB01-DATA");
  EXPECT_EQ(disk.queues, 4);
  EXPECT_EQ(disk.queue_size, 128);
  EXPECT_EQ(disk.rate_limit, (RateLimitSpec{104857600, 5000}));
  EXPECT_EQ(disk.poll_max_us, 100u);
  EXPECT_EQ(disk.transport, VirtioTransport::kMmio);
}

TEST(DiskSpec, PollMaxZeroAndUpperBoundAreAccepted) {
  auto spec = parse_spec(spec_with_top(R"("disks": [{"id": "a", "path": "a", "poll_max_us": 0},
                                                    {"id": "b", "path": "b", "poll_max_us": 1000}])"),
                         kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->disks[0].poll_max_us, 0u);
  EXPECT_EQ(spec->disks[1].poll_max_us, 1000u);
}

TEST(NetSpec, DefaultsAndEveryField) {
  auto spec = parse_spec(spec_with_top(R"("nets": [
      {"id": "eth0", "tap": "skiff-web01"},
      {"id": "eth1", "tap_fd": 5, "mac": "52:54:00:AB:cd:01", "mtu": 9000, "queues": 2,
       "queue_size": 512, "offloads": false,
       "rx_rate_limit": {"bytes_per_second": 1000000},
       "tx_rate_limit": {"packets_per_second": 2000}, "transport": "mmio"}])"),
                         kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  ASSERT_EQ(spec->nets.size(), 2u);
  const NetSpec& first = spec->nets[0];
  EXPECT_EQ(first.tap, "skiff-web01");
  EXPECT_FALSE(first.tap_fd);
  EXPECT_FALSE(first.mac);
  EXPECT_FALSE(first.mtu);
  EXPECT_EQ(first.queues, 1);
  EXPECT_EQ(first.queue_size, 256);
  EXPECT_TRUE(first.offloads);
  EXPECT_EQ(first.transport, VirtioTransport::kPci);
  const NetSpec& second = spec->nets[1];
  EXPECT_EQ(second.tap_fd, 5);
  EXPECT_EQ(second.mac, (MacAddress{0x52, 0x54, 0x00, 0xab, 0xcd, 0x01}));
  EXPECT_EQ(second.mtu, 9000u);
  EXPECT_EQ(second.queues, 2);
  EXPECT_EQ(second.queue_size, 512);
  EXPECT_FALSE(second.offloads);
  EXPECT_EQ(second.rx_rate_limit, (RateLimitSpec{1000000, 0}));
  EXPECT_EQ(second.tx_rate_limit, (RateLimitSpec{0, 2000}));
  EXPECT_EQ(second.transport, VirtioTransport::kMmio);
}

TEST(BalloonSpec, DefaultsAndEveryField) {
  auto empty = parse_spec(spec_with_top(R"("balloon": {})"), kBase);
  ASSERT_TRUE(empty) << empty.error().message();
  ASSERT_TRUE(empty->balloon);
  EXPECT_EQ(*empty->balloon, BalloonSpec{});
  auto spec = parse_spec(spec_with_top(R"("balloon": {"target_mib": 64, "deflate_on_oom": true,
      "stats_interval_s": 5, "free_page_reporting": true, "transport": "mmio"})"),
                         kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(*spec->balloon, (BalloonSpec{64, true, 5, true, VirtioTransport::kMmio}));
  auto none = parse_spec(spec_with_top(R"("balloon": null)"), kBase);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->balloon);
}

TEST(ApiSpec, SocketPathResolvedAgainstTheSpec) {
  auto absolute = parse_spec(spec_with_top(R"("api": {"socket": "/run/skiff/web01.sock"})"), kBase);
  ASSERT_TRUE(absolute) << absolute.error().message();
  ASSERT_TRUE(absolute->api);
  EXPECT_EQ(absolute->api->socket, "/run/skiff/web01.sock");
  auto relative = parse_spec(spec_with_top(R"("api": {"socket": "api.sock"})"), kBase);
  ASSERT_TRUE(relative) << relative.error().message();
  EXPECT_EQ(relative->api->socket, kBase / "api.sock");
  auto none = parse_spec(spec_with_top(R"("api": null)"), kBase);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->api);
}

TEST(VsockSpec, EveryField) {
  auto spec = parse_spec(
      spec_with_top(R"("vsock": {"guest_cid": 42, "socket": "/run/skiff/web01.vsock", "transport": "mmio"})"), kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  ASSERT_TRUE(spec->vsock);
  EXPECT_EQ(*spec->vsock, (VsockSpec{42, "/run/skiff/web01.vsock", VirtioTransport::kMmio}));
}

TEST(VsockSpec, DefaultsAndRelativeSocket) {
  auto spec = parse_spec(spec_with_top(R"("vsock": {"guest_cid": 3, "socket": "web01.vsock"})"), kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  ASSERT_TRUE(spec->vsock);
  EXPECT_EQ(spec->vsock->guest_cid, 3u);
  EXPECT_EQ(spec->vsock->socket, kBase / "web01.vsock");  // like /api/socket
  EXPECT_EQ(spec->vsock->transport, VirtioTransport::kPci);
}

TEST(VsockSpec, NullOrAbsentMeansNoDevice) {
  auto none = parse_spec(spec_with_top(R"("vsock": null)"), kBase);
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(none->vsock);
  auto absent = parse_spec(spec_with_top(R"("name": "web01")"), kBase);
  ASSERT_TRUE(absent) << absent.error().message();
  EXPECT_FALSE(absent->vsock);
}

TEST(VsockSpec, AcceptsTheCidBoundaries) {
  for (uint32_t cid : {3u, 0xfffffffeu}) {
    auto spec = parse_spec(spec_with_top(fmt::format(R"("vsock": {{"guest_cid": {}, "socket": "/run/v"}})", cid)),
                           kBase);
    ASSERT_TRUE(spec) << cid << ": " << spec.error().message();
    EXPECT_EQ(spec->vsock->guest_cid, cid);
  }
}

TEST(VsockSpec, AcceptsTheLongestSocketPath) {
  // 96 bytes: "<socket>_4294967295" is then 107, the most sun_path holds.
  std::string path = "/" + std::string(kMaxVsockSocketPathBytes - 1, 'v');
  ASSERT_EQ(path.size(), 96u);
  auto spec = parse_spec(spec_with_top(fmt::format(R"("vsock": {{"guest_cid": 3, "socket": "{}"}})", path)), kBase);
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->vsock->socket, path);
}

TEST(VsockSpec, AcceptsAnApiSocketBesideIt) {
  // Names that share the vsock socket's prefix but are not "<socket>_<port>".
  for (std::string_view api : {"/run/skiff/vm.vsock_api", "/run/skiff/vm.vsock_", "/run/skiff/vm.vsock.api",
                               "/run/skiff/vm.vsock_12a"}) {
    auto spec = parse_spec(
        spec_with_top(fmt::format(R"("vsock": {{"guest_cid": 3, "socket": "/run/skiff/vm.vsock"}},
                                     "api": {{"socket": "{}"}})",
                                  api)),
        kBase);
    EXPECT_TRUE(spec) << api << ": " << spec.error().message();
  }
}

// Specs built in code reach the rules the JSON reader cannot: an empty or NUL-carrying path.
TEST(VsockSpec, RulesApplyToSpecsBuiltInCode) {
  VmSpec spec;
  spec.boot.kernel = "/boot/vmlinuz";
  spec.vsock = VsockSpec{};
  auto empty = validate_spec(spec);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().kind(), ErrorKind::kConfig);
  EXPECT_THAT(empty.error().message(), StartsWith("/vsock/socket: empty"));
  spec.vsock->socket = std::string("/run/a\0b", 8);
  auto nul = validate_spec(spec);
  ASSERT_FALSE(nul);
  EXPECT_THAT(nul.error().message(), StartsWith("/vsock/socket: the path contains a NUL character"));
  spec.vsock->socket = "/run/a.vsock";
  spec.vsock->guest_cid = 2;
  auto reserved = validate_spec(spec);
  ASSERT_FALSE(reserved);
  EXPECT_THAT(reserved.error().message(), StartsWith("/vsock/guest_cid: 2 is reserved"));
}

TEST(VsockSpec, RoundTripsThroughJson) {
  VmSpec spec;
  spec.boot.kernel = "/boot/vmlinuz";
  spec.vsock = VsockSpec{0xfffffffe, "/run/skiff/a b.vsock", VirtioTransport::kMmio};
  spec.api = ApiSpec{"/run/skiff/a.sock"};
  std::string text = spec_to_json(spec);
  auto again = parse_spec(text, "/elsewhere");
  ASSERT_TRUE(again) << again.error().message() << "\n" << text;
  EXPECT_EQ(again->vsock, spec.vsock);
  EXPECT_EQ(spec_to_json(*again), text);
  // Written between "balloon" and "api", as documented.
  EXPECT_LT(text.find("\"balloon\""), text.find("\"vsock\""));
  EXPECT_LT(text.find("\"vsock\""), text.find("\"api\""));
  spec.vsock.reset();
  std::string without = spec_to_json(spec);
  EXPECT_THAT(without, HasSubstr("\"vsock\": null"));
  auto none = parse_spec(without, "/elsewhere");
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(none->vsock);
}

TEST(DeviceSpec, RoundTripsThroughJson) {
  VmSpec spec;
  spec.boot.kernel = "/boot/vmlinuz";
  spec.disks.push_back(make_disk("a", "/var/lib/a.img"));
  DiskSpec& b = spec.disks.emplace_back(make_disk("b", "/dev/zvol/tank/b"));
  b.read_only = true;
  b.shared = true;
  b.cache = DiskCache::kWriteback;
  b.io_engine = IoEngine::kSync;
  b.discard = DiscardMode::kIgnore;
  b.serial = "SER";
  b.queues = 2;
  b.queue_size = 64;
  b.rate_limit = {1, 2};
  b.poll_max_us = 0;
  b.transport = VirtioTransport::kMmio;
  NetSpec& n0 = spec.nets.emplace_back();
  n0.id = "n0";
  n0.tap = "tap0";
  NetSpec& n1 = spec.nets.emplace_back();
  n1.id = "n1";
  n1.tap_fd = 7;
  n1.mac = MacAddress{2, 0, 0, 0, 0, 1};
  n1.mtu = 1400;
  n1.queues = 3;
  n1.queue_size = 128;
  n1.offloads = false;
  n1.rx_rate_limit = {3, 4};
  n1.tx_rate_limit = {5, 6};
  spec.balloon.emplace();
  spec.balloon->target_mib = 16;
  spec.balloon->stats_interval_s = 2;
  std::string text = spec_to_json(spec);
  auto again = parse_spec(text, "/elsewhere");
  ASSERT_TRUE(again) << again.error().message() << "\n" << text;
  EXPECT_EQ(again->disks, spec.disks);
  EXPECT_EQ(again->nets, spec.nets);
  EXPECT_EQ(again->balloon, spec.balloon);
  EXPECT_FALSE(again->api);
  spec.api = ApiSpec{"/run/skiff/a.sock"};
  auto with_api = parse_spec(spec_to_json(spec), "/elsewhere");
  ASSERT_TRUE(with_api) << with_api.error().message();
  EXPECT_EQ(with_api->api, spec.api);
}

TEST(MacAddress, ParseAndFormat) {
  EXPECT_EQ(parse_mac("52:54:00:12:34:56"), (MacAddress{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}));
  EXPECT_EQ(parse_mac("FE:ff:0a:0B:00:01"), (MacAddress{0xfe, 0xff, 0x0a, 0x0b, 0x00, 0x01}));
  EXPECT_EQ(format_mac({0x52, 0x54, 0, 0xab, 0xcd, 0xef}), "52:54:00:ab:cd:ef");
  for (std::string_view bad : {"", "52:54:00:12:34", "52:54:00:12:34:56:78", "52-54-00-12-34-56",
                               "5254.0012.3456", "52:54:00:12:34:5g", " 52:54:00:12:34:5", "525:4:00:12:34:56"}) {
    EXPECT_FALSE(parse_mac(bad)) << bad;
  }
}

struct RejectCase {
  const char* name;
  std::string members;
  std::string pointer;
  std::string detail;
};

std::vector<RejectCase> reject_cases() {
  auto disk = [](std::string_view fields) { return fmt::format(R"("disks": [{{{}}}])", fields); };
  auto net = [](std::string_view fields) { return fmt::format(R"("nets": [{{{}}}])", fields); };
  return {
      {"DisksNotArray", R"("disks": {})", "/disks: ", "expected an array of objects"},
      {"DiskNotObject", R"("disks": ["a.img"])", "/disks/0: ", "expected an object, got string"},
      {"DiskUnknownKey", disk(R"("id": "a", "path": "a", "readonly": true)"), "/disks/0/readonly: ",
       R"(did you mean "read_only"?)"},
      {"DiskNoPath", disk(R"("id": "a")"), "/disks/0/path: ", "is required"},
      {"DiskEmptyPath", disk(R"("id": "a", "path": "")"), "/disks/0/path: ", "is an empty string"},
      {"DiskNoId", disk(R"("path": "a")"), "/disks/0/id: ", "is required"},
      {"DiskIdBadChar", disk(R"("id": "a b", "path": "a")"), "/disks/0/id: ", "contains character 0x20"},
      {"DiskIdTooLong", disk(R"("id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "path": "a")"), "/disks/0/id: ",
       "at most 32 characters"},
      {"DiskIdDuplicate", R"("disks": [{"id": "a", "path": "a"}, {"id": "a", "path": "b"}])", "/disks/1/id: ",
       "ids must be unique"},
      {"DiskIdSameAsNet", R"("disks": [{"id": "x", "path": "a"}], "nets": [{"id": "x", "tap": "t"}])",
       "/nets/0/id: ", "ids must be unique"},
      {"DiskCacheUnknown", disk(R"("id": "a", "path": "a", "cache": "directsync")"), "/disks/0/cache: ",
       R"(unknown value "directsync": use "none", "writeback" or "unsafe")"},
      {"DiskEngineUnknown", disk(R"("id": "a", "path": "a", "io_engine": "aio")"), "/disks/0/io_engine: ",
       R"(use "io_uring" or "sync")"},
      {"DiskDiscardUnknown", disk(R"("id": "a", "path": "a", "discard": "on")"), "/disks/0/discard: ",
       R"(use "unmap" or "ignore")"},
      {"DiskReadOnlyType", disk(R"("id": "a", "path": "a", "read_only": "yes")"), "/disks/0/read_only: ",
       "expected a boolean"},
      {"DiskSharedWritable", disk(R"("id": "a", "path": "a", "shared": true)"), "/disks/0/shared: ",
       "only read-only disks"},
      {"DiskSerialTooLong", disk(R"("id": "a", "path": "a", "serial": "123456789012345678901")"),
       "/disks/0/serial: ", "at most 20 bytes"},
      {"DiskSerialControl", disk(R"("id": "a", "path": "a", "serial": "a\nb")"), "/disks/0/serial: ",
       "printable ASCII"},
      {"DiskQueuesZero", disk(R"("id": "a", "path": "a", "queues": 0)"), "/disks/0/queues: ",
       "between 1 and 64"},
      {"DiskQueuesHuge", disk(R"("id": "a", "path": "a", "queues": 70000)"), "/disks/0/queues: ",
       "must be at most 65535"},
      {"DiskQueueSizeNotPow2", disk(R"("id": "a", "path": "a", "queue_size": 100)"), "/disks/0/queue_size: ",
       "power of two"},
      {"DiskQueueSizeTooBig", disk(R"("id": "a", "path": "a", "queue_size": 2048)"), "/disks/0/queue_size: ",
       "between 2 and 1024"},
      {"DiskRateUnknownKey", disk(R"("id": "a", "path": "a", "rate_limit": {"iops": 5})"),
       "/disks/0/rate_limit/iops: ", "unknown key"},
      {"DiskRateWrongType", disk(R"("id": "a", "path": "a", "rate_limit": 5)"), "/disks/0/rate_limit: ",
       "expected an object or null"},
      {"DiskPollMaxTooBig", disk(R"("id": "a", "path": "a", "poll_max_us": 1001)"), "/disks/0/poll_max_us: ",
       "between 0 (no polling) and 1000"},
      {"DiskPollMaxNegative", disk(R"("id": "a", "path": "a", "poll_max_us": -1)"), "/disks/0/poll_max_us: ",
       "expected an unsigned integer"},
      {"DiskPollMaxHuge", disk(R"("id": "a", "path": "a", "poll_max_us": 5000000000)"),
       "/disks/0/poll_max_us: ", "must be at most 4294967295"},
      {"DiskPollMaxString", disk(R"("id": "a", "path": "a", "poll_max_us": "32")"), "/disks/0/poll_max_us: ",
       "expected an unsigned integer"},
      {"DiskPollMaxFraction", disk(R"("id": "a", "path": "a", "poll_max_us": 2.5)"), "/disks/0/poll_max_us: ",
       "expected an unsigned integer"},
      {"DiskTransportUnknown", disk(R"("id": "a", "path": "a", "transport": "ccw")"), "/disks/0/transport: ",
       R"(use "pci" or "mmio")"},

      {"NetsNotArray", R"("nets": "tap0")", "/nets: ", "expected an array of objects"},
      {"NetUnknownKey", net(R"("id": "n", "tap": "t", "macaddr": "x")"), "/nets/0/macaddr: ", "unknown key"},
      {"NetNoTap", net(R"("id": "n")"), "/nets/0: ", R"(exactly one of "tap")"},
      {"NetTapAndFd", net(R"("id": "n", "tap": "t", "tap_fd": 5)"), "/nets/0: ", R"(exactly one of "tap")"},
      {"NetTapTooLong", net(R"("id": "n", "tap": "abcdefghijklmnop")"), "/nets/0/tap: ", "at most 15 bytes"},
      {"NetTapSlash", net(R"("id": "n", "tap": "a/b")"), "/nets/0/tap: ", "not a valid interface name"},
      {"NetTapDuplicate", R"("nets": [{"id": "a", "tap": "t"}, {"id": "b", "tap": "t"}])", "/nets/1/tap: ",
       "used by another NIC"},
      {"NetTapFdStdio", net(R"("id": "n", "tap_fd": 1)"), "/nets/0/tap_fd: ", "not a tap"},
      {"NetTapFdNegative", net(R"("id": "n", "tap_fd": -4)"), "/nets/0/tap_fd: ", "expected an unsigned integer"},
      {"NetMacSyntax", net(R"("id": "n", "tap": "t", "mac": "52:54:00:12:34")"), "/nets/0/mac: ",
       "is not a MAC address"},
      {"NetMacMulticast", net(R"("id": "n", "tap": "t", "mac": "01:00:5e:00:00:01")"), "/nets/0/mac: ",
       "multicast"},
      {"NetMacZero", net(R"("id": "n", "tap": "t", "mac": "00:00:00:00:00:00")"), "/nets/0/mac: ",
       "not a usable address"},
      {"NetMtuSmall", net(R"("id": "n", "tap": "t", "mtu": 67)"), "/nets/0/mtu: ", "between 68 and 65535"},
      {"NetMtuLarge", net(R"("id": "n", "tap": "t", "mtu": 65536)"), "/nets/0/mtu: ", "between 68 and 65535"},
      {"NetQueuesTooMany", net(R"("id": "n", "tap": "t", "queues": 65)"), "/nets/0/queues: ", "queue pairs"},
      {"NetRateOpsKey", net(R"("id": "n", "tap": "t", "rx_rate_limit": {"ops_per_second": 1})"),
       "/nets/0/rx_rate_limit/ops_per_second: ", "unknown key"},

      {"BalloonNotObject", R"("balloon": 5)", "/balloon: ", "expected an object"},
      {"BalloonUnknownKey", R"("balloon": {"target": 5})", "/balloon/target: ", "unknown key"},
      {"BalloonTargetTooBig", R"("balloon": {"target_mib": 256})", "/balloon/target_mib: ",
       "would take all of the guest's 256 MiB"},
      {"BalloonStatsTooLong", R"("balloon": {"stats_interval_s": 100000})", "/balloon/stats_interval_s: ",
       "out of range"},

      {"VsockNotObject", R"("vsock": "/run/v.sock")", "/vsock: ", "expected an object, got string"},
      {"VsockArray", R"("vsock": [])", "/vsock: ", "expected an object, got array"},
      {"VsockUnknownKey", R"("vsock": {"guest_cid": 3, "socket": "/run/v", "cid": 3})", "/vsock/cid: ",
       "unknown key (known keys: guest_cid, socket, transport)"},
      {"VsockMisspelledKey", R"("vsock": {"guest_cid": 3, "sockets": "/run/v"})", "/vsock/sockets: ",
       R"(did you mean "socket"?)"},
      {"VsockNoCid", R"("vsock": {"socket": "/run/v"})", "/vsock/guest_cid: ", "missing"},
      {"VsockCidNull", R"("vsock": {"guest_cid": null, "socket": "/run/v"})", "/vsock/guest_cid: ", "missing"},
      {"VsockCidString", R"("vsock": {"guest_cid": "3", "socket": "/run/v"})", "/vsock/guest_cid: ",
       "expected an unsigned integer, got string"},
      {"VsockCidNegative", R"("vsock": {"guest_cid": -3, "socket": "/run/v"})", "/vsock/guest_cid: ",
       "expected an unsigned integer, got negative integer -3"},
      {"VsockCidFraction", R"("vsock": {"guest_cid": 3.5, "socket": "/run/v"})", "/vsock/guest_cid: ",
       "expected an unsigned integer"},
      {"VsockCidAbove32Bits", R"("vsock": {"guest_cid": 4294967296, "socket": "/run/v"})", "/vsock/guest_cid: ",
       "must be at most 4294967295"},
      {"VsockCidHypervisor", R"("vsock": {"guest_cid": 0, "socket": "/run/v"})", "/vsock/guest_cid: ",
       "0 is reserved (VMADDR_CID_HYPERVISOR); use 3 or above"},
      {"VsockCidLocal", R"("vsock": {"guest_cid": 1, "socket": "/run/v"})", "/vsock/guest_cid: ",
       "1 is reserved (VMADDR_CID_LOCAL"},
      {"VsockCidHost", R"("vsock": {"guest_cid": 2, "socket": "/run/v"})", "/vsock/guest_cid: ",
       "2 is reserved (VMADDR_CID_HOST, the host); use 3 or above"},
      {"VsockCidAny", R"("vsock": {"guest_cid": 4294967295, "socket": "/run/v"})", "/vsock/guest_cid: ",
       "4294967295 is reserved (VMADDR_CID_ANY); use 3 or above, up to 4294967294"},
      {"VsockNoSocket", R"("vsock": {"guest_cid": 3})", "/vsock/socket: ", "missing"},
      {"VsockSocketNull", R"("vsock": {"guest_cid": 3, "socket": null})", "/vsock/socket: ", "missing"},
      {"VsockSocketWrongType", R"("vsock": {"guest_cid": 3, "socket": 5})", "/vsock/socket: ",
       "expected a string, got integer 5"},
      {"VsockSocketEmpty", R"("vsock": {"guest_cid": 3, "socket": ""})", "/vsock/socket: ", "empty"},
      {"VsockSocketNul", R"("vsock": {"guest_cid": 3, "socket": "/run/a\u0000b"})", "/vsock/socket: ",
       "NUL character"},
      {"VsockSocketTooLong", R"("vsock": {"guest_cid": 3, "socket": "/)" + std::string(96, 'v') + R"("})",
       "/vsock/socket: ", "is 97 bytes long, but at most 96 are allowed: guest connections to host port P go to"},
      {"VsockSocketDirectory", R"("vsock": {"guest_cid": 3, "socket": "/run/skiff/"})", "/vsock/socket: ",
       "names a directory"},
      {"VsockTransportUnknown", R"("vsock": {"guest_cid": 3, "socket": "/run/v", "transport": "ccw"})",
       "/vsock/transport: ", R"(use "pci" or "mmio")"},
      {"VsockTransportWrongType", R"("vsock": {"guest_cid": 3, "socket": "/run/v", "transport": 1})",
       "/vsock/transport: ", "expected a string"},
      {"VsockSocketIsTheApiSocket",
       R"("vsock": {"guest_cid": 3, "socket": "/run/skiff/vm.sock"}, "api": {"socket": "/run/skiff/vm.sock"})",
       "/vsock/socket: ", "is also the API socket (/api/socket)"},
      {"VsockSocketIsTheApiSocketSpelledOtherwise",
       R"("vsock": {"guest_cid": 3, "socket": "/run/skiff/./vm.sock"}, "api": {"socket": "/run//skiff/vm.sock"})",
       "/vsock/socket: ", "is also the API socket"},
      {"VsockSocketIsTheApiSocketRelative",
       R"("vsock": {"guest_cid": 3, "socket": "vm.sock"}, "api": {"socket": "/srv/vms/web01/vm.sock"})",
       "/vsock/socket: ", "is also the API socket"},
      {"VsockHostPortIsTheApiSocket",
       R"("vsock": {"guest_cid": 3, "socket": "/run/vm.vsock"}, "api": {"socket": "/run/vm.vsock_1024"})",
       "/vsock/socket: ", "is where guest connections to host port 1024 would go"},

      {"ApiNotObject", R"("api": "/run/x.sock")", "/api: ", "expected an object"},
      {"ApiUnknownKey", R"("api": {"socket": "/run/x.sock", "port": 80})", "/api/port: ", "unknown key"},
      {"ApiNoSocket", R"("api": {})", "/api/socket: ", "missing"},
      {"ApiSocketNull", R"("api": {"socket": null})", "/api/socket: ", "missing"},
      {"ApiSocketWrongType", R"("api": {"socket": 5})", "/api/socket: ", "expected a string"},
      {"ApiSocketEmpty", R"("api": {"socket": ""})", "/api/socket: ", "empty"},
      {"ApiSocketTooLong", R"("api": {"socket": "/)" + std::string(120, 'a') + R"("})", "/api/socket: ",
       "at most 107"},
      {"ApiSocketDirectory", R"("api": {"socket": "/run/skiff/"})", "/api/socket: ", "names a directory"},
  };
}

class DeviceSpecRejects : public ::testing::TestWithParam<RejectCase> {};

TEST_P(DeviceSpecRejects, WithPointerAndReason) {
  const RejectCase& c = GetParam();
  auto spec = parse_spec(spec_with_top(c.members), kBase);
  ASSERT_FALSE(spec) << "accepted: " << c.members;
  EXPECT_EQ(spec.error().kind(), ErrorKind::kConfig);
  EXPECT_THAT(spec.error().message(), StartsWith(c.pointer));
  EXPECT_THAT(spec.error().message(), HasSubstr(c.detail));
}

INSTANTIATE_TEST_SUITE_P(EveryRule, DeviceSpecRejects, ::testing::ValuesIn(reject_cases()),
                         [](const ::testing::TestParamInfo<RejectCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

// validate_spec's host checks of disk paths.
class DiskValidation : public ::testing::Test {
 protected:
  void SetUp() override { spec_.boot.kernel = dir_.write("vmlinuz", "kernel image"); }
  Result<void> validate_with(std::vector<DiskSpec> disks) {
    spec_.disks = std::move(disks);
    return validate_spec(spec_);
  }
  TempDir dir_;
  VmSpec spec_;
};

TEST_F(DiskValidation, AcceptsFileAndBlockDevice) {
  auto image = dir_.write("disk.img", std::string(4096, '\0'));
  EXPECT_TRUE(validate_with({make_disk("a", image)}));
  struct stat status {};
  if (::stat("/dev/loop0", &status) == 0 && S_ISBLK(status.st_mode)) {
    EXPECT_TRUE(validate_with({make_disk("a", image), make_disk("b", "/dev/loop0")}));
  }
}

TEST_F(DiskValidation, MissingFileSaysHowToCreateOne) {
  auto result = validate_with({make_disk("a", dir_.path() / "missing.img")});
  ASSERT_FALSE(result);
  EXPECT_THAT(result.error().message(), StartsWith("/disks/0/path "));
  EXPECT_THAT(result.error().message(), HasSubstr("truncate -s"));
}

TEST_F(DiskValidation, RejectsDirectoriesAndCharacterDevices) {
  auto dir_result = validate_with({make_disk("a", dir_.path())});
  ASSERT_FALSE(dir_result);
  EXPECT_THAT(dir_result.error().message(), HasSubstr("neither a regular file nor a block device"));
  auto chr = validate_with({make_disk("a", "/dev/null")});
  ASSERT_FALSE(chr);
  EXPECT_THAT(chr.error().message(), HasSubstr("neither a regular file nor a block device"));
}

TEST_F(DiskValidation, RejectsTheSameFileTwice) {
  auto image = dir_.write("disk.img", std::string(4096, '\0'));
  std::filesystem::create_symlink(image, dir_.path() / "alias.img");
  auto result = validate_with({make_disk("a", image), make_disk("b", dir_.path() / "alias.img")});
  ASSERT_FALSE(result);
  EXPECT_THAT(result.error().message(), StartsWith("/disks/1/path "));
  EXPECT_THAT(result.error().message(), HasSubstr("already attached"));
}

TEST_F(DiskValidation, ApiSocketDirectoryMustExist) {
  spec_.api = ApiSpec{dir_.path() / "no-such-dir" / "vm.sock"};
  auto missing = validate_spec(spec_);
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.error().message(), StartsWith("/api/socket "));
  EXPECT_THAT(missing.error().message(), HasSubstr("mkdir -p"));
  spec_.api = ApiSpec{dir_.write("file", "x") / "vm.sock"};
  auto not_dir = validate_spec(spec_);
  ASSERT_FALSE(not_dir);
  EXPECT_THAT(not_dir.error().message(), HasSubstr("is not a directory"));
  spec_.api = ApiSpec{dir_.path() / "vm.sock"};
  EXPECT_TRUE(validate_spec(spec_));
}

}  // namespace
}  // namespace skiff
