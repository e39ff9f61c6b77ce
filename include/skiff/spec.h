// SPDX-License-Identifier: Apache-2.0
// The machine description: what `skiff run vm.json` reads and what embedders build in
// code. Field-by-field documentation: docs/config.md; JSON Schema: configs/skiff-vm.schema.json.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "skiff/error.h"

namespace skiff {

enum class HugePages { kNone, kTransparent, k2M, k1G };

struct MachineSpec {
  uint32_t vcpus = 1;
  uint64_t memory_mib = 256;
  HugePages hugepages = HugePages::kNone;
  bool prefault = false;       // touch all guest RAM before boot
  bool lock_memory = false;    // mlock guest RAM
  bool shared_memory = false;  // back RAM with a shared memfd instead of private memory
  // Host CPUs each vCPU may run on: empty = no pinning; otherwise one entry per vCPU,
  // each a non-empty list of host CPU numbers.
  std::vector<std::vector<uint32_t>> vcpu_affinity;
  std::optional<uint32_t> numa_node;  // host NUMA node for guest RAM (mbind)
  // Also list virtio-mmio devices on the kernel command line (virtio_mmio.device=...), for
  // kernels built with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES; ACPI describes them always.
  bool mmio_cmdline = false;
};

// How a virtio device reaches the guest.
enum class VirtioTransport {
  kPci,   // virtio-pci: found by PCI probing (stock distribution kernels)
  kMmio,  // virtio-mmio: found through ACPI (LNRO0005) or the kernel command line
};

// virtio-rng: an entropy source for the guest, backed by the host's getrandom(2).
struct RngSpec {
  VirtioTransport transport = VirtioTransport::kPci;
};

// A token-bucket limit: each bucket refills at its rate per second and holds one second's
// worth; 0 = unlimited.
struct RateLimitSpec {
  uint64_t bytes_per_second = 0;
  uint64_t ops_per_second = 0;  // requests (virtio-blk) or packets (virtio-net) per second
  bool limited() const { return bytes_per_second != 0 || ops_per_second != 0; }
  bool operator==(const RateLimitSpec&) const = default;
};

// How a disk's host file is opened.
enum class DiskCache {
  kNone,       // O_DIRECT, no host page cache; guest flushes reach the device (fdatasync)
  kWriteback,  // host page cache; guest flushes reach the device (fdatasync)
  kUnsafe,     // host page cache; guest flushes are acknowledged without syncing
};

enum class IoEngine {
  kIoUring,  // io_uring; falls back to kSync with a log line when the kernel refuses it
  kSync,     // preadv/pwritev on the disk's I/O thread
};

enum class DiscardMode {
  kUnmap,   // guest discards punch holes (files) or BLKDISCARD (block devices)
  kIgnore,  // VIRTIO_BLK_F_DISCARD is not offered
};

// virtio-blk: a raw image file or a block device (zvol, LVM volume, loop device...).
struct DiskSpec {
  std::string id;              // unique among disks and NICs; names the I/O threads
  std::filesystem::path path;  // regular file or block device
  bool read_only = false;
  // Another process may hold the disk open as well (only with read_only): skips the
  // exclusive lock / O_EXCL.
  bool shared = false;
  // nullopt: kNone for block devices, kWriteback for files.
  std::optional<DiskCache> cache;
  IoEngine io_engine = IoEngine::kIoUring;
  DiscardMode discard = DiscardMode::kUnmap;
  std::string serial;  // VIRTIO_BLK_T_GET_ID; at most 20 bytes; empty = the disk id
  uint16_t queues = 1;
  uint16_t queue_size = 256;
  RateLimitSpec rate_limit;
  // The most a queue thread busy-polls (µs) before it sleeps; the window adapts below it
  // (docs/config.md). 0: never poll.
  uint32_t poll_max_us = 32;
  VirtioTransport transport = VirtioTransport::kPci;
  bool operator==(const DiskSpec&) const = default;
};

using MacAddress = std::array<uint8_t, 6>;

// virtio-net: a NIC backed by a Linux tap device.
struct NetSpec {
  std::string id;
  std::string tap;        // interface name; created if absent, reused if it exists
  std::optional<int> tap_fd;  // an open tap file descriptor (embedders; `skiff run` inherits it)
  std::optional<MacAddress> mac;  // nullopt: generated, stable per VM name and NIC id
  std::optional<uint32_t> mtu;    // nullopt: the tap's MTU
  uint16_t queues = 1;            // queue pairs (multiqueue tap when > 1)
  uint16_t queue_size = 256;
  bool offloads = true;  // checksum/TSO/ECN offloads with the tap
  RateLimitSpec rx_rate_limit;  // host -> guest
  RateLimitSpec tx_rate_limit;  // guest -> host
  VirtioTransport transport = VirtioTransport::kPci;
  bool operator==(const NetSpec&) const = default;
};

// virtio-balloon.
struct BalloonSpec {
  uint64_t target_mib = 0;       // initial balloon size the guest is asked to reach
  bool deflate_on_oom = false;   // VIRTIO_BALLOON_F_DEFLATE_ON_OOM
  uint32_t stats_interval_s = 0; // 0 = no statistics queue
  bool free_page_reporting = false;  // VIRTIO_BALLOON_F_FREE_PAGE_REPORTING
  VirtioTransport transport = VirtioTransport::kPci;
  bool operator==(const BalloonSpec&) const = default;
};

struct BootSpec {
  std::filesystem::path kernel;  // bzImage, or ELF vmlinux with or without a PVH note
  std::filesystem::path initrd;  // optional (empty = none)
  std::string cmdline;
};

enum class SerialMode {
  kStdout,  // guest output to skiff's stdout; input from stdin when it is a terminal
  kFile,    // guest output appended to `path`
  kNone,    // output discarded
};

struct SerialSpec {
  SerialMode mode = SerialMode::kStdout;
  std::filesystem::path path;  // for kFile
  bool input = true;           // with kStdout: forward stdin to the guest when interactive
};

// The control API: HTTP/JSON on a Unix socket (docs/api.md).
struct ApiSpec {
  std::filesystem::path socket;  // created 0600, removed when the VM's process ends
  bool operator==(const ApiSpec&) const = default;
};

// virtio-vsock (hybrid vsock, the Firecracker/Cloud Hypervisor convention): host programs
// reach the guest through the Unix socket `socket` ("CONNECT <port>\n"); the guest's
// connections to the host (CID 2) port P reach the program listening on "<socket>_<P>".
struct VsockSpec {
  uint32_t guest_cid = 3;          // the guest's context ID: 3 .. 0xfffffffe
  std::filesystem::path socket;    // made (0600) when the VM starts, removed at exit
  VirtioTransport transport = VirtioTransport::kPci;
  bool operator==(const VsockSpec&) const = default;
};

// The longest vsock socket path such that "<socket>_<port>" for any 32-bit port (an '_'
// and up to 10 digits) still fits sockaddr_un's 107 usable bytes: 107 - 11 = 96.
inline constexpr size_t kMaxVsockSocketPathBytes = 96;

struct VmSpec {
  std::string name = "skiff";
  MachineSpec machine;
  BootSpec boot;
  SerialSpec serial;
  std::optional<RngSpec> rng;  // absent: no entropy device
  std::vector<DiskSpec> disks;
  std::vector<NetSpec> nets;
  std::optional<BalloonSpec> balloon;  // absent: no balloon device
  std::optional<VsockSpec> vsock;      // absent: no vsock device
  std::optional<ApiSpec> api;          // absent: no API socket
};

// Parses a spec from JSON text. Relative paths are resolved against `base_dir`. Unknown
// keys and wrong types are rejected with the JSON path of the field, e.g.
// `/machine/vcpus: expected an unsigned integer, got string`.
Result<VmSpec> parse_spec(std::string_view json_text, const std::filesystem::path& base_dir);

// Reads and parses a spec file; relative paths resolve against the file's directory.
Result<VmSpec> load_spec_file(const std::filesystem::path& path);

// Checks the rules that span fields and the host files the spec names (kernel and initrd
// exist and are readable regular files, vCPU/memory limits, affinity lists...).
Result<void> validate_spec(const VmSpec& spec);

// Serialises a spec back to JSON (every field, defaults included).
std::string spec_to_json(const VmSpec& spec);

std::string_view to_string(HugePages hugepages);
std::string_view to_string(SerialMode mode);
std::string_view to_string(VirtioTransport transport);
std::string_view to_string(DiskCache cache);
std::string_view to_string(IoEngine engine);
std::string_view to_string(DiscardMode mode);
// "52:54:00:12:34:56"
std::string format_mac(const MacAddress& mac);
// Parses "xx:xx:xx:xx:xx:xx" (hex, either case); nullopt when malformed.
std::optional<MacAddress> parse_mac(std::string_view text);

}  // namespace skiff
