// SPDX-License-Identifier: Apache-2.0
// skiff_bench_net: virtio-net throughput through a tap, skiff beside qemu-system-x86_64 with
// virtio-net-pci on the same tap (no vhost), the same guest payload (tests/guest,
// skiff.netbench=: a ring-3 polling loop). Tests: guest->tap and tap->guest frames/s with 64-
// and 1514-byte frames, and MiB/s with 64 KiB TSO frames (guest->tap with HOST_TSO4 and a GSO
// header, tap->guest with GUEST_TSO4). Target: skiff >= 1.5x QEMU. See docs/benchmarks.md.
//
// The tap: the benchmark moves itself into a network namespace of its own (so the host's
// stack, IPv6 and other taps stay out of it), creates a persistent tap there and lets each
// VMM attach to it by name. Guest->tap frames are not read by anybody: the tap's own counters
// (rx_packets, rx_bytes) confirm they arrived, and the kernel drops them right after (unknown
// ethertype; TCP to a foreign MAC), which costs less than reading them. Tap->guest frames come
// from an AF_PACKET socket on the tap with PACKET_QDISC_BYPASS (straight into the tap's
// transmit ring, sendmmsg in batches; PACKET_VNET_HDR for the GSO frames), paced so that the
// tap's ring never runs dry but does not overflow: the sender keeps at most a window of frames
// between what it sent and what the VMM has read (the tap's tx_packets + tx_dropped), and
// sleeps otherwise. Its CPU time is reported, so a host-bound run shows.
//
// Both VMMs are child processes; nothing of libskiff is linked in. Exit code 0 when every run
// worked, whether the target is met or not; 1 when a run failed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "bench_process.h"

namespace skiff::bench {
namespace {

constexpr std::string_view kStartLine = "SKIFF-GUEST netbench-start\n";
constexpr std::string_view kEndLine = "SKIFF-GUEST netbench-end";
constexpr std::string_view kReadyLine = "SKIFF-GUEST netbench ready\n";
constexpr double kQemuTargetRatio = 1.5;
constexpr size_t kStderrTailBytes = 2000;
// The guest payload's addresses (tests/guest/net_bench.c); the host sends to the guest's.
constexpr uint8_t kGuestMac[6] = {0x02, 0x5b, 0x00, 0x00, 0x00, 0x02};
constexpr uint8_t kHostMac[6] = {0x02, 0x5b, 0x00, 0x00, 0x00, 0x01};
constexpr uint16_t kEtherTypeTest = 0x88b5;
constexpr uint32_t kTsoFrameBytes = 65536;
constexpr uint16_t kTsoSegmentBytes = 1448;
constexpr unsigned kSendBatch = 32;

// struct virtio_net_hdr without num_buffers, what PACKET_VNET_HDR puts before a frame
// (virtio 1.2 §5.1.6; <linux/virtio_net.h> does not compile as C++).
struct VnetHeader {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
static_assert(sizeof(VnetHeader) == 10);
constexpr uint8_t kHeaderFlagNeedsCsum = 1;
constexpr uint8_t kGsoTcpv4 = 1;

struct Options {
  std::string skiff = "skiff";
  std::string qemu = "qemu-system-x86_64";
  std::string guest;
  std::string tap = "sknb0";
  bool own_netns = true;
  std::string qemu_machine = "pc";
  std::string qemu_cpu = "host,-arch-capabilities";
  std::vector<std::string> only;
  std::string cpus;  // --cpus: where every VMM runs; empty: anywhere
  std::vector<std::string> tests;
  uint64_t count_small = 200000;
  uint64_t count_mtu = 100000;
  uint64_t count_tso = 20000;
  unsigned window_small = 256;  // frames the sender keeps ahead of the VMM (the tap ring holds 500)
  unsigned window_tso = 32;
  unsigned runs = 3;
  unsigned memory_mib = 256;
  double timeout_s = 120;
  std::string json_path;
  std::string keep_logs;
};

// ---- what is measured ----------------------------------------------------------------------

struct Test {
  std::string key;  // JSON key and guest test name
  std::string label;
  bool receive;     // tap -> guest
  uint32_t frame_bytes;
  bool tso;
  uint64_t count;
  bool mib;  // MiB/s (else frames/s) is the figure
};

std::vector<Test> all_tests(const Options& o) {
  return {
      {"tx64", "guest->tap 64 B (frames/s)", false, 64, false, o.count_small, false},
      {"tx1500", "guest->tap 1514 B (frames/s)", false, 1514, false, o.count_mtu, false},
      {"txtso", "guest->tap 64 KiB TSO (MiB/s)", false, kTsoFrameBytes, true, o.count_tso, true},
      {"rx64", "tap->guest 64 B (frames/s)", true, 64, false, o.count_small, false},
      {"rx1500", "tap->guest 1514 B (frames/s)", true, 1514, false, o.count_mtu, false},
      // Not run by default: a GSO frame injected through AF_PACKET (or a second tap) is marked
      // SKB_GSO_DODGY, the tap lacks NETIF_F_GSO_ROBUST, so the kernel segments it into 1514-byte
      // frames before the tap and the guest never sees a GSO frame (gso-frames=0). A real
      // source would be the host's own TCP stack with a peer that ACKs.
      {"rxtso", "tap->guest 64 KiB GSO, arrives segmented (MiB/s)", true, kTsoFrameBytes, true, o.count_tso, true},
  };
}

struct Measurement {
  bool ok = false;
  std::string error;
  uint64_t frames = 0;
  uint64_t bytes = 0;
  uint64_t gso_frames = 0;
  uint64_t notifies = 0;
  double wall_s = 0;
  double tsc_s = 0;
  double frames_per_s = 0;
  double mib_per_s = 0;
  double total_run_s = 0;
  // The tap's view between the markers: frames the kernel got from the VMM (guest->tap) or
  // the VMM read (tap->guest), and what it dropped.
  uint64_t tap_frames = 0;
  uint64_t tap_dropped = 0;
  double sender_cpu_s = 0;  // the benchmark's own sender thread (tap->guest)
  double cpu_s = 0;         // host CPU time of all the VMM's threads (vCPU included) between the markers
  double cpu_us_per_frame = 0;
  std::map<std::string, ThreadStat> threads;
  std::string console;
  std::string stderr_text;
};

double figure(const Measurement& m, const Test& t) { return t.mib ? m.mib_per_s : m.frames_per_s; }

// ---- the tap -------------------------------------------------------------------------------

// Reads a counter of /sys/class/net/<tap>/statistics (a fresh value at every pread).
class TapCounter {
 public:
  TapCounter(const std::string& tap, const std::string& name)
      : fd_(open(fmt::format("/sys/class/net/{}/statistics/{}", tap, name).c_str(), O_RDONLY | O_CLOEXEC)) {}
  uint64_t read() const {
    char text[32];
    ssize_t n = pread(fd_.get(), text, sizeof text - 1, 0);
    if (n <= 0) return 0;
    text[n] = 0;
    return std::strtoull(text, nullptr, 10);
  }
  bool valid() const { return fd_.get() >= 0; }

 private:
  UniqueFd fd_;
};

std::expected<void, std::string> write_text(const std::string& path, std::string_view text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  if (!out) return std::unexpected(fmt::format("{}: write failed", path));
  return {};
}

// A persistent tap without IFF_MULTI_QUEUE (both VMMs attach one queue), up, no addresses.
std::expected<void, std::string> create_tap(const Options& options) {
  if (options.own_netns) {
    // A mount namespace too, with sysfs mounted again: /sys/class/net shows the network
    // namespace of whoever mounted sysfs (what `ip netns exec` does as well).
    if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) {
      return std::unexpected(errno_text("unshare(CLONE_NEWNET | CLONE_NEWNS) (run as root)"));
    }
    if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
      return std::unexpected(errno_text("mount --make-rslave /"));
    }
    (void)umount2("/sys", MNT_DETACH);
    if (mount("sysfs", "/sys", "sysfs", 0, nullptr) != 0) return std::unexpected(errno_text("mount sysfs on /sys"));
    // Nothing but the benchmark's frames on the tap: no IPv6 autoconfiguration traffic.
    for (const char* which : {"all", "default"}) {
      if (auto w = write_text(fmt::format("/proc/sys/net/ipv6/conf/{}/disable_ipv6", which), "1"); !w) {
        fmt::print(stderr, "note: {} (IPv6 stays on)\n", w.error());
      }
    }
  }
  if (options.tap.size() >= IFNAMSIZ) return std::unexpected(fmt::format("tap name {} too long", options.tap));
  UniqueFd tun(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (tun.get() < 0) return std::unexpected(errno_text("open /dev/net/tun"));
  ifreq request{};
  std::memcpy(request.ifr_name, options.tap.c_str(), options.tap.size());
  request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  // SAFETY: TUNSETIFF reads and updates an ifreq we own.
  if (ioctl(tun.get(), TUNSETIFF, &request) != 0) return std::unexpected(errno_text(fmt::format("tap {}: TUNSETIFF", options.tap)));
  // SAFETY: TUNSETPERSIST takes its argument by value.
  if (ioctl(tun.get(), TUNSETPERSIST, 1ul) != 0) return std::unexpected(errno_text("TUNSETPERSIST"));
  UniqueFd control(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (control.get() < 0) return std::unexpected(errno_text("socket AF_INET"));
  // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
  if (ioctl(control.get(), SIOCGIFFLAGS, &request) != 0) return std::unexpected(errno_text("SIOCGIFFLAGS"));
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (ioctl(control.get(), SIOCSIFFLAGS, &request) != 0) return std::unexpected(errno_text("SIOCSIFFLAGS up"));
  return {};
}

void remove_tap(const Options& options) {
  UniqueFd tun(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  ifreq request{};
  std::memcpy(request.ifr_name, options.tap.c_str(), options.tap.size());
  request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  // SAFETY: as in create_tap.
  if (tun.get() >= 0 && ioctl(tun.get(), TUNSETIFF, &request) == 0) (void)ioctl(tun.get(), TUNSETPERSIST, 0ul);
}

// ---- the tap->guest sender -----------------------------------------------------------------

// The frames the host sends: 64 or 1514 bytes to the guest's MAC with ethertype 0x88b5, or a
// 64 KiB IPv4/TCP frame behind a virtio_net_hdr asking for TSO (PACKET_VNET_HDR).
std::vector<uint8_t> host_frame(const Test& test) {
  std::vector<uint8_t> out;
  VnetHeader header{};
  if (test.tso) {
    header.flags = kHeaderFlagNeedsCsum;
    header.gso_type = kGsoTcpv4;
    header.hdr_len = 14 + 20 + 20;
    header.gso_size = kTsoSegmentBytes;
    header.csum_start = 14 + 20;
    header.csum_offset = 16;
    out.resize(sizeof header);
    std::memcpy(out.data(), &header, sizeof header);
  }
  size_t at = out.size();
  out.resize(at + test.frame_bytes);
  uint8_t* frame = out.data() + at;
  std::memcpy(frame, kGuestMac, 6);
  std::memcpy(frame + 6, kHostMac, 6);
  for (uint32_t i = 14; i < test.frame_bytes; ++i) frame[i] = static_cast<uint8_t>(i * 7 + 3);
  if (!test.tso) {
    frame[12] = kEtherTypeTest >> 8;
    frame[13] = kEtherTypeTest & 0xff;
    return out;
  }
  frame[12] = 0x08;
  frame[13] = 0x00;
  uint8_t* ip = frame + 14;
  const uint8_t ip_head[20] = {0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2};
  std::memcpy(ip, ip_head, sizeof ip_head);
  uint16_t total = htons(static_cast<uint16_t>(test.frame_bytes - 14));
  std::memcpy(ip + 2, &total, 2);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(ip[i] << 8 | ip[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  ip[10] = static_cast<uint8_t>(~sum >> 8);
  ip[11] = static_cast<uint8_t>(~sum);
  uint8_t* tcp = ip + 20;
  const uint8_t tcp_head[20] = {0x13, 0x89, 0x13, 0x88, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0};
  std::memcpy(tcp, tcp_head, sizeof tcp_head);
  // The pseudo-header sum (CHECKSUM_PARTIAL): 10.0.0.1 + 10.0.0.2 + TCP + length.
  uint32_t pseudo = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + (test.frame_bytes - 34);
  while (pseudo >> 16) pseudo = (pseudo & 0xffff) + (pseudo >> 16);
  tcp[16] = static_cast<uint8_t>(pseudo >> 8);
  tcp[17] = static_cast<uint8_t>(pseudo);
  return out;
}

double thread_cpu_s() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// Sends frames into the tap (the VMM reads them) from the "ready" line until stopped.
class Sender {
 public:
  Sender(const Options& options, const Test& test) : options_(options), test_(test) {}
  ~Sender() { stop(); }

  std::expected<void, std::string> open_socket() {
    socket_ = UniqueFd(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));  // protocol 0: sends only
    if (socket_.get() < 0) return std::unexpected(errno_text("socket AF_PACKET"));
    int one = 1;
    // Straight into the tap's ring, past the qdisc. Not for GSO frames: the kernel segments
    // them first (see below), and a segmented list through the bypass fails with ENOBUFS.
    if (!test_.tso && setsockopt(socket_.get(), SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) != 0) {
      return std::unexpected(errno_text("PACKET_QDISC_BYPASS"));
    }
    if (test_.tso && setsockopt(socket_.get(), SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) != 0) {
      return std::unexpected(errno_text("PACKET_VNET_HDR"));
    }
    unsigned index = if_nametoindex(options_.tap.c_str());
    if (index == 0) return std::unexpected(errno_text(fmt::format("if_nametoindex {}", options_.tap)));
    address_.sll_family = AF_PACKET;
    address_.sll_ifindex = static_cast<int>(index);
    address_.sll_halen = 6;
    std::memcpy(address_.sll_addr, kGuestMac, 6);
    frame_ = host_frame(test_);
    return {};
  }

  void start() {
    if (thread_.joinable()) return;
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  // Marks the measured interval (the sender's CPU time between the two).
  void mark_start() { mark_start_.store(true); }
  void mark_end() { mark_end_.store(true); }
  double measured_cpu_s() const { return cpu_end_ - cpu_start_; }
  const std::string& error() const { return error_; }

 private:
  void run() {
    TapCounter read_by_vmm(options_.tap, "tx_packets");
    TapCounter dropped(options_.tap, "tx_dropped");
    const uint64_t base = read_by_vmm.read() + dropped.read();
    const uint64_t window = test_.tso ? options_.window_tso : options_.window_small;
    std::vector<iovec> iov(kSendBatch, iovec{frame_.data(), frame_.size()});
    std::vector<mmsghdr> messages(kSendBatch);
    for (unsigned i = 0; i < kSendBatch; ++i) {
      messages[i].msg_hdr = msghdr{};
      messages[i].msg_hdr.msg_name = &address_;
      messages[i].msg_hdr.msg_namelen = sizeof address_;
      messages[i].msg_hdr.msg_iov = &iov[i];
      messages[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t sent = 0;
    unsigned refused = 0;  // sendmmsg failures in a row
    bool started = false;
    while (!stop_.load(std::memory_order_relaxed)) {
      if (!started && mark_start_.load(std::memory_order_relaxed)) {
        cpu_start_ = thread_cpu_s();
        started = true;
      }
      if (started && mark_end_.load(std::memory_order_relaxed)) break;
      uint64_t done = read_by_vmm.read() + dropped.read() - base;
      uint64_t in_flight = sent > done ? sent - done : 0;
      if (in_flight >= window) {
        timespec pause{0, 20'000};
        nanosleep(&pause, nullptr);
        continue;
      }
      unsigned batch = static_cast<unsigned>(std::min<uint64_t>(kSendBatch, window - in_flight));
      int n = sendmmsg(socket_.get(), messages.data(), batch, 0);
      if (n < 0) {
        if ((errno == EINTR || errno == ENOBUFS || errno == EAGAIN) && ++refused < 10000) continue;
        error_ = errno_text("sendmmsg on the tap");
        break;
      }
      refused = 0;
      sent += static_cast<uint64_t>(n);
    }
    cpu_end_ = thread_cpu_s();
    if (!started) cpu_start_ = cpu_end_;
  }

  const Options& options_;
  const Test& test_;
  UniqueFd socket_;
  sockaddr_ll address_{};
  std::vector<uint8_t> frame_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> mark_start_{false};
  std::atomic<bool> mark_end_{false};
  double cpu_start_ = 0;
  double cpu_end_ = 0;
  std::string error_;
};

// ---- one run ------------------------------------------------------------------------------

std::string guest_cmdline(const Test& test) {
  return fmt::format("console=ttyS0 skiff.netbench={},count={},warmup={}", test.key, test.count,
                     std::max<uint64_t>(test.count / 10, 256));
}

std::expected<std::string, std::string> write_skiff_spec(const Options& options, const Test& test,
                                                         const std::string& dir) {
  nlohmann::json spec = {
      {"name", "netbench"},
      {"machine", {{"memory_mib", options.memory_mib}, {"vcpus", 1}}},
      {"boot", {{"kernel", options.guest}, {"cmdline", guest_cmdline(test)}}},
      {"nets", nlohmann::json::array({{{"id", "n0"}, {"tap", options.tap}, {"transport", "pci"}}})},
  };
  std::string path = fmt::format("{}/skiff-{}.json", dir, test.key);
  std::ofstream out(path);
  out << spec.dump(2) << "\n";
  if (!out) return std::unexpected(fmt::format("{}: write failed", path));
  return path;
}

std::vector<std::string> qemu_argv(const std::string& program, const Options& options, const Test& test) {
  // -M pc: the guest finds virtio-pci through ports 0xcf8/0xcfc; no option ROM (romfile=),
  // which SeaBIOS would otherwise load for network boot.
  return {program,
          "-M", options.qemu_machine,
          "-accel", "kvm",
          "-cpu", options.qemu_cpu,
          "-m", fmt::format("{}M", options.memory_mib),
          "-smp", "1",
          "-nodefaults", "-no-user-config", "-nographic",
          "-serial", "stdio",
          "-no-reboot",
          "-name", "netbench,debug-threads=on",
          "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
          "-kernel", options.guest,
          "-append", guest_cmdline(test),
          "-netdev", fmt::format("tap,id=n0,ifname={},script=no,downscript=no,vhost=off", options.tap),
          "-device", "virtio-net-pci,netdev=n0,disable-legacy=on,romfile=,mac=02:5b:00:00:00:02"};
}

Measurement run_vmm(const std::string& program, const std::vector<std::string>& argv, const Test& test,
                    const Options& options, double tsc_hz) {
  Measurement m;
  std::optional<Sender> sender;
  if (test.receive) {
    sender.emplace(options, test);
    if (auto opened = sender->open_socket(); !opened) {
      m.error = opened.error();
      return m;
    }
  }
  // Guest->tap: the kernel's receive counters of the tap; tap->guest: its transmit counters.
  TapCounter frames_counter(options.tap, test.receive ? "tx_packets" : "rx_packets");
  TapCounter dropped_counter(options.tap, test.receive ? "tx_dropped" : "rx_dropped");
  if (!frames_counter.valid() || !dropped_counter.valid()) {
    m.error = errno_text(fmt::format("/sys/class/net/{}/statistics", options.tap));
    return m;
  }
  uint64_t frames_at_start = 0;
  uint64_t dropped_at_start = 0;
  MarkedRunHooks hooks;
  hooks.on_output = [&](const std::string& console) {
    if (sender && console.find(kReadyLine) != std::string::npos) sender->start();
  };
  hooks.on_start = [&] {
    frames_at_start = frames_counter.read();
    dropped_at_start = dropped_counter.read();
    if (sender) sender->mark_start();
  };
  hooks.on_end = [&] {
    m.tap_frames = frames_counter.read() - frames_at_start;
    m.tap_dropped = dropped_counter.read() - dropped_at_start;
    if (sender) sender->mark_end();
  };
  MarkedRun run = run_marked(program, argv, kStartLine, kEndLine, options.timeout_s, hooks);
  if (sender) {
    sender->stop();
    m.sender_cpu_s = sender->measured_cpu_s();
    if (!sender->error().empty()) {
      run.error = run.error.empty() ? sender->error() : fmt::format("{} (host sender: {})", run.error, sender->error());
    }
  }
  m.console = std::move(run.console);
  m.stderr_text = std::move(run.stderr_text);
  m.total_run_s = run.total_run_s;
  m.threads = std::move(run.threads);
  if (!run.error.empty()) {
    m.error = run.error;
    return m;
  }
  auto fields = fields_of(run.end_line);
  m.frames = field_u64(fields, "frames");
  m.bytes = field_u64(fields, "bytes");
  m.gso_frames = field_u64(fields, "gso-frames");
  m.notifies = field_u64(fields, "notifies");
  if (fields.count("failed") != 0 || field_u64(fields, "timed-out") != 0 || field_u64(fields, "bad-ids") != 0 ||
      field_u64(fields, "short") != 0 || m.frames < test.count) {
    m.error = "guest: " + run.end_line;
    return m;
  }
  m.wall_s = run.wall_s;
  if (tsc_hz > 0) m.tsc_s = static_cast<double>(field_u64(fields, "tsc-cycles")) / tsc_hz;
  m.frames_per_s = static_cast<double>(m.frames) / m.wall_s;
  m.mib_per_s = static_cast<double>(m.bytes) / m.wall_s / (1024.0 * 1024.0);
  for (const auto& [name, t] : m.threads) m.cpu_s += t.cpu_s;
  if (m.frames > 0) m.cpu_us_per_frame = m.cpu_s * 1e6 / static_cast<double>(m.frames);
  m.ok = true;
  return m;
}

// ---- report --------------------------------------------------------------------------------

struct Cell {
  std::vector<Measurement> runs;
  std::optional<Measurement> median(const Test& test) const {
    std::vector<const Measurement*> ok;
    for (const Measurement& m : runs) {
      if (m.ok) ok.push_back(&m);
    }
    if (ok.empty()) return std::nullopt;
    std::sort(ok.begin(), ok.end(), [&](auto* a, auto* b) { return figure(*a, test) < figure(*b, test); });
    return *ok[ok.size() / 2];
  }
};

using Results = std::map<std::string, std::map<std::string, Cell>>;  // test key -> VMM -> runs

std::string figure_text(const std::optional<Measurement>& m, const Test& test) {
  if (!m) return "-";
  return test.mib ? fmt::format("{:.1f}", m->mib_per_s) : fmt::format("{:.0f}", m->frames_per_s);
}

std::optional<double> ratio(const Results& results, const Test& test) {
  const auto& cells = results.at(test.key);
  auto s = cells.find("skiff");
  auto q = cells.find("qemu");
  if (s == cells.end() || q == cells.end()) return std::nullopt;
  auto ms = s->second.median(test);
  auto mq = q->second.median(test);
  if (!ms || !mq || figure(*mq, test) <= 0) return std::nullopt;
  return figure(*ms, test) / figure(*mq, test);
}

const char* vmm_label(const std::string& key) { return key == "skiff" ? "skiff" : "QEMU"; }

void print_report(const Options& options, const std::vector<Test>& tests, const std::vector<std::string>& vmms,
                  const Results& results, const std::string& host, double tsc_hz) {
  fmt::print("\nvirtio-net on tap {} ({}), guest ring-3 polling loop, 1 vCPU, queue size 256, no vhost\n",
             options.tap, options.own_netns ? "in a network namespace of its own" : "in the current namespace");
  fmt::print("host: {}; TSC {:.1f} MHz; QEMU -M {}; {} run(s) per cell (median)\n", host, tsc_hz / 1e6,
             options.qemu_machine, options.runs);
  fmt::print("placement: {}\n\n", child_cpus().empty() ? std::string("unpinned (a spare CPU for the VMM's threads)")
                                                        : fmt::format("every VMM confined to CPU(s) {} (vCPU included)",
                                                                      child_cpus()));
  std::vector<std::string> header = {"test"};
  for (const auto& v : vmms) header.push_back(vmm_label(v));
  header.push_back("skiff/QEMU");
  fmt::print("| {} |\n|{}|\n", fmt::join(header, " | "), fmt::join(std::vector<std::string>(header.size(), "---"), "|"));
  for (const Test& test : tests) {
    std::vector<std::string> row = {test.label};
    for (const auto& v : vmms) row.push_back(figure_text(results.at(test.key).at(v).median(test), test));
    auto r = ratio(results, test);
    row.push_back(r ? fmt::format("{:.2f}", *r) : "-");
    fmt::print("| {} |\n", fmt::join(row, " | "));
  }
  for (const Test& test : tests) {
    std::vector<std::string> row = {fmt::format("{}: host CPU us/frame", test.key)};
    for (const auto& v : vmms) {
      auto m = results.at(test.key).at(v).median(test);
      row.push_back(m && m->cpu_us_per_frame > 0 ? fmt::format("{:.2f}", m->cpu_us_per_frame) : "-");
    }
    row.push_back("");
    fmt::print("| {} |\n", fmt::join(row, " | "));
  }
  fmt::print("\nmedian runs: guest notify writes per frame; frames the tap counted (and dropped: full ring); "
             "GSO frames the guest saw; host sender CPU\n");
  for (const Test& test : tests) {
    for (const auto& v : vmms) {
      auto m = results.at(test.key).at(v).median(test);
      if (!m || m->frames == 0) continue;
      double frames = static_cast<double>(m->frames);
      // Guest->tap: rx_dropped also counts the frames the stack had no protocol for (all of
      // them), so only tap->guest drops (the tap's ring full) are shown.
      fmt::print("  {} {}: notifies {:.3f}, tap {}{}, gso {}{}\n", test.key, vmm_label(v),
                 static_cast<double>(m->notifies) / frames, m->tap_frames,
                 test.receive ? fmt::format(" / {} dropped", m->tap_dropped) : "", m->gso_frames,
                 test.receive ? fmt::format(", sender {:.0f}% CPU", 100 * m->sender_cpu_s / m->wall_s) : "");
    }
  }
  fmt::print("\nwhere the time goes (per thread, between the markers: CPU seconds / wall seconds, "
             "voluntary context switches per frame):\n");
  for (const Test& test : tests) {
    for (const auto& v : vmms) {
      auto m = results.at(test.key).at(v).median(test);
      if (!m || m->threads.empty()) continue;
      std::vector<std::string> parts;
      for (const auto& [name, t] : m->threads) {
        if (t.cpu_s <= 0 && t.voluntary == 0) continue;
        parts.push_back(fmt::format("{} {:.0f}% {:.3f}/frame", name, 100 * t.cpu_s / m->wall_s,
                                    static_cast<double>(t.voluntary) / static_cast<double>(m->frames)));
      }
      fmt::print("  {} {}: {}\n", test.key, vmm_label(v), fmt::join(parts, ", "));
    }
  }
  fmt::print("\n");
  for (const Test& test : tests) {
    auto r = ratio(results, test);
    fmt::print("{:<5} {} skiff vs QEMU: {}\n", !r ? "n/a" : (*r >= kQemuTargetRatio ? "PASS" : "MISS"), test.key,
               r ? fmt::format("{:.2f}x QEMU (target >= {:.1f}x)", *r, kQemuTargetRatio) : "not measured");
  }
}

nlohmann::json measurement_json(const Measurement& m) {
  nlohmann::json j = {{"ok", m.ok}};
  if (!m.ok) {
    j["error"] = m.error;
    return j;
  }
  j.update({{"frames", m.frames},
            {"bytes", m.bytes},
            {"seconds", m.wall_s},
            {"frames_per_s", m.frames_per_s},
            {"mib_per_s", m.mib_per_s},
            {"notifies", m.notifies},
            {"gso_frames", m.gso_frames},
            {"tap_frames", m.tap_frames},
            {"tap_dropped", m.tap_dropped},
            {"process_seconds", m.total_run_s},
            {"cpu_seconds", m.cpu_s},
            {"cpu_us_per_frame", m.cpu_us_per_frame}});
  if (m.tsc_s > 0) j["guest_tsc_seconds"] = m.tsc_s;
  if (m.sender_cpu_s > 0) j["sender_cpu_seconds"] = m.sender_cpu_s;
  for (const auto& [name, t] : m.threads) {
    j["threads"][name] = {{"cpu_seconds", t.cpu_s},
                          {"voluntary_switches", t.voluntary},
                          {"involuntary_switches", t.involuntary}};
  }
  return j;
}

nlohmann::json to_json(const Options& options, const std::vector<Test>& tests, const Results& results,
                       const std::string& host, double tsc_hz, const std::map<std::string, std::string>& versions) {
  nlohmann::json j;
  j["host"] = host;
  j["tsc_hz"] = tsc_hz;
  j["versions"] = versions;
  j["options"] = {{"tap", options.tap},           {"own_netns", options.own_netns},
                  {"qemu_machine", options.qemu_machine}, {"runs", options.runs},
                  {"window_small", options.window_small}, {"window_tso", options.window_tso},
                  {"memory_mib", options.memory_mib},   {"cpus", options.cpus}};
  for (const Test& test : tests) {
    nlohmann::json t = {{"direction", test.receive ? "tap->guest" : "guest->tap"},
                        {"frame_bytes", test.frame_bytes},
                        {"tso", test.tso},
                        {"frames", test.count},
                        {"unit", test.mib ? "MiB/s" : "frames/s"}};
    for (const auto& [vmm, cell] : results.at(test.key)) {
      nlohmann::json runs = nlohmann::json::array();
      for (const Measurement& m : cell.runs) runs.push_back(measurement_json(m));
      t["results"][vmm] = {{"runs", runs}};
      if (auto median = cell.median(test)) t["results"][vmm]["median"] = measurement_json(*median);
    }
    if (auto r = ratio(results, test)) t["skiff_over_qemu"] = *r;
    j["tests"][test.key] = t;
  }
  return j;
}

void keep_log(const Options& options, const std::string& name, const Measurement& m) {
  if (options.keep_logs.empty()) return;
  std::string base = fmt::format("{}/{}", options.keep_logs, name);
  std::ofstream(base + ".out") << m.console;
  std::ofstream(base + ".err") << m.stderr_text;
}

int run(Options options) {
  if (auto placed = set_child_cpus(options.cpus); !placed) {
    fmt::print(stderr, "skiff_bench_net: {}\n", placed.error());
    return 2;
  }
  options.guest = std::filesystem::absolute(options.guest).string();
  if (!options.keep_logs.empty()) options.keep_logs = std::filesystem::absolute(options.keep_logs).string();
  std::vector<std::string> vmms;
  for (const std::string key : {"skiff", "qemu"}) {
    if (options.only.empty() || std::find(options.only.begin(), options.only.end(), key) != options.only.end()) {
      vmms.push_back(key);
    }
  }
  std::map<std::string, std::string> programs;
  std::map<std::string, std::string> versions;
  for (const std::string& key : vmms) {
    auto program = resolve_program(key == "qemu" ? options.qemu : options.skiff);
    if (!program) {
      fmt::print(stderr, "skiff_bench_net: {}: {}\n", key, program.error());
      return 1;
    }
    programs[key] = *program;
    auto version = capture(*program, {*program, key == "skiff" ? "version" : "--version"}, 10);
    versions[key] = version ? first_line(*version) : "?";
  }
  std::vector<Test> tests;
  for (const Test& t : all_tests(options)) {
    // rxtso only on request: frames injected into the tap arrive segmented (all_tests()).
    bool wanted = options.tests.empty() ? t.key != "rxtso"
                                        : std::find(options.tests.begin(), options.tests.end(), t.key) != options.tests.end();
    if (wanted) {
      tests.push_back(t);
    }
  }
  if (auto tap = create_tap(options); !tap) {
    fmt::print(stderr, "skiff_bench_net: {}\n", tap.error());
    return 1;
  }
  char dir_template[] = "/tmp/skiff-netbench-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    fmt::print(stderr, "skiff_bench_net: {}\n", errno_text("mkdtemp"));
    remove_tap(options);
    return 1;
  }
  const std::string dir = dir_template;
  const double tsc_hz = calibrate_tsc_hz();
  const std::string host = describe_host();

  Results results;
  bool failed = false;
  for (const Test& test : tests) {
    for (const auto& v : vmms) results[test.key][v];
    for (unsigned round = 0; round < options.runs; ++round) {
      // The VMMs alternate within a round so drift on the host hits both alike.
      for (const auto& v : vmms) {
        Measurement m;
        const std::string& program = programs.at(v);
        if (v == "qemu") {
          m = run_vmm(program, qemu_argv(program, options, test), test, options, tsc_hz);
        } else if (auto spec = write_skiff_spec(options, test, dir); !spec) {
          m.error = spec.error();
        } else {
          m = run_vmm(program, {program, "run", *spec}, test, options, tsc_hz);
        }
        keep_log(options, fmt::format("{}-{}-{}", test.key, v, round + 1), m);
        if (m.ok) {
          fmt::print(stderr, "{} {} run {}: {} ({} frames in {:.2f} s, guest TSC {:.2f} s)\n", test.key, v, round + 1,
                     test.mib ? fmt::format("{:.1f} MiB/s", m.mib_per_s) : fmt::format("{:.0f} frames/s", m.frames_per_s),
                     m.frames, m.wall_s, m.tsc_s);
        } else {
          failed = true;
          fmt::print(stderr, "{} {} run {}: FAILED: {}\n", test.key, v, round + 1, m.error);
          if (!m.stderr_text.empty()) fmt::print(stderr, "  its stderr:\n{}\n", tail(m.stderr_text, kStderrTailBytes));
        }
        results[test.key][v].runs.push_back(std::move(m));
      }
    }
  }
  print_report(options, tests, vmms, results, host, tsc_hz);
  if (!options.json_path.empty()) {
    std::ofstream json(options.json_path);
    json << to_json(options, tests, results, host, tsc_hz, versions).dump(2) << "\n";
    if (!json) {
      fmt::print(stderr, "skiff_bench_net: {}: write failed\n", options.json_path);
      failed = true;
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  remove_tap(options);
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace skiff::bench

int main(int argc, char** argv) {
  using skiff::bench::Options;
  Options options;
  CLI::App app{
      "skiff virtio-net benchmark: guest->tap and tap->guest frames/s at 64 and 1514 bytes and MiB/s with 64 KiB "
      "TSO frames, skiff beside QEMU virtio-net-pci on the same tap (no vhost). Needs root (a network namespace "
      "and a tap).",
      "skiff_bench_net"};
  app.add_option("--skiff", options.skiff, "the skiff binary")->capture_default_str();
  app.add_option("--qemu", options.qemu, "the QEMU binary")->capture_default_str();
  app.add_option("--guest", options.guest, "the test guest's PVH ELF (tests/guest)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--tap", options.tap, "name of the tap the benchmark creates")->capture_default_str();
  app.add_flag("!--no-netns", options.own_netns,
               "stay in the current network namespace (the tap must not exist there yet)");
  app.add_option("--qemu-machine", options.qemu_machine, "QEMU -M (needs PCI through ports 0xcf8/0xcfc)")
      ->capture_default_str();
  app.add_option("--qemu-cpu", options.qemu_cpu, "QEMU -cpu")->capture_default_str();
  app.add_option("--only", options.only, "VMMs to run: skiff, qemu")->check(CLI::IsMember({"skiff", "qemu"}));
  app.add_option("--tests", options.tests, "tests to run: tx64 tx1500 txtso rx64 rx1500 rxtso")
      ->check(CLI::IsMember({"tx64", "tx1500", "txtso", "rx64", "rx1500", "rxtso"}));
  app.add_option("--count-small", options.count_small, "frames in the 64-byte tests")->capture_default_str();
  app.add_option("--count-mtu", options.count_mtu, "frames in the 1514-byte tests")->capture_default_str();
  app.add_option("--count-tso", options.count_tso, "frames in the 64 KiB TSO tests")->capture_default_str();
  app.add_option("--window-small", options.window_small, "tap->guest: frames the sender keeps ahead (64/1514 B)")
      ->check(CLI::Range(1u, 4096u))
      ->capture_default_str();
  app.add_option("--window-tso", options.window_tso, "tap->guest: frames the sender keeps ahead (TSO)")
      ->check(CLI::Range(1u, 4096u))
      ->capture_default_str();
  app.add_option("--cpus", options.cpus,
                 "confine every VMM (all its threads) to these CPUs, e.g. 1 (the one-CPU placement)");
  app.add_option("--runs", options.runs, "runs per VMM and test (median reported)")
      ->check(CLI::Range(1u, 100u))
      ->capture_default_str();
  app.add_option("--memory-mib", options.memory_mib, "guest RAM (the payload uses 64-82 MiB)")
      ->check(CLI::Range(128u, 65536u))
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_s, "seconds one VM run may take")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--json", options.json_path, "also write the results as JSON to this file");
  app.add_option("--keep-logs", options.keep_logs, "directory for each run's console output and stderr")
      ->check(CLI::ExistingDirectory);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  return skiff::bench::run(options);
}
