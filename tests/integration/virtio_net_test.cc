// SPDX-License-Identifier: Apache-2.0
// Tier 2: the test guest drives skiff's virtio-net (virtio 1.2 §5.1) over virtio-pci and
// virtio-mmio on /dev/kvm (tests/guest/virtio_net.c; README.md "virtio-net" lists what it
// prints) while the test plays the other end of the tap, inside a network namespace of its
// own: a thread unshares its network namespace, creates a persistent tap there (`ip tuntap`),
// boots the VM (skiff opens the tap from that thread) and reads and writes frames on the
// tap's host side through an AF_PACKET socket.
//
// Checked: the ARP request the guest sends arrives byte for byte; a frame the host writes
// arrives intact in the guest (length, FNV-1a and first bytes as the guest prints them), with
// and without MRG_RXBUF; "mtu": 1400 reaches the guest's config space and the tap, and a
// full-MTU frame passes intact both ways; with two queue pairs (VQ_PAIRS_SET 2) a frame sent
// on transmitq1 arrives and the answer on the same flow comes back on receiveq1.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "guest_runner.h"

namespace skiff::test {
namespace {

using Frame = std::vector<uint8_t>;

const std::string kTap = "sk0";
constexpr MacAddress kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr MacAddress kHostMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr uint16_t kEtherTypeArp = 0x0806;
constexpr uint16_t kEtherTypeIpv4 = 0x0800;
constexpr uint16_t kEtherTypeTest = 0x88b5;  // what tests/guest/virtio_net.c waits for
constexpr uint8_t kGuestIp[4] = {10, 0, 0, 2};
constexpr uint8_t kHostIp[4] = {10, 0, 0, 1};
constexpr uint16_t kGuestPort = 5000;
constexpr uint16_t kHostPort = 5001;

void put_be16(Frame& frame, uint16_t value) {
  frame.push_back(static_cast<uint8_t>(value >> 8));
  frame.push_back(static_cast<uint8_t>(value));
}

void append(Frame& frame, const uint8_t* bytes, size_t size) { frame.insert(frame.end(), bytes, bytes + size); }

Frame ethernet(const MacAddress& destination, const MacAddress& source, uint16_t ethertype) {
  Frame frame;
  append(frame, destination.data(), 6);
  append(frame, source.data(), 6);
  put_be16(frame, ethertype);
  return frame;
}

constexpr MacAddress kBroadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// What the guest's build_arp() sends: who-has 10.0.0.1 tell 10.0.0.2.
Frame expected_arp() {
  Frame frame = ethernet(kBroadcast, kGuestMac, kEtherTypeArp);
  put_be16(frame, 1);
  put_be16(frame, kEtherTypeIpv4);
  frame.push_back(6);
  frame.push_back(4);
  put_be16(frame, 1);
  append(frame, kGuestMac.data(), 6);
  append(frame, kGuestIp, 4);
  frame.insert(frame.end(), 6, 0);
  append(frame, kHostIp, 4);
  return frame;
}

// What the guest's build_big() sends: 14 + mtu bytes, payload byte i = i * 7 + 3.
Frame expected_big(uint32_t mtu) {
  Frame frame = ethernet(kBroadcast, kGuestMac, kEtherTypeTest);
  for (uint32_t i = 0; i < mtu; ++i) frame.push_back(static_cast<uint8_t>(i * 7 + 3));
  return frame;
}

Frame ipv4_udp(const MacAddress& destination, const MacAddress& source, const uint8_t* from_ip, const uint8_t* to_ip,
               uint16_t from_port, uint16_t to_port, const std::string& payload) {
  Frame frame = ethernet(destination, source, kEtherTypeIpv4);
  const size_t ip_at = frame.size();
  const uint16_t udp_length = static_cast<uint16_t>(8 + payload.size());
  frame.push_back(0x45);
  frame.push_back(0);
  put_be16(frame, static_cast<uint16_t>(20 + udp_length));
  put_be16(frame, 0);
  put_be16(frame, 0x4000);  // DF
  frame.push_back(64);
  frame.push_back(17);
  put_be16(frame, 0);
  append(frame, from_ip, 4);
  append(frame, to_ip, 4);
  uint32_t sum = 0;
  for (size_t i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(frame[ip_at + i] << 8 | frame[ip_at + i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  frame[ip_at + 10] = static_cast<uint8_t>(~sum >> 8);
  frame[ip_at + 11] = static_cast<uint8_t>(~sum);
  put_be16(frame, from_port);
  put_be16(frame, to_port);
  put_be16(frame, udp_length);
  put_be16(frame, 0);
  frame.insert(frame.end(), payload.begin(), payload.end());
  return frame;
}

// What the guest's build_udp() sends on transmitq1, and the host's answer on the same flow.
Frame expected_udp() { return ipv4_udp(kBroadcast, kGuestMac, kGuestIp, kHostIp, kGuestPort, kHostPort, "SKQ1"); }
Frame udp_answer() { return ipv4_udp(kGuestMac, kHostMac, kHostIp, kGuestIp, kHostPort, kGuestPort, "SKR1"); }

// The host's test frame for receiveq0: `length` bytes, ethertype 0x88b5.
Frame test_frame(size_t length) {
  Frame frame = ethernet(kGuestMac, kHostMac, kEtherTypeTest);
  for (size_t i = 0; frame.size() < length; ++i) frame.push_back(static_cast<uint8_t>(i * 13 + 5));
  return frame;
}

std::string hex(const Frame& frame, size_t limit) {
  std::string out;
  for (size_t i = 0; i < frame.size() && i < limit; ++i) out += fmt::format("{:02x}", frame[i]);
  return out;
}

std::map<std::string, std::string> fields(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream words(line);
  std::string word;
  while (words >> word) {
    auto eq = word.find('=');
    if (eq != std::string::npos) out[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return out;
}

std::map<std::string, std::string> line_fields(const GuestReport& report, const std::string& prefix) {
  auto lines = report.lines_starting(prefix);
  return lines.empty() ? std::map<std::string, std::string>{} : fields(lines.front());
}

// Runs `body` on a thread of its own network namespace (unshare(CLONE_NEWNET) affects only
// the calling thread; everything it starts, processes and VM threads alike, inherits it). The
// namespace, and the tap in it, go away when the thread ends. Returns why it could not.
std::optional<std::string> in_new_netns(const std::function<void()>& body) {
  std::optional<std::string> failure;
  std::thread thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      failure = fmt::format("unshare(CLONE_NEWNET): {}", std::strerror(errno));
      return;
    }
    body();
  });
  thread.join();
  return failure;
}

bool shell(const std::string& command) {
  int status = std::system((command + " >/dev/null 2>&1").c_str());
  return status == 0;
}

std::optional<uint32_t> interface_mtu(const std::string& name) {
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return std::nullopt;
  ifreq request{};
  std::snprintf(request.ifr_name, sizeof(request.ifr_name), "%s", name.c_str());
  // SAFETY: SIOCGIFMTU fills an ifreq we own.
  int rc = ::ioctl(sock, SIOCGIFMTU, &request);
  ::close(sock);
  if (rc != 0) return std::nullopt;
  return static_cast<uint32_t>(request.ifr_mtu);
}

// The host end of the tap: every frame the interface receives (what the guest sent) is kept;
// the guest's ARP request is answered with `rx_frame` and its UDP frame with udp_answer().
class TapPeer {
 public:
  TapPeer(const std::string& interface, std::optional<Frame> rx_frame) : rx_frame_(std::move(rx_frame)) {
    fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd_ < 0) {
      error_ = fmt::format("socket(AF_PACKET): {}", std::strerror(errno));
      return;
    }
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(ETH_P_ALL);
    address.sll_ifindex = static_cast<int>(::if_nametoindex(interface.c_str()));
    // SAFETY: bind reads a sockaddr_ll we own, passed as the generic sockaddr it begins with.
    if (address.sll_ifindex == 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      error_ = fmt::format("binding AF_PACKET to {}: {}", interface, std::strerror(errno));
      return;
    }
    timeval timeout{0, 100 * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    thread_ = std::thread([this] { serve(); });
  }
  ~TapPeer() {
    stop();
    if (fd_ >= 0) ::close(fd_);
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::string& error() const { return error_; }
  std::vector<Frame> received() {
    std::lock_guard lock(mutex_);
    return received_;
  }
  std::vector<std::string> send_errors() {
    std::lock_guard lock(mutex_);
    return send_errors_;
  }

 private:
  void send(const Frame& frame) {
    if (::send(fd_, frame.data(), frame.size(), 0) != static_cast<ssize_t>(frame.size())) {
      std::lock_guard lock(mutex_);
      send_errors_.push_back(fmt::format("send {} bytes: {}", frame.size(), std::strerror(errno)));
    }
  }

  void serve() {
    Frame buffer(65536);
    bool answered_arp = false;
    bool answered_udp = false;
    while (!stop_) {
      sockaddr_ll from{};
      socklen_t from_length = sizeof(from);
      // SAFETY: recvfrom fills a sockaddr_ll we own through the generic sockaddr pointer.
      ssize_t n = ::recvfrom(fd_, buffer.data(), buffer.size(), 0, reinterpret_cast<sockaddr*>(&from), &from_length);
      if (n < 0) continue;  // timeout: look at stop_ again
      if (from.sll_pkttype == PACKET_OUTGOING) continue;  // ours, or the kernel's
      Frame frame(buffer.begin(), buffer.begin() + n);
      {
        std::lock_guard lock(mutex_);
        received_.push_back(frame);
      }
      if (frame.size() < 14) continue;
      const uint16_t type = static_cast<uint16_t>(frame[12] << 8 | frame[13]);
      if (type == kEtherTypeArp && !answered_arp && rx_frame_) {
        answered_arp = true;
        send(*rx_frame_);
      }
      if (type == kEtherTypeIpv4 && !answered_udp && frame == expected_udp()) {
        answered_udp = true;
        send(udp_answer());
      }
    }
  }

  std::optional<Frame> rx_frame_;
  int fd_ = -1;
  std::string error_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::vector<Frame> received_;
  std::vector<std::string> send_errors_;
};

struct NetCase {
  std::string name;
  VirtioTransport transport;
};

class VirtioNet : public ::testing::TestWithParam<NetCase> {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << "tier-2 tests need /dev/kvm: " << *reason;
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "/dev/net/tun: " << std::strerror(errno);
    }
    if (!shell("ip -V")) GTEST_SKIP() << "the `ip` tool (iproute2) is missing";
  }

  struct Outcome {
    GuestRun run;
    std::vector<Frame> frames;        // what the host read from the tap
    std::vector<std::string> errors;  // the host side's own failures
    std::optional<uint32_t> tap_mtu;  // the tap's MTU while the VM ran
    std::optional<std::string> skipped;
  };

  // Boots the guest with skiff.net=<tests> and one NIC in a fresh namespace whose tap `sk0`
  // exists beforehand (persistent, vnet_hdr, multi_queue when queues > 1).
  Outcome boot(const std::string& tests, uint16_t queues, std::optional<uint32_t> mtu,
               std::optional<Frame> rx_frame) const {
    Outcome outcome;
    auto failure = in_new_netns([&] {
      // No IPv6 in the namespace: no router solicitations or MLD reports on the tap.
      (void)shell("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
      if (!shell(fmt::format("ip tuntap add dev {} mode tap vnet_hdr{}", kTap, queues > 1 ? " multi_queue" : "")) ||
          !shell(fmt::format("ip link set dev {} up", kTap))) {
        outcome.skipped = "cannot create a tap in a network namespace (ip tuntap add)";
        return;
      }
      TapPeer peer(kTap, rx_frame);
      if (!peer.error().empty()) {
        outcome.errors.push_back(peer.error());
        return;
      }
      NetSpec net;
      net.id = "n0";
      net.tap = kTap;
      net.mac = kGuestMac;
      net.mtu = mtu;
      net.queues = queues;
      net.transport = GetParam().transport;
      auto spec = guest_spec(SKIFF_TEST_GUEST_ELF, "skiff.virtio=1 skiff.net=" + tests + " skiff.exit=7", 1, 64);
      spec.nets.push_back(net);
      spec.machine.mmio_cmdline = true;  // the test guest finds virtio-mmio slots on the command line
      outcome.run = run_guest(spec, std::chrono::seconds(60));
      outcome.tap_mtu = interface_mtu(kTap);
      peer.stop();
      outcome.frames = peer.received();
      for (auto& error : peer.send_errors()) outcome.errors.push_back(error);
    });
    if (failure) outcome.skipped = *failure;
    return outcome;
  }

  // The lines every run prints: the right transport, features accepted, queues running, the
  // configuration as the spec says, the guest's reset honoured, no error, a clean exit.
  // `mtu`: what the spec gave (VIRTIO_NET_F_MTU offered), nullopt for none.
  static void expect_device(const Outcome& outcome, std::optional<uint32_t> mtu, uint32_t max_pairs) {
    const GuestReport& r = outcome.run.report;
    EXPECT_FALSE(outcome.run.timed_out) << r.console;
    EXPECT_EQ(outcome.run.exit.exit_code, 7) << outcome.run.exit.detail << "\n" << r.console;
    for (const std::string& error : outcome.errors) ADD_FAILURE() << "host side: " << error;
    const std::string transport = GetParam().transport == VirtioTransport::kPci ? "pci" : "mmio";
    EXPECT_EQ(r.lines_starting("virtio-net transport=" + transport + " ").size(), 1u) << r.console;
    EXPECT_EQ(line_fields(r, "virtio-net transport=")["features-ok"], "1") << r.console;
    auto config = line_fields(r, "virtio-net config ");
    EXPECT_EQ(config["mac"], "52:54:00:12:34:56") << r.console;
    EXPECT_EQ(config["status"], "1") << "VIRTIO_NET_S_LINK_UP\n" << r.console;
    EXPECT_EQ(config["mtu-offered"], mtu ? "1" : "0") << r.console;
    if (mtu) {
      EXPECT_EQ(config["mtu"], std::to_string(*mtu)) << r.console;
    }
    EXPECT_EQ(config["max-pairs"], std::to_string(max_pairs)) << r.console;
    EXPECT_EQ(line_fields(r, "virtio-net queues ")["status"], "15") << r.console;
    EXPECT_EQ(line_fields(r, "virtio-net reset-status=")["reset-status"], "0") << r.console;
    EXPECT_TRUE(r.lines_starting("error").empty()) << r.console;
  }

  // The guest's "tx <what>" line says the device returned the chain, and exactly one frame
  // like `expected` reached the host.
  static void expect_sent(const Outcome& outcome, const std::string& what, const Frame& expected,
                          const std::string& queue) {
    const GuestReport& r = outcome.run.report;
    auto tx = line_fields(r, "virtio-net tx " + what + " ");
    EXPECT_EQ(tx["used"], "1") << r.console;
    EXPECT_EQ(tx["queue"], queue) << r.console;
    EXPECT_EQ(tx["len"], std::to_string(expected.size())) << r.console;
    EXPECT_EQ(tx["fnv"], fmt::format("0x{:016x}", fnv1a(expected.data(), expected.size()))) << r.console;
    size_t matches = 0;
    std::string seen;
    for (const Frame& frame : outcome.frames) {
      if (frame == expected) ++matches;
      seen += fmt::format("  {} bytes: {}\n", frame.size(), hex(frame, 48));
    }
    EXPECT_EQ(matches, 1u) << what << " frame, expected " << expected.size() << " bytes: " << hex(expected, 48)
                           << "\nthe host read:\n" << seen;
  }

  // The guest's "rx" line describes `frame` exactly.
  static void expect_received(const Outcome& outcome, const Frame& frame, const std::string& queue) {
    const GuestReport& r = outcome.run.report;
    auto rx = line_fields(r, "virtio-net rx ");
    EXPECT_EQ(rx["queue"], queue) << r.console;
    EXPECT_EQ(rx["len"], std::to_string(frame.size())) << r.console;
    EXPECT_EQ(rx["fnv"], fmt::format("0x{:016x}", fnv1a(frame.data(), frame.size()))) << r.console;
    EXPECT_EQ(rx["head"], hex(frame, 16)) << r.console;
    EXPECT_EQ(rx["num-buffers"], "1") << r.console;
  }
};

TEST_P(VirtioNet, ArpReachesTheTapAndAFrameFromTheTapReachesTheGuest) {
  const Frame frame = test_frame(60);
  auto outcome = boot("arp,rx", 1, std::nullopt, frame);
  if (outcome.skipped) GTEST_SKIP() << *outcome.skipped;
  expect_device(outcome, std::nullopt, 1);
  expect_sent(outcome, "arp", expected_arp(), "1");
  expect_received(outcome, frame, "0");
  EXPECT_EQ(line_fields(outcome.run.report, "virtio-net config ")["mrg-rxbuf"], "0");
}

TEST_P(VirtioNet, MergeableRxBuffers) {
  const Frame frame = test_frame(1514);
  auto outcome = boot("arp,rx,mrg", 1, 1500, frame);
  if (outcome.skipped) GTEST_SKIP() << *outcome.skipped;
  expect_device(outcome, 1500, 1);
  EXPECT_EQ(line_fields(outcome.run.report, "virtio-net config ")["mrg-rxbuf"], "1");
  expect_sent(outcome, "arp", expected_arp(), "1");
  expect_received(outcome, frame, "0");
}

// "mtu": 1400 on a tap that has 1500: the guest reads 1400, the tap is set to 1400, and a
// frame of exactly 14 + 1400 bytes passes intact in both directions.
TEST_P(VirtioNet, LinkMtuHonoured) {
  const Frame frame = test_frame(14 + 1400);
  auto outcome = boot("arp,rx,big", 1, 1400, frame);
  if (outcome.skipped) GTEST_SKIP() << *outcome.skipped;
  expect_device(outcome, 1400, 1);
  EXPECT_EQ(outcome.tap_mtu, std::optional<uint32_t>(1400));
  expect_sent(outcome, "arp", expected_arp(), "1");
  expect_received(outcome, frame, "0");
  expect_sent(outcome, "big", expected_big(1400), "1");
}

// Two queue pairs on a multiqueue tap: pair 0 carries the ARP and the test frame; after
// VQ_PAIRS_SET 2 the guest's UDP frame goes out on transmitq1 and the tap steers the answer
// on the same flow (tun's automatic flow steering) to receiveq1 (queue 2).
TEST_P(VirtioNet, TwoQueuePairsCarryTraffic) {
  const Frame frame = test_frame(60);
  auto outcome = boot("arp,rx,mq", 2, std::nullopt, frame);
  if (outcome.skipped) GTEST_SKIP() << *outcome.skipped;
  expect_device(outcome, std::nullopt, 2);
  const GuestReport& r = outcome.run.report;
  EXPECT_EQ(line_fields(r, "virtio-net config ")["mq"], "1") << r.console;
  EXPECT_EQ(line_fields(r, "virtio-net queues ")["ctrl-queue"], "4") << r.console;
  EXPECT_EQ(line_fields(r, "virtio-net mq ")["ack"], "0") << r.console;
  expect_sent(outcome, "arp", expected_arp(), "1");
  expect_sent(outcome, "udp", expected_udp(), "3");
  auto rx = r.lines_starting("virtio-net rx ");
  ASSERT_EQ(rx.size(), 2u) << r.console;
  auto first = fields(rx[0]);
  const Frame test = frame;
  EXPECT_EQ(first["queue"], "0") << r.console;
  EXPECT_EQ(first["fnv"], fmt::format("0x{:016x}", fnv1a(test.data(), test.size()))) << r.console;
  auto second = fields(rx[1]);
  const Frame answer = udp_answer();
  EXPECT_EQ(second["queue"], "2") << r.console;
  EXPECT_EQ(second["len"], std::to_string(answer.size())) << r.console;
  EXPECT_EQ(second["fnv"], fmt::format("0x{:016x}", fnv1a(answer.data(), answer.size()))) << r.console;
}

INSTANTIATE_TEST_SUITE_P(Transports, VirtioNet,
                         ::testing::Values(NetCase{"pci", VirtioTransport::kPci},
                                           NetCase{"mmio", VirtioTransport::kMmio}),
                         [](const ::testing::TestParamInfo<NetCase>& param) { return param.param.name; });

}  // namespace
}  // namespace skiff::test
