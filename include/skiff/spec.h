// SPDX-License-Identifier: Apache-2.0
// The machine description: what `skiff run vm.json` reads and what embedders build in
// code. Field-by-field documentation: docs/config.md; JSON Schema: configs/skiff-vm.schema.json.
#pragma once

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

struct VmSpec {
  std::string name = "skiff";
  MachineSpec machine;
  BootSpec boot;
  SerialSpec serial;
  std::optional<RngSpec> rng;  // absent: no entropy device
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

}  // namespace skiff
