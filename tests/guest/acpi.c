// SPDX-License-Identifier: Apache-2.0
// CPU enumeration from the two firmware tables a VMM may provide: the ACPI MADT
// (reached through RSDP -> XSDT/RSDT) and the Intel MultiProcessor Specification table.
// Every table is checksum-verified and every length is bounded before it is walked:
// the VMM under test is what produced them.
#include "guest.h"

enum {
  kMaxTableLength = 0x10000,  // no sane MADT/XSDT/RSDT is larger; bounds the loops
  kSdtHeaderLength = 36,      // ACPI 6.5 §5.2.6 System Description Table Header
  kMadtEntriesOffset = 44,    // §5.2.12: header, Local Interrupt Controller Address, Flags
  kMadtTypeLocalApic = 0,     // §5.2.12.2 Processor Local APIC Structure (8 bytes)
  kMadtTypeLocalX2Apic = 9,   // §5.2.12.12 Processor Local x2APIC Structure (16 bytes)
  kMadtLapicEnabled = 0x1,    // Local APIC Flags bit 0
};

static u64 read_u64_unaligned(u64 addr) {
  return (u64)read32(addr) | ((u64)read32(addr + 4) << 32);
}

// ACPI 6.5 §5.2.5.3: "RSD PTR " at a 16-byte boundary; checksum over the first 20
// bytes; for revision >= 2 the extended checksum covers Length bytes.
static int rsdp_valid(u64 addr) {
  if (!phys_range_mapped(addr, 36)) return 0;
  if (!bytes_equal(phys_ptr(addr), "RSD PTR ", 8)) return 0;
  if (byte_sum(addr, 20) != 0) return 0;
  if (read8(addr + 15) >= 2) {
    u32 length = read32(addr + 20);
    if (length < 36 || length > 4096 || byte_sum(addr, length) != 0) return 0;
  }
  return 1;
}

// §5.2.5.1: on non-UEFI systems the RSDP is on a 16-byte boundary in 0xe0000-0xfffff
// (or the first KiB of the EBDA, which skiff and QEMU leave empty).
static u64 rsdp_scan(void) {
  const u64 kSignature = 0x2052545020445352ull;  // "RSD PTR " little-endian
  for (u64 addr = 0xe0000; addr < 0x100000; addr += 16) {
    if (read64(addr) == kSignature && rsdp_valid(addr)) return addr;
  }
  return 0;
}

// Returns the table's length when the header is sane and the checksum is zero.
static u32 sdt_checked_length(u64 addr, const char* signature) {
  if (!phys_range_mapped(addr, kSdtHeaderLength)) return 0;
  if (!bytes_equal(phys_ptr(addr), signature, 4)) return 0;
  u32 length = read32(addr + 4);
  if (length < kSdtHeaderLength || length > kMaxTableLength) return 0;
  if (!phys_range_mapped(addr, length)) return 0;
  if (byte_sum(addr, length) != 0) {
    line_begin();
    put_str("error acpi-checksum table=");
    put_str(signature);
    put_str(" addr=");
    put_hex(addr);
    line_end();
    return 0;
  }
  return length;
}

static int signature_is(u64 addr, const char* signature) {
  return phys_range_mapped(addr, 4) && bytes_equal(phys_ptr(addr), signature, 4);
}

static void madt_add_cpu(MadtInfo* madt, u32 apic_id) {
  ++madt->enabled_count;
  if (madt->apic_id_count < kMaxCpus) madt->apic_ids[madt->apic_id_count++] = apic_id;
}

static void madt_parse(u64 addr, u32 length, MadtInfo* madt) {
  madt->found = 1;
  u64 offset = kMadtEntriesOffset;
  while (offset + 2 <= length) {
    u8 type = read8(addr + offset);
    u8 entry_length = read8(addr + offset + 1);
    if (entry_length < 2 || offset + entry_length > length) {
      line_begin();
      put_str("error madt-entry offset=");
      put_dec(offset);
      line_end();
      break;
    }
    if (type == kMadtTypeLocalApic && entry_length >= 8) {
      if (read32(addr + offset + 4) & kMadtLapicEnabled) madt_add_cpu(madt, read8(addr + offset + 3));
    } else if (type == kMadtTypeLocalX2Apic && entry_length >= 16) {
      if (read32(addr + offset + 8) & kMadtLapicEnabled) madt_add_cpu(madt, read32(addr + offset + 4));
    }
    offset += entry_length;
  }
}

// Finds the MADT through the XSDT (revision >= 2 with an address) or else the RSDT.
static void madt_find(u64 rsdp, MadtInfo* madt) {
  u64 root = 0;
  u32 entry_size = 0;
  const char* root_signature = "";
  u64 xsdt = read8(rsdp + 15) >= 2 ? read_u64_unaligned(rsdp + 24) : 0;
  if (xsdt != 0) {
    root = xsdt;
    entry_size = 8;
    root_signature = "XSDT";
  } else {
    root = read32(rsdp + 16);
    entry_size = 4;
    root_signature = "RSDT";
  }
  u32 root_length = sdt_checked_length(root, root_signature);
  if (root_length == 0) {
    line_begin();
    put_str("error acpi-root table=");
    put_str(root_signature);
    put_str(" addr=");
    put_hex(root);
    line_end();
    return;
  }
  for (u64 offset = kSdtHeaderLength; offset + entry_size <= root_length; offset += entry_size) {
    u64 table = entry_size == 8 ? read_u64_unaligned(root + offset) : read32(root + offset);
    if (!signature_is(table, "APIC")) continue;
    u32 length = sdt_checked_length(table, "APIC");
    if (length >= kMadtEntriesOffset) {
      madt_parse(table, length, madt);
      return;
    }
  }
}

void acpi_report(u64 rsdp_hint, MadtInfo* madt) {
  madt->found = 0;
  madt->enabled_count = 0;
  madt->apic_id_count = 0;

  u64 rsdp = 0;
  const char* source = "";
  if (rsdp_hint != 0) {
    if (rsdp_valid(rsdp_hint)) {
      rsdp = rsdp_hint;
      source = "boot";
    } else {
      line_begin();
      put_str("error rsdp-invalid addr=");
      put_hex(rsdp_hint);
      line_end();
    }
  }
  if (rsdp == 0) {
    rsdp = rsdp_scan();
    source = "scan";
  }
  line_begin();
  if (rsdp == 0) {
    put_str("rsdp=none");
  } else {
    put_str("rsdp=");
    put_hex(rsdp);
    put_str(" from=");
    put_str(source);
  }
  line_end();

  if (rsdp != 0) madt_find(rsdp, madt);
  line_begin();
  put_str("madt-cpus=");
  if (madt->found) {
    put_dec(madt->enabled_count);
  } else {
    put_str("none");
  }
  line_end();
}

// ---- Intel MultiProcessor Specification 1.4 ------------------------------------------

enum {
  kMpEntryProcessor = 0,  // §4.3.1, 20 bytes
  kMpEntryOtherMax = 4,   // bus, I/O APIC, I/O interrupt, local interrupt: 8 bytes each
  kMpProcessorEnabled = 0x1,
  kMpConfigHeaderLength = 44,
};

// §4.1: "_MP_" on a 16-byte boundary, Length in 16-byte units, all bytes sum to zero.
static u64 mp_floating_scan(u64 start, u64 size) {
  const u32 kSignature = 0x5f504d5f;  // "_MP_"
  for (u64 addr = start; addr + 16 <= start + size; addr += 16) {
    if (read32(addr) != kSignature) continue;
    u8 length = read8(addr + 8);
    if (length != 0 && byte_sum(addr, (u64)length * 16) == 0) return addr;
  }
  return 0;
}

void mptable_report(void) {
  u64 ebda = (u64)read16(0x40e) << 4;
  u64 floating = 0;
  if (ebda >= 0x400 && ebda + 1024 <= 0xa0000) floating = mp_floating_scan(ebda, 1024);
  if (floating == 0) floating = mp_floating_scan(0x9fc00, 1024);
  if (floating == 0) floating = mp_floating_scan(0xf0000, 0x10000);

  line_begin();
  put_str("mptable-cpus=");
  if (floating == 0) {
    put_str("none");
    line_end();
    return;
  }
  // §4.1 MP FEATURE INFORMATION BYTE 1: non-zero means a default configuration and
  // no configuration table.
  u64 config = read32(floating + 4);
  if (read8(floating + 11) != 0 || config == 0) {
    put_str("default-config");
    line_end();
    return;
  }
  // §4.2: "PCMP" header; checksum over Base Table Length.
  u16 base_length = phys_range_mapped(config, kMpConfigHeaderLength) ? read16(config + 4) : 0;
  if (!signature_is(config, "PCMP") || base_length < kMpConfigHeaderLength ||
      byte_sum(config, base_length) != 0) {
    put_str("none");
    line_end();
    line_begin();
    put_str("error mptable-config addr=");
    put_hex(config);
    line_end();
    return;
  }
  // Walked by Base Table Length, not Entry Count, as Linux does: some firmware
  // (qboot) leaves Entry Count zero.
  u32 cpus = 0;
  u64 offset = kMpConfigHeaderLength;
  while (offset < base_length) {
    u8 type = read8(config + offset);
    if (type == kMpEntryProcessor) {
      if (offset + 20 > base_length) break;
      if (read8(config + offset + 3) & kMpProcessorEnabled) ++cpus;
      offset += 20;
    } else if (type <= kMpEntryOtherMax) {
      offset += 8;
    } else {
      break;  // unknown base entry type: its length is unknown, stop (§4.3)
    }
  }
  put_dec(cpus);
  line_end();
}
