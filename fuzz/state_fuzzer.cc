// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the device-state seam (src/state/, and restore_state() of the
// objects below): state blobs come from snapshot files and migration streams, so every
// byte is hostile. Two modes, chosen by the first input byte:
//
//   bit 7 set    raw: the rest of the input is handed to StateBlob::decode() and, when it
//                decodes, restored into one object of every kind;
//   bit 7 clear  structured: byte & 0x7f picks a kind; a real blob of that kind (saved
//                from an object driven into a non-trivial state) is mutated by the rest of
//                the input, 11 bytes per mutation: field index (1), what to put (1: an
//                integer, a boolean, a byte string of a given length, a string, an empty
//                list or an empty nested blob), value (8), length (1); then restored into a
//                fresh object, so the readers' range and consistency checks are reached.
//
// Invariants, checked with __builtin_trap(): no crash or sanitizer report on any input;
// when a restore succeeds, the object saves again and that blob restores into another fresh
// object; a restored queue pops and returns every chain without leaving RAM.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "devices/legacy/acpi_pm.h"
#include "devices/legacy/cmos_rtc.h"
#include "devices/legacy/i8042.h"
#include "devices/legacy/serial.h"
#include "fuzz_support.h"
#include "pci/config_space.h"
#include "pci/msix_table.h"
#include "state/state_blob.h"
#include "virtio/transport/mmio_transport.h"

namespace {

using skiff::Result;
using skiff::fuzz::check;
using skiff::state::StateBlob;
namespace virtio = skiff::virtio;

constexpr uint64_t kRamBase = 0x10000;
constexpr uint64_t kRamSize = 0x10000;

// A virtio device with two queues and nothing behind them: the transport core's restore
// (status, features, queues, activation) is what is fuzzed.
class FuzzDevice : public virtio::VirtioDevice {
 public:
  uint32_t device_type() const override { return virtio::kDeviceIdEntropy; }
  std::vector<uint16_t> queue_max_sizes() const override { return {16, 8}; }
  uint64_t device_features() const override {
    return virtio::feature_mask(virtio::kFeatureVersion1) | virtio::feature_mask(virtio::kFeatureRingEventIdx);
  }
  uint32_t config_size() const override { return 4; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override {
    virtio::read_config_bytes(config_, offset, data);
  }
  void write_config(uint64_t, std::span<const uint8_t>) override {}
  Result<void> activate(uint64_t, std::vector<virtio::Queue*> queues,
                        std::shared_ptr<virtio::VirtioInterrupt>) override {
    queues_ = std::move(queues);
    return {};
  }
  void notify_queue(uint16_t) override {}
  void reset() override { queues_.clear(); }
  Result<void> pause() override { return {}; }
  Result<void> resume() override { return {}; }
  Result<StateBlob> save_state() const override { return StateBlob("fuzz-device", 1); }
  Result<void> restore_state(const StateBlob& blob) override { return blob.expect("fuzz-device", 1); }

  // Pops and returns every chain of the restored queues: the progress a blob claims must
  // not take the queue outside RAM.
  void drain(const skiff::GuestMemory& memory) {
    for (virtio::Queue* queue : queues_) {
      for (int i = 0; i < 64; ++i) {
        auto chain = queue->pop();
        if (!chain) break;
        for (const auto& buffer : chain->readable()) check(memory.contains(buffer.addr, buffer.len));
        for (const auto& buffer : chain->writable()) check(memory.contains(buffer.addr, buffer.len));
        queue->add_used(std::move(*chain), 0);
      }
    }
  }

 private:
  std::vector<uint8_t> config_ = {1, 2, 3, 4};
  std::vector<virtio::Queue*> queues_;
};

// One kind of stateful object: how to build a fresh one, drive a model one into a
// non-trivial state, save it, and restore a blob into a fresh one (then save it again).
struct Kind {
  const char* name;
  std::function<Result<StateBlob>()> model_blob;
  // Restores into a fresh object; on success returns the object's state saved again.
  std::function<Result<StateBlob>(const StateBlob&)> restore;
};

template <typename T>
Result<StateBlob> restore_into(T& object, const StateBlob& blob) {
  if (auto r = object.restore_state(blob); !r) return std::unexpected(r.error());
  return object.save_state();
}

void write_u8(skiff::BusDevice& device, uint64_t offset, uint8_t value) { device.write(offset, std::span(&value, 1)); }

struct Machine {
  std::vector<uint8_t> ram = std::vector<uint8_t>(kRamSize, 0);
  skiff::GuestMemory memory;
  Machine() {
    skiff::GuestRegion region{kRamBase, ram.size(), ram.data()};
    memory = skiff::GuestMemory::from_host_buffers(std::span(&region, 1));
  }
};

skiff::pci::ConfigSpace make_config_space(std::shared_ptr<skiff::pci::MsixTable> table) {
  skiff::pci::ConfigSpace space(skiff::pci::ConfigHeader{.vendor_id = 0x1af4, .device_id = 0x1044});
  (void)space.add_bar(skiff::pci::BarInfo{.index = 0, .size = 0x4000, .kind = skiff::pci::BarKind::kMemory64});
  if (table) (void)space.add_msix_capability(table);
  return space;
}

std::shared_ptr<skiff::pci::MsixTable> make_msix() {
  auto table = skiff::pci::MsixTable::create(
      skiff::pci::MsixLayout{.vectors = 3, .table_bar = 0, .table_offset = 0x3000, .pba_bar = 0, .pba_offset = 0x3800},
      [](uint64_t, uint32_t) {});
  return table ? *table : nullptr;
}

const std::vector<Kind>& kinds() {
  static const std::vector<Kind> all = {
      {"virtqueue",
       [] {
         Machine m;
         virtio::Queue queue(16);
         queue.set_size(8);
         queue.set_desc_table_address(kRamBase);
         queue.set_avail_ring_address(kRamBase + 0x1000);
         queue.set_used_ring_address(kRamBase + 0x2000);
         queue.set_ready(true);
         if (auto r = queue.activate(m.memory, virtio::feature_mask(virtio::kFeatureRingEventIdx)); !r) {
           return Result<StateBlob>(std::unexpected(r.error()));
         }
         return Result<StateBlob>(queue.save_state());
       },
       [](const StateBlob& blob) -> Result<StateBlob> {
         Machine m;
         virtio::Queue queue(16);
         if (auto r = queue.restore_state(blob, m.memory, virtio::feature_mask(virtio::kFeatureRingEventIdx)); !r) {
           return std::unexpected(r.error());
         }
         for (int i = 0; i < 64; ++i) {
           auto chain = queue.pop();
           if (!chain) break;
           queue.add_used(std::move(*chain), 0);
         }
         return queue.save_state();
       }},
      {"serial",
       [] {
         skiff::Serial serial(nullptr, {});
         write_u8(serial, 1, 0x0f);  // IER
         write_u8(serial, 3, 0x83);  // DLAB
         write_u8(serial, 0, 0x01);
         write_u8(serial, 3, 0x03);
         const uint8_t input[] = {'h', 'i'};
         serial.enqueue_input(input);
         return serial.save_state();
       },
       [](const StateBlob& blob) {
         skiff::Serial serial(nullptr, {});
         return restore_into(serial, blob);
       }},
      {"i8042",
       [] {
         skiff::I8042 i8042(nullptr, {});
         return i8042.save_state();
       },
       [](const StateBlob& blob) {
         skiff::I8042 i8042(nullptr, {});
         return restore_into(i8042, blob);
       }},
      {"cmos-rtc",
       [] {
         skiff::CmosRtc rtc;
         write_u8(rtc, 0, 0x0b);
         write_u8(rtc, 1, 0x06);
         return rtc.save_state();
       },
       [](const StateBlob& blob) {
         skiff::CmosRtc rtc;
         return restore_into(rtc, blob);
       }},
      {"acpi-pm",
       [] {
         skiff::AcpiPmDevice pm({}, nullptr);
         pm.raise_status(skiff::kPm1PowerButtonStatus);
         return pm.save_state();
       },
       [](const StateBlob& blob) {
         skiff::AcpiPmDevice pm({}, nullptr);
         return restore_into(pm, blob);
       }},
      {"msix-table",
       [] { return make_msix()->save_state(); },
       [](const StateBlob& blob) {
         auto table = make_msix();
         return restore_into(*table, blob);
       }},
      {"pci-config",
       [] {
         auto table = make_msix();
         auto space = make_config_space(table);
         space.write(skiff::pci::kRegCommand, 2, skiff::pci::kCommandMemorySpace);
         return Result<StateBlob>(space.save_state());
       },
       [](const StateBlob& blob) -> Result<StateBlob> {
         auto table = make_msix();
         auto space = make_config_space(table);
         if (auto r = space.restore_state(blob); !r) return std::unexpected(r.error());
         return space.save_state();
       }},
      {"virtio-transport",
       [] {
         Machine m;
         auto device = std::make_shared<FuzzDevice>();
         auto transport = virtio::MmioTransport::create(device, m.memory, 0xf0000000, nullptr, nullptr, "fuzz");
         auto write32 = [&](uint64_t offset, uint32_t value) {
           transport->write(offset, std::span(reinterpret_cast<const uint8_t*>(&value), 4));
         };
         write32(virtio::kMmioStatus, virtio::kStatusAcknowledge | virtio::kStatusDriver);
         write32(virtio::kMmioDriverFeaturesSel, 1);
         write32(virtio::kMmioDriverFeatures, 1);
         write32(virtio::kMmioStatus, virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk);
         write32(virtio::kMmioQueueNum, 8);
         write32(virtio::kMmioQueueDescLow, kRamBase);
         write32(virtio::kMmioQueueDriverLow, kRamBase + 0x1000);
         write32(virtio::kMmioQueueDeviceLow, kRamBase + 0x2000);
         write32(virtio::kMmioQueueReady, 1);
         write32(virtio::kMmioStatus, virtio::kStatusAcknowledge | virtio::kStatusDriver |
                                          virtio::kStatusFeaturesOk | virtio::kStatusDriverOk);
         if (auto r = transport->pause(); !r) return Result<StateBlob>(std::unexpected(r.error()));
         return transport->save_state();
       },
       [](const StateBlob& blob) -> Result<StateBlob> {
         Machine m;
         auto device = std::make_shared<FuzzDevice>();
         auto transport = virtio::MmioTransport::create(device, m.memory, 0xf0000000, nullptr, nullptr, "fuzz");
         if (auto r = transport->restore_state(blob); !r) return std::unexpected(r.error());
         device->drain(m.memory);
         if (auto r = transport->pause(); !r) return std::unexpected(r.error());
         return transport->save_state();
       }},
  };
  return all;
}

// A successful restore must give a blob that restores again.
void restore_and_check(const Kind& kind, const StateBlob& blob) {
  auto again = kind.restore(blob);
  if (!again) return;
  auto decoded = StateBlob::decode(again->encode());
  check(decoded.has_value());
  check(kind.restore(*decoded).has_value());
}

void mutate(StateBlob& blob, skiff::fuzz::FuzzReader& in) {
  const std::vector<std::string> names = blob.field_names();
  if (names.empty()) return;
  const std::string& field = names[in.u8() % names.size()];
  const uint8_t what = in.u8();
  const uint64_t value = in.u64();
  const uint8_t length = in.u8();
  switch (what % 6) {
    case 0: blob.put(field, value); break;
    case 1: blob.put_bool(field, (value & 1) != 0); break;
    case 2: blob.put_bytes(field, std::vector<uint8_t>(length, static_cast<uint8_t>(value))); break;
    case 3: blob.put_string(field, std::string(length, 'x')); break;
    case 4: blob.put_u64s(field, std::vector<uint64_t>(length % 8, value)); break;
    case 5: blob.put_blob(field, StateBlob(field, static_cast<uint32_t>(value % 3))); break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = (skiff::fuzz::quiet_logs_unless_verbose(), true);
  (void)quiet;
  if (size == 0) return 0;
  if ((data[0] & 0x80) != 0) {
    auto blob = StateBlob::decode(std::span(data + 1, size - 1));
    if (!blob) return 0;
    for (const Kind& kind : kinds()) restore_and_check(kind, *blob);
    return 0;
  }
  const Kind& kind = kinds()[data[0] % kinds().size()];
  auto model = kind.model_blob();
  check(model.has_value());
  StateBlob blob = *model;
  skiff::fuzz::FuzzReader in(data + 1, size - 1);
  for (int i = 0; i < 8 && !in.empty(); ++i) mutate(blob, in);
  restore_and_check(kind, blob);
  return 0;
}
