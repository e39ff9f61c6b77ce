// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for PCI configuration space and MSI-X (src/pci/config_space.cc,
// msix_table.cc, pci_root.cc) and the virtio-pci transport behind them
// (src/virtio/transport/pci_transport.cc): bus 0 with the host bridge, a generic function
// whose BARs and MSI-X layout the input chooses (slot 1), and a virtio-pci function (slot 2),
// driven by a sequence of accesses through configuration mechanism #1 (ports 0xcf8-0xcff),
// the ECAM window, direct configuration accesses and BAR reads/writes (MSI-X table and PBA,
// virtio common configuration, notifications, ISR, device configuration), with interrupts
// raised in between.
//
// Input layout (fuzz/corpus/make_pci_config_corpus.py writes seeds in this format):
//   u8 generic flags: bits 0-1 BAR count, bit 2 4 KiB configuration space, bit 3 MSI-X
//   per BAR: u8 index (% 6), u8 kind (% 3: mem32, mem64, io), u8 size log2, u8 prefetchable
//   with MSI-X: u16 vectors (1 + n % 2048), u8 table BAR, u32 table offset, u8 PBA BAR,
//               u32 PBA offset
//   u8 firmware assignment mask, then per assigned BAR a u64 address (aligned down)
//   then operations until the input ends (at most 1024), each a u8 opcode (% 10) and its
//   operands (see run_op()).
// Invariants: every BAR move reported to the listener starts where the previous one ended
// and ends where the device now decodes, no decode change goes unreported, ioeventfd
// registrations are removed exactly as they were added, vendor ids never change, and
// reads of a valid size return a value of that size (or all ones).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include "fuzz_support.h"
#include "pci/config_space.h"
#include "pci/msix_table.h"
#include "pci/pci_root.h"
#include "virtio/core/virtio_constants.h"
#include "virtio/core/virtio_device.h"
#include "virtio/transport/notify_registrar.h"
#include "virtio/transport/pci_transport.h"

namespace {

using namespace skiff::pci;
using skiff::fuzz::check;
using skiff::fuzz::FuzzReader;

constexpr uint16_t kGenericVendorId = 0x1234;

// A function with a configuration space and BARs of the input's choosing; BAR contents
// outside the MSI-X structures are plain memory.
class GenericDevice : public PciDevice {
 public:
  explicit GenericDevice(uint16_t config_size)
      : config_(ConfigHeader{.vendor_id = kGenericVendorId, .device_id = 0x5678, .interrupt_pin = 1},
                config_size) {}

  ConfigSpace& config() { return config_; }
  std::string name() const override { return "fuzz-generic"; }
  uint16_t config_space_size() const override { return config_.size(); }
  uint32_t config_read(uint16_t offset, uint8_t size) override {
    std::lock_guard lock(mutex_);
    return config_.read(offset, size);
  }
  void config_write(uint16_t offset, uint8_t size, uint32_t value) override {
    std::lock_guard lock(mutex_);
    config_.write(offset, size, value);
  }
  std::vector<BarInfo> bars() const override {
    std::lock_guard lock(mutex_);
    return config_.bars();
  }
  std::optional<uint64_t> bar_address(uint8_t index) const override {
    std::lock_guard lock(mutex_);
    return config_.bar_address(index);
  }
  void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) override {
    if (config_.msix() && config_.msix()->bar_read(index, offset, data)) return;
    std::fill(data.begin(), data.end(), uint8_t{0});
  }
  void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override {
    if (config_.msix()) (void)config_.msix()->bar_write(index, offset, data);
  }

 private:
  mutable std::mutex mutex_;
  ConfigSpace config_;
};

// The virtio device behind the transport: two queues and a small configuration.
class FuzzVirtioDevice : public skiff::virtio::VirtioDevice {
 public:
  uint32_t device_type() const override { return skiff::virtio::kDeviceIdEntropy; }
  std::vector<uint16_t> queue_max_sizes() const override { return {16, 8}; }
  uint64_t device_features() const override {
    using namespace skiff::virtio;
    return feature_mask(kFeatureVersion1) | feature_mask(kFeatureRingEventIdx) |
           feature_mask(kFeatureRingIndirectDesc);
  }
  uint32_t config_size() const override { return static_cast<uint32_t>(config_.size()); }
  void read_config(uint64_t offset, std::span<uint8_t> data) override {
    skiff::virtio::read_config_bytes(config_, offset, data);
  }
  void write_config(uint64_t offset, std::span<const uint8_t> data) override {
    (void)skiff::virtio::write_config_bytes(config_, offset, data);
  }
  skiff::Result<void> activate(uint64_t, std::vector<skiff::virtio::Queue*> queues,
                               std::shared_ptr<skiff::virtio::VirtioInterrupt> interrupt) override {
    check(queues.size() == 2);
    std::lock_guard lock(mutex_);
    interrupt_ = std::move(interrupt);
    return {};
  }
  void notify_queue(uint16_t index) override { check(index < 2); }
  std::optional<int> queue_notify_fd(uint16_t index) const override { return 100 + index; }
  void reset() override {
    std::lock_guard lock(mutex_);
    interrupt_.reset();
  }
  // No workers: pausing is a no-op; the state is the configuration bytes.
  skiff::Result<void> pause() override { return {}; }
  skiff::Result<void> resume() override { return {}; }
  skiff::Result<skiff::state::StateBlob> save_state() const override {
    skiff::state::StateBlob blob("fuzz-virtio", 1);
    blob.put_bytes("config", config_);
    return blob;
  }
  skiff::Result<void> restore_state(const skiff::state::StateBlob& blob) override {
    if (auto expected = blob.expect("fuzz-virtio", 1); !expected) return expected;
    auto config = blob.bytes_exact("config", config_.size());
    if (!config) return std::unexpected(config.error());
    std::copy(config->begin(), config->end(), config_.begin());
    return {};
  }
  std::shared_ptr<skiff::virtio::VirtioInterrupt> interrupt() {
    std::lock_guard lock(mutex_);
    return interrupt_;
  }

 private:
  std::array<uint8_t, 16> config_{};
  std::mutex mutex_;
  std::shared_ptr<skiff::virtio::VirtioInterrupt> interrupt_;
};

// ioeventfd registrations must be removed exactly as they were added.
class CheckingRegistrar : public skiff::virtio::NotifyRegistrar {
 public:
  skiff::Result<void> add(int fd, uint64_t address, uint32_t length, std::optional<uint64_t> match) override {
    check(live_.insert({fd, address, length, match}).second);
    return {};
  }
  void remove(int fd, uint64_t address, uint32_t length, std::optional<uint64_t> match) override {
    check(live_.erase({fd, address, length, match}) == 1);
  }

 private:
  std::set<std::tuple<int, uint64_t, uint32_t, std::optional<uint64_t>>> live_;
};

class LevelLine : public skiff::IrqLine {
 public:
  void set_level(bool high) override { level = high; }
  bool level = false;
};

struct Bus {
  std::shared_ptr<PciRoot> root = std::make_shared<PciRoot>();
  PciConfigIo io{root};
  PciConfigEcam ecam{root};
  std::shared_ptr<GenericDevice> generic;
  std::shared_ptr<skiff::virtio::VirtioPciTransport> transport;
  std::shared_ptr<FuzzVirtioDevice> virtio;
  std::map<std::pair<uint8_t, uint8_t>, std::optional<uint64_t>> decoded;  // (slot, BAR) -> address
};

uint8_t read_size(FuzzReader& in) {
  static constexpr uint8_t kSizes[] = {1, 2, 4, 4, 3, 8};
  return kSizes[in.u8() % 6];
}

void check_read(uint32_t value, uint8_t size) {
  if (value == 0xffffffff) return;
  if (size < 4) check(value < (uint32_t{1} << (8 * size)));
}

PciDevice* device_for(Bus& bus, uint8_t which) {
  return which % 2 == 0 ? static_cast<PciDevice*>(bus.generic.get()) : static_cast<PciDevice*>(bus.transport.get());
}

void run_op(Bus& bus, FuzzReader& in) {
  std::array<uint8_t, 8> buffer{};
  switch (in.u8() % 10) {
    case 0: {  // mechanism #1 write: CONFIG_ADDRESS or CONFIG_DATA
      const uint8_t port = in.u8() % 8;
      const uint8_t size = read_size(in);
      const uint64_t value = in.u64();
      for (uint8_t i = 0; i < size; ++i) buffer[i] = static_cast<uint8_t>(value >> (8 * i));
      bus.io.write(port, std::span<const uint8_t>(buffer.data(), size));
      break;
    }
    case 1: {  // mechanism #1 read
      const uint8_t port = in.u8() % 8;
      bus.io.read(port, std::span<uint8_t>(buffer.data(), read_size(in)));
      break;
    }
    case 2: {  // mechanism #1 as a driver uses it: address, then data
      const uint32_t address = 0x80000000u | (static_cast<uint32_t>(in.u8() % 4) << 11) | (in.u8() & 0xfc);
      const uint8_t size = read_size(in);
      const uint32_t value = in.u32();
      for (int i = 0; i < 4; ++i) buffer[i] = static_cast<uint8_t>(address >> (8 * i));
      bus.io.write(0, std::span<const uint8_t>(buffer.data(), 4));
      for (int i = 0; i < 4; ++i) buffer[i] = static_cast<uint8_t>(value >> (8 * i));
      bus.io.write(4 + (address & 3), std::span<const uint8_t>(buffer.data(), size));
      break;
    }
    case 3: {  // ECAM write (any offset, including other buses and beyond 256 MiB)
      const uint64_t offset = in.u32() | (in.flag() ? uint64_t{1} << 28 : 0);
      const uint8_t size = read_size(in);
      const uint64_t value = in.u64();
      for (uint8_t i = 0; i < size; ++i) buffer[i] = static_cast<uint8_t>(value >> (8 * i));
      bus.ecam.write(offset, std::span<const uint8_t>(buffer.data(), size));
      break;
    }
    case 4: {  // ECAM read
      const uint64_t offset = in.u32();
      bus.ecam.read(offset, std::span<uint8_t>(buffer.data(), read_size(in)));
      break;
    }
    case 5: {  // configuration write, decoded
      const uint8_t slot = in.u8() % 4;
      const uint16_t reg = in.u16() % 0x1000;
      const uint8_t size = read_size(in);
      bus.root->config_write(0, slot, 0, reg, size, in.u32());
      break;
    }
    case 6: {  // configuration read, decoded
      const uint8_t slot = in.u8() % 4;
      const uint16_t reg = in.u16() % 0x1000;
      const uint8_t size = read_size(in);
      check_read(bus.root->config_read(0, slot, 0, reg, size), size);
      break;
    }
    case 7:
    case 8: {  // BAR access (the bus only forwards accesses inside the BAR)
      const bool write = in.u8() % 2 == 0;
      PciDevice* device = device_for(bus, in.u8());
      const std::vector<BarInfo> bars = device->bars();
      const uint8_t pick = in.u8();
      const uint64_t offset = in.u16();
      static constexpr uint8_t kWidths[] = {1, 2, 4, 8};
      const uint8_t size = kWidths[in.u8() % 4];
      const uint64_t value = in.u64();
      if (bars.empty()) break;
      const BarInfo& bar = bars[pick % bars.size()];
      if (bar.size < size || offset > bar.size - size) break;
      if (write) {
        for (uint8_t i = 0; i < size; ++i) buffer[i] = static_cast<uint8_t>(value >> (8 * i));
        device->bar_write(bar.index, offset, std::span<const uint8_t>(buffer.data(), size));
      } else {
        device->bar_read(bar.index, offset, std::span<uint8_t>(buffer.data(), size));
      }
      break;
    }
    default: {  // the device side raises interrupts
      const uint8_t what = in.u8();
      if (auto msix = bus.generic->config().msix()) (void)msix->signal(in.u16() % (msix->vectors() + 1));
      if (auto interrupt = bus.virtio->interrupt()) {
        if (what & 1) interrupt->signal_config_change();
        if (what & 2) interrupt->signal_used_queue(what >> 2 & 1);
        if (what & 4) interrupt->signal_needs_reset();
      }
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  skiff::fuzz::quiet_logs_unless_verbose();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzReader in(data, size);
  Bus bus;
  const uint8_t flags = in.u8();
  bus.generic = std::make_shared<GenericDevice>((flags & 4) ? kExtendedConfigSpaceSize : kConfigSpaceSize);
  ConfigSpace& config = bus.generic->config();
  for (uint8_t i = 0; i < (flags & 3); ++i) {
    BarInfo bar;
    bar.index = in.u8() % 6;
    bar.kind = static_cast<BarKind>(in.u8() % 3);
    bar.size = uint64_t{1} << (in.u8() % 64);
    bar.prefetchable = in.flag();
    (void)config.add_bar(bar);  // the device's own set-up: refusals are fine here
  }
  if (flags & 8) {
    MsixLayout layout;
    layout.vectors = static_cast<uint16_t>(1 + in.u16() % kMsixMaxVectors);
    layout.table_bar = in.u8();
    layout.table_offset = in.u32();
    layout.pba_bar = in.u8();
    layout.pba_offset = in.u32();
    auto table = MsixTable::create(layout, [](uint64_t, uint32_t) {});
    if (table) (void)config.add_msix_capability(*table);
  }
  const uint8_t assign = in.u8();
  for (const BarInfo& bar : config.bars()) {
    if ((assign >> bar.index & 1) == 0) continue;
    (void)config.set_bar_address(bar.index, in.u64() & ~(bar.size - 1));
  }
  check(bus.root->add_device(bus.generic).value_or(0) == 1);

  static std::vector<uint8_t> ram(0x10000);
  std::fill(ram.begin(), ram.end(), uint8_t{0});
  skiff::GuestRegion region{0x100000, ram.size(), ram.data()};
  static skiff::GuestMemory memory = skiff::GuestMemory::from_host_buffers(std::span(&region, 1));
  bus.virtio = std::make_shared<FuzzVirtioDevice>();
  auto line = std::make_shared<LevelLine>();
  auto transport = skiff::virtio::VirtioPciTransport::create(bus.virtio, memory, std::make_shared<CheckingRegistrar>(),
                                                             [](uint64_t, uint32_t) {}, line, "fuzz-virtio-pci");
  check(transport.has_value());
  bus.transport = *transport;
  check(bus.transport->set_bar_address(0, 0xe0000000).has_value());
  check(bus.root->add_device(bus.transport).value_or(0) == 2);

  for (uint8_t slot = 1; slot <= 2; ++slot) {
    for (const BarInfo& bar : bus.root->device(slot)->bars()) {
      bus.decoded[{slot, bar.index}] = bus.root->device(slot)->bar_address(bar.index);
    }
  }
  bus.root->set_bar_move_listener([&bus](const BarMove& move) {
    auto& now = bus.decoded[{move.slot, move.bar.index}];
    check(move.old_address == now && move.new_address != move.old_address);
    // PciRoot's lock is held here: reach the device directly, not through root->device().
    PciDevice* device = move.slot == 1 ? static_cast<PciDevice*>(bus.generic.get())
                                       : static_cast<PciDevice*>(bus.transport.get());
    check(move.new_address == device->bar_address(move.bar.index));
    if (move.new_address) {
      check(*move.new_address % move.bar.size == 0);
      if (move.bar.kind != BarKind::kMemory64) check(*move.new_address + move.bar.size <= uint64_t{1} << 32);
    }
    now = move.new_address;
  });

  for (int op = 0; op < 1024 && !in.empty(); ++op) {
    run_op(bus, in);
    for (const auto& [key, address] : bus.decoded) {
      check(bus.root->device(key.first)->bar_address(key.second) == address);
    }
    check(bus.root->config_read(0, 0, 0, 0, 2) == kHostBridgeVendorId);
    check(bus.root->config_read(0, 1, 0, 0, 2) == kGenericVendorId);
    check(bus.root->config_read(0, 2, 0, 0, 2) == skiff::virtio::kVirtioPciVendorId);
  }
  bus.transport->reset();
  return 0;
}
