// SPDX-License-Identifier: Apache-2.0
// The spec's rules, and where each lives (src/config/; field reference: docs/config.md):
//
//   spec.cc           the functions of include/skiff/spec.h: parse_spec = JSON + the
//                     host-independent rules; validate_spec = those rules + the host rules
//   spec_json.cc      the JSON form: allowed keys, JSON types, enum and MAC spellings
//                     (read_spec_json), and writing a spec back (write_spec_json)
//   spec_rules.cc     limits below and the host-independent rules for name, machine, boot
//                     and serial (check_spec_rules, which also runs check_device_rules)
//   device_rules.cc   host-independent rules for disks, nets, balloon, vsock and api
//   host_rules.cc     what this host must offer: CPUs and NUMA nodes, readable kernel,
//                     initrd and disks, writable serial file, the API socket's directory,
//                     the vsock socket's writable directory
//   spec_overrides.cc the command line's overrides of spec fields (skiff run/test flags)
//
// The host-independent rules run on every parsed spec and again in validate_spec, so
// specs built in code are held to the same rules. Error messages start with the JSON
// pointer of the field, whether the spec came from JSON or from code. A new spec field
// touches include/skiff/spec.h, spec_json.cc (reading and writing), the rules file of its
// section, docs/config.md and configs/skiff-vm.schema.json.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "skiff/error.h"
#include "skiff/spec.h"

namespace skiff::config {

// xAPIC ids are 8 bits and 0xff is the broadcast id, so vCPU ids 0..253 are usable.
inline constexpr uint32_t kMaxVcpus = 254;
inline constexpr uint64_t kMinMemoryMib = 16;
inline constexpr uint64_t kMaxMemoryMib = uint64_t{1} << 20;  // 1 TiB
inline constexpr uint64_t kGigaPageMib = 1024;
// Linux's MAX_NUMNODES is at most 1 << CONFIG_NODES_SHIFT (10 on x86_64).
inline constexpr uint32_t kMaxNumaNode = 1023;
inline constexpr size_t kMaxNameLength = 64;
// The command line is copied to guest memory with a terminating NUL; layout.h's
// kCmdlineMaxSize counts that NUL.
inline constexpr size_t kMaxCmdlineBytes = 65535;

// Device limits.
inline constexpr size_t kMaxDeviceIdLength = 32;
inline constexpr uint16_t kMaxDeviceQueues = 64;  // queues (disks) or queue pairs (NICs)
inline constexpr uint16_t kMaxQueueSize = 1024;
inline constexpr size_t kMaxDiskSerialBytes = 20;  // virtio-blk GET_ID (VIRTIO_BLK_ID_BYTES)
// A queue thread that spins longer than 1 ms per episode keeps a whole CPU busy for a
// disk that is, by then, better served by sleeping.
inline constexpr uint32_t kMaxDiskPollUs = 1000;
inline constexpr uint32_t kMinMtu = 68;            // IPv4's minimum (RFC 791)
inline constexpr uint32_t kMaxMtu = 65535;
inline constexpr size_t kMaxTapNameLength = 15;    // IFNAMSIZ - 1

// Disks, NICs, the balloon, vsock and the API socket: ids, queue shapes, serials, tap names,
// MACs, MTUs, guest CIDs, socket paths.
Result<void> check_device_rules(const VmSpec& spec);

// Every host-independent rule: ranges, cross-field rules, affinity shape, cmdline
// characters, serial mode vs path. Does not touch the file system.
Result<void> check_spec_rules(const VmSpec& spec);

// Every rule that looks at this host (host_rules.cc): host CPUs and NUMA nodes named by the
// spec exist, the kernel, initrd and disks can be opened, the serial file can be written,
// the API socket's directory exists, the vsock socket's directory is writable.
Result<void> check_host_rules(const VmSpec& spec);

// Parses a Linux CPU or node list as found in sysfs ("0-3,8,10-11\n"). nullopt when the
// text is not such a list.
std::optional<std::vector<uint32_t>> parse_cpu_list(std::string_view text);

// Escapes one reference token of a JSON pointer (RFC 6901 section 3: '~' -> "~0",
// '/' -> "~1"), and control characters as \u00XX so that a key holding a line break
// cannot split an error message.
std::string escape_pointer_token(std::string_view token);

// `text` with control characters written as \u00XX, for quoting user strings in messages.
std::string printable(std::string_view text);

// The candidate closest to `key` by case-insensitive edit distance, if it is close
// enough to be a plausible typo.
std::optional<std::string_view> closest_key(std::string_view key,
                                            std::span<const std::string_view> candidates);

}  // namespace skiff::config
