// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/mptable.h"

#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "arch/x86_64/layout.h"

namespace skiff::x86 {
namespace {

// Sizes and codes from the MultiProcessor Specification 1.4, chapter 4.
constexpr uint64_t kFloatingPointerSize = 16;
constexpr uint64_t kConfigHeaderSize = 44;
constexpr uint64_t kProcessorEntrySize = 20;
constexpr uint64_t kSmallEntrySize = 8;  // bus, I/O APIC, I/O and local interrupt entries
constexpr uint8_t kSpecRevision = 4;     // 1.4

constexpr uint8_t kEntryProcessor = 0;
constexpr uint8_t kEntryBus = 1;
constexpr uint8_t kEntryIoApic = 2;
constexpr uint8_t kEntryIoInterrupt = 3;
constexpr uint8_t kEntryLocalInterrupt = 4;

constexpr uint8_t kCpuEnabled = 1 << 0;
constexpr uint8_t kCpuBootstrap = 1 << 1;
constexpr uint8_t kLapicVersion = 0x14;  // integrated APIC, as KVM's in-kernel LAPIC reports
constexpr uint32_t kCpuSignature = 0x600;  // family 6; informational only
constexpr uint32_t kCpuFeatureFpu = 1 << 0;
constexpr uint32_t kCpuFeatureApic = 1 << 9;
constexpr uint8_t kIoApicVersion = 0x11;  // 24-pin IOAPIC, as KVM's in-kernel IOAPIC reports
constexpr uint8_t kIoApicEnabled = 1 << 0;

constexpr uint8_t kInterruptInt = 0;  // vectored interrupt, through the IOAPIC
constexpr uint8_t kInterruptNmi = 1;
constexpr uint8_t kInterruptExtInt = 3;  // 8259-compatible
// Interrupt flags (tables 4-10/4-12): polarity bits 1-0, trigger bits 3-2; 0 = conforms to
// the bus (ISA: edge, active high).
constexpr uint16_t kFlagsConforming = 0x0000;
constexpr uint16_t kFlagsLevelActiveHigh = 0x000d;
constexpr uint16_t kFlagsLevelActiveLow = 0x000f;  // PCI INTx

constexpr uint8_t kPciBusId = 0;
constexpr uint8_t kIsaBusId = 1;
constexpr uint8_t kIsaIrqs = 16;
constexpr uint8_t kPitIrq = 0;
constexpr uint8_t kPitPin = 2;      // the PIT's output is wired to IOAPIC pin 2
constexpr uint8_t kCascadeIrq = 2;  // the slave 8259's cascade: no device, pin 2 taken by IRQ0
constexpr uint8_t kAllLocalApics = 0xff;
constexpr uint8_t kAcpiSciIsaIrq = 9;  // kAcpiSciIrq, level-triggered like in the MADT
static_assert(kAcpiSciIrq == kAcpiSciIsaIrq);

// ISA IRQs that get an I/O interrupt entry: all but the cascade.
constexpr uint64_t kIoInterruptEntries = kIsaIrqs - 1;
constexpr uint64_t kFixedEntries = 2 /* buses */ + 1 /* IOAPIC */ + kIoInterruptEntries +
                                   2 /* local interrupts */;

class Writer {
 public:
  void u8(uint8_t value) { bytes_.push_back(value); }
  void u16(uint16_t value) { put(value, 2); }
  void u32(uint32_t value) { put(value, 4); }
  void text(std::string_view value, size_t width) {
    for (size_t i = 0; i < width; ++i) bytes_.push_back(i < value.size() ? value[i] : ' ');
  }
  void zeros(size_t count) { bytes_.insert(bytes_.end(), count, 0); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  void put(uint64_t value, size_t width) {
    for (size_t i = 0; i < width; ++i) bytes_.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }
  std::vector<uint8_t> bytes_;
};

uint8_t checksum(std::span<const uint8_t> bytes) {
  uint8_t sum = 0;
  for (uint8_t b : bytes) sum = static_cast<uint8_t>(sum + b);
  return static_cast<uint8_t>(0x100 - sum);
}

void io_interrupt(Writer& w, uint8_t irq, uint8_t ioapic_id, uint8_t pin, uint16_t flags,
                  uint8_t bus = kIsaBusId) {
  w.u8(kEntryIoInterrupt);
  w.u8(kInterruptInt);
  w.u16(flags);
  w.u8(bus);
  w.u8(irq);
  w.u8(ioapic_id);
  w.u8(pin);
}

void local_interrupt(Writer& w, uint8_t type, uint8_t lint) {
  w.u8(kEntryLocalInterrupt);
  w.u8(type);
  w.u16(kFlagsConforming);
  w.u8(kIsaBusId);
  w.u8(0);  // source bus IRQ
  w.u8(kAllLocalApics);
  w.u8(lint);
}

}  // namespace

uint64_t mp_table_size(uint32_t vcpus, size_t pci_interrupts) {
  return kFloatingPointerSize + kConfigHeaderSize + kProcessorEntrySize * vcpus +
         kSmallEntrySize * (kFixedEntries + pci_interrupts);
}

uint32_t mp_table_max_vcpus(size_t pci_interrupts) {
  const uint64_t fixed = mp_table_size(0, pci_interrupts);
  if (fixed >= kMpTableMaxSize) return 0;
  return static_cast<uint32_t>((kMpTableMaxSize - fixed) / kProcessorEntrySize);
}

Result<void> write_mp_table(const GuestMemory& mem, uint32_t vcpus,
                            std::span<const MpPciInterrupt> pci_interrupts) {
  const uint32_t max_vcpus = mp_table_max_vcpus(pci_interrupts.size());
  if (vcpus == 0 || vcpus > max_vcpus) {
    return config_error(fmt::format(
        "MP table: {} vCPUs and {} PCI interrupts; the {:#x}-byte area at {:#x} holds 1 to {} vCPUs",
        vcpus, pci_interrupts.size(), kMpTableMaxSize, kMpTableAddr, max_vcpus));
  }
  for (const MpPciInterrupt& route : pci_interrupts) {
    if (route.slot > 31 || route.pin > 3 || route.ioapic_pin >= kIoapicPins) {
      return internal_error(fmt::format("MP table: PCI slot {} pin {} -> IOAPIC pin {} is out of range",
                                        route.slot, route.pin, route.ioapic_pin));
    }
  }
  const auto ioapic_id = static_cast<uint8_t>(vcpus);
  const uint64_t config_addr = kMpTableAddr + kFloatingPointerSize;

  // Configuration table header (MP spec 1.4 section 4.2), entries following it in the
  // order of their types.
  Writer config;
  config.text("PCMP", 4);
  config.u16(0);  // base table length, patched below
  config.u8(kSpecRevision);
  config.u8(0);  // checksum, patched below
  config.text("SKIFF", 8);
  config.text("SKIFFVM", 12);
  config.u32(0);  // OEM table pointer
  config.u16(0);  // OEM table size
  config.u16(static_cast<uint16_t>(vcpus + kFixedEntries + pci_interrupts.size()));
  config.u32(static_cast<uint32_t>(kLapicAddr));
  config.u16(0);  // extended table length
  config.u8(0);   // extended table checksum
  config.u8(0);   // reserved

  for (uint32_t cpu = 0; cpu < vcpus; ++cpu) {
    config.u8(kEntryProcessor);
    config.u8(static_cast<uint8_t>(cpu));  // local APIC id
    config.u8(kLapicVersion);
    config.u8(static_cast<uint8_t>(kCpuEnabled | (cpu == 0 ? kCpuBootstrap : 0)));
    config.u32(kCpuSignature);
    config.u32(kCpuFeatureFpu | kCpuFeatureApic);
    config.zeros(8);
  }
  config.u8(kEntryBus);
  config.u8(kPciBusId);
  config.text("PCI", 6);
  config.u8(kEntryBus);
  config.u8(kIsaBusId);
  config.text("ISA", 6);

  config.u8(kEntryIoApic);
  config.u8(ioapic_id);
  config.u8(kIoApicVersion);
  config.u8(kIoApicEnabled);
  config.u32(static_cast<uint32_t>(kIoapicAddr));

  for (uint8_t irq = 0; irq < kIsaIrqs; ++irq) {
    if (irq == kCascadeIrq) continue;
    const uint8_t pin = irq == kPitIrq ? kPitPin : irq;
    const uint16_t flags = irq == kAcpiSciIsaIrq ? kFlagsLevelActiveHigh : kFlagsConforming;
    io_interrupt(config, irq, ioapic_id, pin, flags);
  }
  for (const MpPciInterrupt& route : pci_interrupts) {
    io_interrupt(config, static_cast<uint8_t>(route.slot << 2 | route.pin), ioapic_id, route.ioapic_pin,
                 kFlagsLevelActiveLow, kPciBusId);
  }
  // Virtual wire mode through the local APICs (MP spec 1.4 section 3.6.2.2).
  local_interrupt(config, kInterruptExtInt, 0);
  local_interrupt(config, kInterruptNmi, 1);

  std::vector<uint8_t>& table = config.bytes();
  table[4] = static_cast<uint8_t>(table.size());
  table[5] = static_cast<uint8_t>(table.size() >> 8);
  table[7] = checksum(table);

  // MP floating pointer structure (MP spec 1.4 section 4.1).
  Writer floating;
  floating.text("_MP_", 4);
  floating.u32(static_cast<uint32_t>(config_addr));
  floating.u8(1);  // length in 16-byte paragraphs
  floating.u8(kSpecRevision);
  floating.u8(0);     // checksum, patched below
  floating.u8(0);     // feature byte 1: 0 = a configuration table is present
  floating.u8(0);     // feature byte 2: IMCRP clear, virtual wire mode
  floating.zeros(3);  // feature bytes 3-5
  std::vector<uint8_t>& pointer = floating.bytes();
  pointer[10] = checksum(pointer);

  std::vector<uint8_t> image = pointer;
  image.insert(image.end(), table.begin(), table.end());
  if (image.size() != mp_table_size(vcpus, pci_interrupts.size())) {
    return internal_error(fmt::format("MP table: built {} bytes, expected {}", image.size(),
                                      mp_table_size(vcpus, pci_interrupts.size())));
  }
  if (auto ok = mem.write(kMpTableAddr, image); !ok) {
    return std::unexpected(ok.error().with_context(
        fmt::format("writing the {}-byte MP table at {:#x}", image.size(), kMpTableAddr)));
  }
  return {};
}

}  // namespace skiff::x86
