// SPDX-License-Identifier: Apache-2.0
// PCI and virtio-pci (virtio 1.2 §4.1, modern interface) from the guest's side, only with
// skiff.virtio=1: bus 0 is listed through configuration mechanism #1 (PCI 3.0 §3.2.2.3.2,
// ports 0xcf8/0xcfc), and the first non-transitional entropy device (1af4:1044, §4.1.2.1)
// is found the way a driver finds it (the vendor-specific capabilities of §4.1.4 and the
// MSI-X capability), placed, initialised (§3.1.1, §4.1.5.1), given one round of two
// requests on its requestq (the same round as the virtio-mmio test, virtio.c), and reset.
//
// Interrupts stay off (RFLAGS.IF = 0): the guest polls the used ring, then checks that the
// queue's MSI-X message reached the local APIC by reading its IRR, which a fixed-delivery
// MSI sets whatever IF is (the APIC only has to be software-enabled).
//
// A second round runs with MSI-X disabled, the way a driver without MSI-X (Linux with
// pci=nomsi) works: the device's INTA# is looked up in the MP table's PCI interrupt entries
// (the same routes ACPI's _PRT gives), the IOAPIC pin is programmed level-triggered, and
// after the round the vector must be pending in the IRR and the ISR must read 1 (queue
// interrupt), which deasserts the line.
//
// BAR placement: the VMM assigns BARs like firmware, a 64-bit BAR possibly above 4 GiB,
// where this guest has no page tables. Such a BAR is moved to kBarRelocation, inside the
// 32-bit PCI window, before memory decoding is turned on.
#include "guest.h"
#include "virtio_dev.h"

enum {
  // ---- configuration mechanism #1
  kConfigAddressPort = 0xcf8,
  kConfigDataPort = 0xcfc,
  kConfigEnable = 0x80000000u,
  kSlots = 32,
  // ---- type 0 configuration header (PCI 3.0 §6.1)
  kCfgVendorDevice = 0x00,
  kCfgCommand = 0x04,  // 16-bit; Status is the upper half of the dword
  kCfgClassRevision = 0x08,
  kCfgBar0 = 0x10,
  kCfgCapabilityPointer = 0x34,
  kCommandMemory = 1 << 1,
  kCommandBusMaster = 1 << 2,
  kStatusCapabilityList = 1 << 4,
  kBarIo = 1,
  kBarType64 = 2 << 1,
  kBarTypeMask = 3 << 1,
  kMaxBars = 6,
  kCapabilityFirst = 0x40,  // capabilities live after the 64-byte header
  kMaxCapabilities = 48,    // (256 - 64) / 4: bounds a looping list
  kCapIdMsix = 0x11,
  kCapIdVendor = 0x09,
  // ---- MSI-X (PCI 3.0 §6.8.2)
  kMsixControl = 2,  // 16-bit Message Control
  kMsixTable = 4,    // BIR (bits 2:0) | offset
  kMsixPba = 8,
  kMsixEnable = 1 << 15,
  kMsixFunctionMask = 1 << 14,
  kMsixEntrySize = 16,
  kMsixEntryVectorControl = 12,
  kMsiAddressBase = 0xfee00000u,  // Intel SDM vol. 3 §11.11.1: physical destination mode
  kConfigVectorIndex = 0,         // table entries the driver uses
  kQueueVectorIndex = 1,
  kConfigVector = 0x40,  // interrupt vectors they carry (fixed delivery, edge)
  kQueueVector = 0x41,
  // ---- virtio-pci
  kVirtioVendorId = 0x1af4,
  kVirtioRngDeviceId = 0x1044,  // 0x1040 + device type 4 (§4.1.2.1)
  kVirtioBlkDeviceId = 0x1042,  // 0x1040 + device type 2
  kVirtioNetDeviceId = 0x1041,  // 0x1040 + device type 1
  kVirtioBalloonDeviceId = 0x1045,  // 0x1040 + device type 5
  kVirtioVsockDeviceId = 0x1053,    // 0x1040 + device type 19
  kCapCommon = 1,
  kCapNotify = 2,
  kCapIsr = 3,
  kCapDevice = 4,
  kCapTypes = kVirtioPciCapTypes,
  kCapMinLength = 16,        // struct virtio_pci_cap
  kNotifyCapMinLength = 20,  // + notify_off_multiplier
  kCommonCfgLength = 0x38,
  // struct virtio_pci_common_cfg (§4.1.4.3)
  kCommonDeviceFeatureSelect = 0x00,
  kCommonDeviceFeature = 0x04,
  kCommonDriverFeatureSelect = 0x08,
  kCommonDriverFeature = 0x0c,
  kCommonConfigMsixVector = 0x10,
  kCommonNumQueues = 0x12,
  kCommonDeviceStatus = 0x14,
  kCommonQueueSelect = 0x16,
  kCommonQueueSize = 0x18,
  kCommonQueueMsixVector = 0x1a,
  kCommonQueueEnable = 0x1c,
  kCommonQueueNotifyOff = 0x1e,
  kCommonQueueDesc = 0x20,
  kCommonQueueDriver = 0x28,
  kCommonQueueDevice = 0x30,
  // §2.1 device status bits
  kStatusAcknowledge = 1,
  kStatusDriver = 2,
  kStatusDriverOk = 4,
  kStatusFeaturesOk = 8,
  kStatusFailed = 128,
  kResetPolls = 1000,
  kIrrPolls = 1000,  // IRR reads once the buffers are used (the MSI follows used->idx)
  // ---- local APIC (Intel SDM vol. 3 §11.4, §11.8.4, §11.9)
  kMsrApicBase = 0x1b,
  kApicBaseX2Apic = 1 << 10,
  kApicBaseEnable = 1 << 11,
  kApicRegId = 0x20,
  kApicRegSvr = 0xf0,
  kApicRegIrr = 0x200,  // 8 registers, 0x10 apart
  kApicSvrEnable = 1 << 8,
  kApicSpuriousVector = 0xff,
  kMsrX2ApicId = 0x802,
  kMsrX2ApicSvr = 0x80f,
  kMsrX2ApicIrr = 0x810,
  // ---- INTx through the IOAPIC (82093AA datasheet §3.2.4; MP spec 1.4 §4.3.4)
  kCfgInterruptPin = 0x3d,
  kCommandIntxDisable = 1 << 10,
  kIntxVector = 0x42,
  kIoapicRegSelect = 0x00,
  kIoapicWindow = 0x10,
  kIoapicRedirection = 0x10,  // two registers per pin
  kRteLevel = 1 << 15,
  kRteActiveLow = 1 << 13,
  kRteMasked = 1 << 16,
  kMpScanStart = 0x9fc00,  // the last KiB of base memory, where skiff puts the MP table
  kMpScanEnd = 0xa0000,
  kMpEntryProcessor = 0,
  kMpEntryBus = 1,
  kMpEntryIoApic = 2,
  kMpEntryIoInterrupt = 3,
  kMpMaxEntries = 512,
};

static const u64 kFeatureVersion1 = 1ull << 32;  // §6.1 VIRTIO_F_VERSION_1
// Where a BAR the guest cannot reach (above 4 GiB) is moved: the start of skiff's 32-bit
// PCI window (layout.h kMmio32WindowStart); QEMU's pc has no 1af4:1044 device by default.
static const u64 kBarRelocation = 0xc0000000ull;

// ---- configuration mechanism #1 -----------------------------------------------------------

static void config_select(u32 slot, u32 offset) {
  outl(kConfigAddressPort, kConfigEnable | slot << 11 | (offset & 0xfc));
}
u32 pci_config_read32(u32 slot, u32 offset) {
  config_select(slot, offset);
  return inl(kConfigDataPort);
}
void pci_config_write32(u32 slot, u32 offset, u32 value) {
  config_select(slot, offset);
  outl(kConfigDataPort, value);
}
u16 pci_config_read16(u32 slot, u32 offset) {
  config_select(slot, offset);
  return inw((u16)(kConfigDataPort + (offset & 2)));
}
void pci_config_write16(u32 slot, u32 offset, u16 value) {
  config_select(slot, offset);
  outw((u16)(kConfigDataPort + (offset & 2)), value);
}

// ---- reporting ------------------------------------------------------------------------------

static void rng_line_begin(void) {
  line_begin();
  put_str("virtio-pci-rng ");
}

// "error <prefix> <what>=<dec>": the prefix names the driver (virtio-pci-rng, virtio-blk).
static void prefixed_error(const char* prefix, const char* what, u64 value) {
  line_begin();
  put_str("error ");
  put_str(prefix);
  put_char(' ');
  put_str(what);
  put_char('=');
  put_dec(value);
  line_end();
}

static void pci_error(const char* what, u64 value) { prefixed_error("virtio-pci-rng", what, value); }

// ---- capabilities ---------------------------------------------------------------------------

void virtio_pci_read_capabilities(u32 slot, VirtioPciCaps* caps) {
  memset(caps, 0, sizeof(*caps));
  if (!((pci_config_read32(slot, kCfgCommand) >> 16) & kStatusCapabilityList)) return;
  u32 pointer = pci_config_read32(slot, kCfgCapabilityPointer) & 0xfc;
  for (u32 n = 0; n < kMaxCapabilities && pointer >= kCapabilityFirst; ++n) {
    u32 header = pci_config_read32(slot, pointer);
    u32 id = header & 0xff;
    if (id == kCapIdVendor) {
      u32 cap_length = (header >> 16) & 0xff;
      u32 type = header >> 24;
      u32 bar = pci_config_read32(slot, pointer + 4) & 0xff;
      u32 offset = pci_config_read32(slot, pointer + 8);
      u32 length = pci_config_read32(slot, pointer + 12);
      line_begin();
      put_str("virtio-pci cap type=");
      put_dec(type);
      put_str(" bar=");
      put_dec(bar);
      put_str(" offset=");
      put_hex(offset);
      put_str(" length=");
      put_hex(length);
      int usable = cap_length >= kCapMinLength && bar < kMaxBars && type > 0 && type < kCapTypes;
      if (type == kCapNotify) {
        if (cap_length < kNotifyCapMinLength) {
          usable = 0;
        } else if (usable && !caps->regions[type].present) {
          caps->notify_multiplier = pci_config_read32(slot, pointer + 16);
        }
        put_str(" notify-multiplier=");
        put_dec(caps->notify_multiplier);
      }
      line_end();
      // §4.1.4.1: unknown types and reserved BAR numbers are ignored; the first of a type
      // is the one the device prefers.
      if (usable && !caps->regions[type].present) {
        caps->regions[type] = (VirtioPciRegion){1, bar, offset, length};
      }
    } else if (id == kCapIdMsix && caps->msix_cap == 0) {
      caps->msix_cap = pointer;
      caps->msix_vectors = ((header >> 16) & 0x7ff) + 1;
      u32 table = pci_config_read32(slot, pointer + kMsixTable);
      u32 pba = pci_config_read32(slot, pointer + kMsixPba);
      caps->table_bar = table & 7;
      caps->table_offset = table & ~7u;
      caps->pba_bar = pba & 7;
      caps->pba_offset = pba & ~7u;
      line_begin();
      put_str("virtio-pci msix vectors=");
      put_dec(caps->msix_vectors);
      put_str(" table-bar=");
      put_dec(caps->table_bar);
      put_str(" table-offset=");
      put_hex(caps->table_offset);
      put_str(" pba-bar=");
      put_dec(caps->pba_bar);
      put_str(" pba-offset=");
      put_hex(caps->pba_offset);
      line_end();
    }
    pointer = (header >> 8) & 0xfc;
  }
}

// ---- BAR ------------------------------------------------------------------------------------

// Sizes memory BAR `index` (decode must be off) and returns the address the guest will use:
// the assigned one if it is below 4 GiB, else `relocation`. 0 after reporting a problem (as
// "error <error_prefix> ...").
u64 virtio_pci_place_bar(u32 slot, u32 index, u64 relocation, const char* error_prefix, u64* size_out) {
  u32 low_offset = kCfgBar0 + 4 * index;
  u32 low = pci_config_read32(slot, low_offset);
  int is64 = (low & kBarTypeMask) == kBarType64;
  if ((low & kBarIo) || (is64 && index + 1 >= kMaxBars)) {
    prefixed_error(error_prefix, "bar-type", low & 0xf);
    return 0;
  }
  u32 high = is64 ? pci_config_read32(slot, low_offset + 4) : 0;
  u64 assigned = ((u64)high << 32) | (low & ~0xfu);
  // PCI 3.0 §6.2.5.1: write all ones, read back the writable address bits.
  pci_config_write32(slot, low_offset, 0xffffffffu);
  u64 mask = pci_config_read32(slot, low_offset) & ~0xfu;
  if (is64) {
    pci_config_write32(slot, low_offset + 4, 0xffffffffu);
    mask |= (u64)pci_config_read32(slot, low_offset + 4) << 32;
  } else {
    mask |= 0xffffffff00000000ull;
  }
  u64 size = ~mask + 1;
  u64 address = assigned;
  if (mask == 0 || !phys_range_mapped(assigned, size)) address = relocation;
  if (mask == 0 || (address & (size - 1)) != 0) {
    prefixed_error(error_prefix, "bar-size", size);
    return 0;
  }
  pci_config_write32(slot, low_offset, (u32)address);
  if (is64) pci_config_write32(slot, low_offset + 4, (u32)(address >> 32));
  u64 now = pci_config_read32(slot, low_offset) & ~0xfu;
  if (is64) now |= (u64)pci_config_read32(slot, low_offset + 4) << 32;
  line_begin();
  put_str("virtio-pci bar");
  put_dec(index);
  put_char('=');
  put_hex(now);
  put_str(" assigned=");
  put_hex(assigned);
  put_str(" size=");
  put_hex(size);
  line_end();
  if (now != address) {
    prefixed_error(error_prefix, "bar-readback", now);
    return 0;
  }
  *size_out = size;
  return address;
}

int virtio_pci_region_fits(const char* error_prefix, const char* what, u32 bar, u32 offset, u64 length,
                           u32 want_bar, u64 bar_size, u64 min_length) {
  if (bar != want_bar || length < min_length || offset > bar_size || length > bar_size - offset) {
    line_begin();
    put_str("error ");
    put_str(error_prefix);
    put_str(" region=");
    put_str(what);
    put_str(" bar=");
    put_dec(bar);
    put_str(" offset=");
    put_hex(offset);
    put_str(" length=");
    put_hex(length);
    line_end();
    return 0;
  }
  return 1;
}

// ---- local APIC -----------------------------------------------------------------------------

typedef struct {
  int usable;
  int x2apic;
  u64 base;
  u32 id;
} Lapic;

// Software-enables the APIC (SVR bit 8) so that it accepts fixed interrupts into the IRR.
static void lapic_prepare(Lapic* lapic) {
  u64 msr = rdmsr(kMsrApicBase);
  lapic->x2apic = (msr & kApicBaseX2Apic) != 0;
  lapic->base = msr & 0xffffff000ull;
  lapic->usable = (msr & kApicBaseEnable) && (lapic->x2apic || phys_range_mapped(lapic->base, 0x1000));
  if (!lapic->usable) return;
  if (lapic->x2apic) {
    lapic->id = (u32)rdmsr(kMsrX2ApicId);
    u64 svr = rdmsr(kMsrX2ApicSvr);
    if (!(svr & kApicSvrEnable)) wrmsr(kMsrX2ApicSvr, kApicSvrEnable | kApicSpuriousVector);
  } else {
    lapic->id = mmio_read32(lapic->base + kApicRegId) >> 24;
    u32 svr = mmio_read32(lapic->base + kApicRegSvr);
    if (!(svr & kApicSvrEnable)) mmio_write32(lapic->base + kApicRegSvr, kApicSvrEnable | kApicSpuriousVector);
  }
}

static int lapic_irr_bit(const Lapic* lapic, u32 vector) {
  if (!lapic->usable) return 0;
  u32 word = lapic->x2apic ? (u32)rdmsr(kMsrX2ApicIrr + vector / 32)
                           : mmio_read32(lapic->base + kApicRegIrr + 0x10 * (vector / 32));
  return (word >> (vector % 32)) & 1;
}

// ---- the MP table's PCI interrupt routes ----------------------------------------------------

typedef struct {
  int found;
  u32 ioapic_pin;
  u64 ioapic_address;
} IntxRoute;

// Finds the I/O interrupt entry for (PCI bus, slot, pin) and the IOAPIC it names.
static IntxRoute mp_intx_route(u32 slot, u32 pin) {
  IntxRoute route = {0, 0, 0};
  u64 floating = 0;
  for (u64 at = kMpScanStart; at < kMpScanEnd; at += 16) {
    if (read8(at) == '_' && read8(at + 1) == 'M' && read8(at + 2) == 'P' && read8(at + 3) == '_') {
      floating = at;
      break;
    }
  }
  if (floating == 0) return route;
  u64 config = mmio_read32(floating + 4);
  if (config == 0 || !phys_range_mapped(config, 44)) return route;
  u32 length = read16(config + 4);
  u32 count = read16(config + 34);
  u64 entry = config + 44;
  u64 end = config + length;
  u32 pci_bus = 0xff;
  u64 ioapic_address = 0;
  u32 ioapic_id = 0xff;
  for (u32 i = 0; i < count && i < kMpMaxEntries && entry < end; ++i) {
    u32 type = read8(entry);
    if (type == kMpEntryProcessor) {
      entry += 20;
      continue;
    }
    if (type == kMpEntryBus && read8(entry + 2) == 'P' && read8(entry + 3) == 'C' && read8(entry + 4) == 'I') {
      pci_bus = read8(entry + 1);
    } else if (type == kMpEntryIoApic) {
      ioapic_id = read8(entry + 1);
      ioapic_address = mmio_read32(entry + 4);
    } else if (type == kMpEntryIoInterrupt && read8(entry + 4) == pci_bus &&
               read8(entry + 5) == (slot << 2 | pin) && read8(entry + 6) == ioapic_id) {
      route.found = 1;
      route.ioapic_pin = read8(entry + 7);
    }
    entry += 8;
  }
  route.ioapic_address = ioapic_address;
  if (ioapic_address == 0 || !phys_range_mapped(ioapic_address, 0x20)) route.found = 0;
  return route;
}

static void ioapic_write(u64 base, u32 reg, u32 value) {
  mmio_write32(base + kIoapicRegSelect, reg);
  mmio_write32(base + kIoapicWindow, value);
}

// ---- the entropy device ---------------------------------------------------------------------

typedef struct {
  u32 slot;
  u64 common;  // guest-physical addresses inside the placed BAR
  u64 notify;
  u32 notify_length;
  u32 notify_multiplier;
  u64 table;
  u64 isr;
  u32 msix_cap;
  u32 msix_vectors;
} RngDevice;

// §2.4.2: a reset is complete when device_status reads back as 0.
static u32 reset_device(const RngDevice* dev) {
  mmio_write8(dev->common + kCommonDeviceStatus, 0);
  u32 status = read8(dev->common + kCommonDeviceStatus);
  for (u32 i = 0; i < kResetPolls && status != 0; ++i) status = read8(dev->common + kCommonDeviceStatus);
  return status;
}

static void set_status(const RngDevice* dev, u32 status) {
  mmio_write8(dev->common + kCommonDeviceStatus, (u8)status);
}

// 64-bit fields as two 32-bit halves (§4.1.3.1 allows it).
static void write_common64(const RngDevice* dev, u32 offset, u64 value) {
  mmio_write32(dev->common + offset, (u32)value);
  mmio_write32(dev->common + offset + 4, (u32)(value >> 32));
}

static void program_msix_entry(const RngDevice* dev, u32 index, u32 apic_id, u32 vector) {
  u64 entry = dev->table + (u64)index * kMsixEntrySize;
  mmio_write32(entry + 0, kMsiAddressBase | (apic_id & 0xff) << 12);
  mmio_write32(entry + 4, 0);
  mmio_write32(entry + 8, vector);  // fixed delivery, edge trigger
  mmio_write32(entry + kMsixEntryVectorControl, 0);  // unmasked
}

// §3.1.1 and §4.1.5.1 up to DRIVER_OK. Returns 0 after reporting why it gave up.
static int initialise(const RngDevice* dev, Lapic* lapic, int use_msix, u16* queue_size, u64* notify_address) {
  u32 status = reset_device(dev);
  if (status != 0) {
    pci_error("reset-status", status);
    return 0;
  }
  status = kStatusAcknowledge;
  set_status(dev, status);
  status |= kStatusDriver;
  set_status(dev, status);

  mmio_write32(dev->common + kCommonDeviceFeatureSelect, 0);
  u64 features = mmio_read32(dev->common + kCommonDeviceFeature);
  mmio_write32(dev->common + kCommonDeviceFeatureSelect, 1);
  features |= (u64)mmio_read32(dev->common + kCommonDeviceFeature) << 32;
  u64 accepted = features & kFeatureVersion1;  // nothing else: see virtio.c
  mmio_write32(dev->common + kCommonDriverFeatureSelect, 0);
  mmio_write32(dev->common + kCommonDriverFeature, (u32)accepted);
  mmio_write32(dev->common + kCommonDriverFeatureSelect, 1);
  mmio_write32(dev->common + kCommonDriverFeature, (u32)(accepted >> 32));
  status |= kStatusFeaturesOk;
  set_status(dev, status);
  int features_ok = (read8(dev->common + kCommonDeviceStatus) & kStatusFeaturesOk) != 0;
  rng_line_begin();
  put_str("device-features=");
  put_hex(features);
  put_str(" features-ok=");
  put_dec((u64)features_ok);
  line_end();
  if (!features_ok) {
    set_status(dev, (status & ~(u32)kStatusFeaturesOk) | kStatusFailed);
    return 0;
  }

  // MSI-X before the vectors are mapped, as Linux does: table entries, then Enable with
  // Function Mask clear (PCI 3.0 §6.8.2.3).
  lapic_prepare(lapic);
  u16 control = pci_config_read16(dev->slot, dev->msix_cap + kMsixControl);
  if (use_msix) {
    program_msix_entry(dev, kConfigVectorIndex, lapic->id, kConfigVector);
    program_msix_entry(dev, kQueueVectorIndex, lapic->id, kQueueVector);
    pci_config_write16(dev->slot, dev->msix_cap + kMsixControl,
                   (u16)((control | kMsixEnable) & ~kMsixFunctionMask));
    mmio_write16(dev->common + kCommonConfigMsixVector, kConfigVectorIndex);
  } else {
    pci_config_write16(dev->slot, dev->msix_cap + kMsixControl, (u16)(control & ~kMsixEnable));
  }
  u32 config_vector = read16(dev->common + kCommonConfigMsixVector);

  // §4.1.5.1.3: select the queue, check it is unused, size it, give it rings and a vector.
  u32 num_queues = read16(dev->common + kCommonNumQueues);
  mmio_write16(dev->common + kCommonQueueSelect, 0);
  u32 size_max = read16(dev->common + kCommonQueueSize);
  u32 enabled = read16(dev->common + kCommonQueueEnable);
  if (num_queues < 1 || enabled != 0 || size_max < 4) {
    if (num_queues < 1) pci_error("num-queues", num_queues);
    if (enabled != 0) pci_error("queue-enable", enabled);
    if (size_max < 4) pci_error("queue-size", size_max);  // two chains take 3 descriptors
    set_status(dev, status | kStatusFailed);
    return 0;
  }
  u32 size = kVirtqSizeWanted;
  while (size > size_max) size >>= 1;  // split queues: powers of two (§2.7)
  *queue_size = (u16)size;
  virtq_clear();
  mmio_write16(dev->common + kCommonQueueSize, (u16)size);
  write_common64(dev, kCommonQueueDesc, virtq_desc_address());
  write_common64(dev, kCommonQueueDriver, virtq_avail_address());
  write_common64(dev, kCommonQueueDevice, virtq_used_address());
  if (use_msix) mmio_write16(dev->common + kCommonQueueMsixVector, kQueueVectorIndex);
  u32 queue_vector = read16(dev->common + kCommonQueueMsixVector);
  u32 notify_off = read16(dev->common + kCommonQueueNotifyOff);
  // §4.1.4.4: the queue's notification address, which must lie inside the capability.
  u64 notify_offset = (u64)notify_off * dev->notify_multiplier;
  if (notify_offset + 2 > dev->notify_length) {
    pci_error("queue-notify-off", notify_off);
    set_status(dev, status | kStatusFailed);
    return 0;
  }
  *notify_address = dev->notify + notify_offset;
  mmio_write16(dev->common + kCommonQueueEnable, 1);

  status |= kStatusDriverOk;
  set_status(dev, status);
  status = read8(dev->common + kCommonDeviceStatus);
  rng_line_begin();
  put_str("num-queues=");
  put_dec(num_queues);
  put_str(" queue-size-max=");
  put_dec(size_max);
  put_str(" queue-size=");
  put_dec(size);
  put_str(" notify-off=");
  put_dec(notify_off);
  put_str(" config-vector=");
  put_dec(config_vector);
  put_str(" queue-vector=");
  put_dec(queue_vector);
  put_str(" status=");
  put_dec(status);
  line_end();
  return 1;
}

// The INTx round: MSI-X off, INTA# routed through the IOAPIC as the MP table says.
static void intx_round(const RngDevice* dev, Lapic* lapic, u32 poll_limit) {
  u32 pin = pci_config_read32(dev->slot, kCfgInterruptPin & ~3u) >> 8 & 0xff;  // 1 = INTA#
  IntxRoute route = pin >= 1 && pin <= 4 ? mp_intx_route(dev->slot, pin - 1) : (IntxRoute){0, 0, 0};
  if (!route.found) {
    line_begin();
    put_str("virtio-pci-intx pin=");
    put_dec(pin);
    put_str(" route=none");
    line_end();
    return;
  }
  // Level-triggered, active low, fixed delivery to this CPU, unmasked.
  ioapic_write(route.ioapic_address, kIoapicRedirection + 2 * route.ioapic_pin + 1, lapic->id << 24);
  ioapic_write(route.ioapic_address, kIoapicRedirection + 2 * route.ioapic_pin,
               kIntxVector | kRteLevel | kRteActiveLow);
  u32 command = pci_config_read16(dev->slot, kCfgCommand);
  pci_config_write16(dev->slot, kCfgCommand, (u16)(command & ~(u32)kCommandIntxDisable));

  u16 queue_size = 0;
  u64 notify_address = 0;
  if (!initialise(dev, lapic, 0, &queue_size, &notify_address)) return;
  virtq_post_requests();
  mmio_write16(notify_address, 0);
  VirtqRound round;
  virtq_wait_used(poll_limit, queue_size, "virtio-pci-intx", &round);
  int irr = lapic_irr_bit(lapic, kIntxVector);
  for (u32 i = 0; i < kIrrPolls && round.used >= 2 && !irr; ++i) irr = lapic_irr_bit(lapic, kIntxVector);
  // §4.1.4.5.1: reading the ISR clears it and deasserts the line.
  u32 isr = read8(dev->isr);
  u32 isr_after = read8(dev->isr);
  line_begin();
  put_str("virtio-pci-intx gsi=");
  put_dec(route.ioapic_pin);
  put_str(" used=");
  put_dec(round.used);
  put_str(" intx-irr=");
  put_dec((u64)irr);
  put_str(" isr=");
  put_dec(isr);
  put_str(" isr-after=");
  put_dec(isr_after);
  line_end();
  ioapic_write(route.ioapic_address, kIoapicRedirection + 2 * route.ioapic_pin, kRteMasked);
  u32 status = reset_device(dev);
  line_begin();
  put_str("virtio-pci-intx reset-status=");
  put_dec(status);
  line_end();
}

static void drive_rng(u32 slot, u32 poll_limit) {
  VirtioPciCaps caps;
  virtio_pci_read_capabilities(slot, &caps);
  const VirtioPciRegion* common = &caps.regions[kCapCommon];
  const VirtioPciRegion* notify = &caps.regions[kCapNotify];
  const VirtioPciRegion* isr = &caps.regions[kCapIsr];
  if (!common->present || !notify->present || !isr->present || caps.msix_cap == 0) {
    line_begin();
    put_str("error virtio-pci-rng missing-cap");
    if (!common->present) put_str(" common");
    if (!notify->present) put_str(" notify");
    if (!isr->present) put_str(" isr");
    if (caps.msix_cap == 0) put_str(" msix");
    line_end();
    return;
  }

  // Decode off while the BAR is sized and moved (PCI 3.0 §6.2.5.1).
  u32 command = pci_config_read16(slot, kCfgCommand);
  pci_config_write16(slot, kCfgCommand, (u16)(command & ~(u32)(kCommandMemory | kCommandBusMaster)));
  u64 bar_size = 0;
  u32 bar = common->bar;
  u64 base = virtio_pci_place_bar(slot, bar, kBarRelocation, "virtio-pci-rng", &bar_size);
  if (base == 0) return;
  // This driver keeps everything in the common configuration's BAR (skiff's layout).
  const char* who = "virtio-pci-rng";
  if (!virtio_pci_region_fits(who, "common", common->bar, common->offset, common->length, bar, bar_size,
                              kCommonCfgLength) ||
      !virtio_pci_region_fits(who, "notify", notify->bar, notify->offset, notify->length, bar, bar_size, 2) ||
      !virtio_pci_region_fits(who, "isr", isr->bar, isr->offset, isr->length, bar, bar_size, 1) ||
      !virtio_pci_region_fits(who, "msix-table", caps.table_bar, caps.table_offset,
                              (u64)caps.msix_vectors * kMsixEntrySize, bar, bar_size, 2 * kMsixEntrySize) ||
      !virtio_pci_region_fits(who, "msix-pba", caps.pba_bar, caps.pba_offset, 8, bar, bar_size, 8)) {
    return;
  }
  pci_config_write16(slot, kCfgCommand, (u16)(command | kCommandMemory | kCommandBusMaster));

  RngDevice dev = {
      .slot = slot,
      .common = base + common->offset,
      .notify = base + notify->offset,
      .notify_length = notify->length,
      .notify_multiplier = caps.notify_multiplier,
      .table = base + caps.table_offset,
      .isr = base + isr->offset,
      .msix_cap = caps.msix_cap,
      .msix_vectors = caps.msix_vectors,
  };
  Lapic lapic = {0, 0, 0, 0};
  u16 queue_size = 0;
  u64 notify_address = 0;
  if (!initialise(&dev, &lapic, 1, &queue_size, &notify_address)) return;

  virtq_post_requests();
  mmio_write16(notify_address, 0);  // §4.1.5.2: the queue index, 16 bits
  VirtqRound round;
  virtq_wait_used(poll_limit, queue_size, "virtio-pci-rng", &round);

  // The device publishes used->idx before it sends the MSI; give a preempted device thread
  // a few reads before calling the interrupt missing.
  int irr = lapic_irr_bit(&lapic, kQueueVector);
  for (u32 i = 0; i < kIrrPolls && round.used >= 2 && !irr; ++i) irr = lapic_irr_bit(&lapic, kQueueVector);
  rng_line_begin();
  put_str("used=");
  put_dec(round.used);
  put_str(" len0=");
  put_dec(round.lengths[0]);
  put_str(" len1=");
  put_dec(round.lengths[1]);
  put_str(" nonzero=");
  put_dec((u64)round.nonzero);
  put_str(" msix-irr=");
  put_dec((u64)irr);
  line_end();

  // The device must stop writing into the queue before the image reuses that memory. The
  // IRR bit stays pending: IF is never set, and the guest ends the run next.
  u32 status = reset_device(&dev);
  rng_line_begin();
  put_str("reset-status=");
  put_dec(status);
  line_end();

  intx_round(&dev, &lapic, poll_limit);
}

void virtio_pci_report(u32 poll_limit) {
  u32 count = 0;
  int rng_slot = -1;
  int blk_slot = -1;
  int net_slot = -1;
  int balloon_slot = -1;
  int vsock_slot = -1;
  for (u32 slot = 0; slot < kSlots; ++slot) {
    u32 ids = pci_config_read32(slot, kCfgVendorDevice);
    u32 vendor = ids & 0xffff;
    // All ones: no function (master abort, or no configuration mechanism at all, as on
    // QEMU's microvm); 0 is not a valid vendor either.
    if (vendor == 0xffff || vendor == 0) continue;
    u32 device = ids >> 16;
    ++count;
    line_begin();
    put_str("pci 00:");
    put_hex_digits(slot, 2);
    put_str(".0 vendor=0x");
    put_hex_digits(vendor, 4);
    put_str(" device=0x");
    put_hex_digits(device, 4);
    put_str(" class=0x");
    put_hex_digits(pci_config_read32(slot, kCfgClassRevision) >> 8, 6);
    line_end();
    if (rng_slot < 0 && vendor == kVirtioVendorId && device == kVirtioRngDeviceId) rng_slot = (int)slot;
    if (blk_slot < 0 && vendor == kVirtioVendorId && device == kVirtioBlkDeviceId) blk_slot = (int)slot;
    if (net_slot < 0 && vendor == kVirtioVendorId && device == kVirtioNetDeviceId) net_slot = (int)slot;
    if (balloon_slot < 0 && vendor == kVirtioVendorId && device == kVirtioBalloonDeviceId) balloon_slot = (int)slot;
    if (vsock_slot < 0 && vendor == kVirtioVendorId && device == kVirtioVsockDeviceId) vsock_slot = (int)slot;
  }
  line_begin();
  put_str("pci-devices=");
  put_dec(count);
  line_end();
  if (rng_slot >= 0) drive_rng((u32)rng_slot, poll_limit);
  if (blk_slot >= 0) virtio_blk_pci_drive((u32)blk_slot, poll_limit);  // only with skiff.blk=
  if (net_slot >= 0) virtio_net_pci_drive((u32)net_slot, poll_limit);  // only with skiff.net=
  if (balloon_slot >= 0) balloon_pci_drive((u32)balloon_slot, poll_limit);  // only with skiff.balloon=
  if (vsock_slot >= 0) vsock_pci_drive((u32)vsock_slot, poll_limit);  // only with skiff.vsock=
}
