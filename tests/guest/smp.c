// SPDX-License-Identifier: Apache-2.0
// Starts every other CPU the MADT lists with the INIT-SIPI-SIPI sequence (Intel SDM
// Vol. 3A §9.4.4 "MP Initialization Example") and counts how many reach long mode.
// The APs run the real-mode trampoline from head.S (.text16), copied to 0x3000, then
// head.S ap_entry32/ap_entry64 with the BSP's CR3 and EFER; each does one
// `lock incl ap_started_count` and halts. Nothing here needs a calibrated timer: waits
// are bounded loops whose pacing is a port read (one VM exit each).
#include "guest.h"

extern const u8 ap_trampoline_start[];
extern const u8 ap_trampoline_end[];
extern volatile u32 ap_started_count;
extern u32 ap_cr3;
extern u32 ap_efer;

enum {
  kApTrampolineAddr = 0x3000,  // SIPI vector 0x03: CS = 0x0300, IP = 0
  kSipiVector = kApTrampolineAddr >> 12,
  kMsrApicBase = 0x1b,
  kMsrEfer = 0xc0000080,
  kApicBaseEnable = 1 << 11,
  kApicBaseX2Apic = 1 << 10,
  kMsrX2ApicId = 0x802,
  kMsrX2ApicSvr = 0x80f,
  kMsrX2ApicIcr = 0x830,
  kApicRegId = 0x20,
  kApicRegSvr = 0xf0,
  kApicRegIcrLow = 0x300,
  kApicRegIcrHigh = 0x310,
  kSvrEnable = 0x100,
  kSpuriousVector = 0xff,
  kIcrDeliveryPending = 1 << 12,
  kIcrInitAssert = 0x4500,  // delivery mode INIT (101b), level assert, edge
  kIcrStartup = 0x0600,     // delivery mode Start-Up (110b)
  kIcrPollLimit = 1000,
  kEferLma = 1 << 10,
  kSerialLsrPort = 0x3fd,
};

// How long the BSP waits for the APs, in polls of the counter. Each poll is a handful
// of instructions plus one port read, so the limit is ~1.2M ring-0 instructions if an
// AP never arrives; when they all do, the loop ends after the first few polls.
static const u32 kApWaitPolls = 200000;

typedef struct {
  int x2apic;
  u64 base;
} Lapic;

static void icr_wait_idle(const Lapic* lapic) {
  if (lapic->x2apic) return;  // x2APIC ICR has no delivery-status bit
  for (int i = 0; i < kIcrPollLimit; ++i) {
    if (!(mmio_read32(lapic->base + kApicRegIcrLow) & kIcrDeliveryPending)) return;
  }
}

static void send_ipi(const Lapic* lapic, u32 apic_id, u32 icr_low) {
  if (lapic->x2apic) {
    wrmsr(kMsrX2ApicIcr, ((u64)apic_id << 32) | icr_low);
  } else {
    mmio_write32(lapic->base + kApicRegIcrHigh, apic_id << 24);
    mmio_write32(lapic->base + kApicRegIcrLow, icr_low);  // this write sends
  }
  icr_wait_idle(lapic);
}

static void smp_error(const char* what) {
  line_begin();
  put_str("error smp ");
  put_str(what);
  line_end();
}

u32 start_application_processors(const MadtInfo* madt) {
  if (!madt->found || madt->enabled_count <= 1) return 1;

  u64 apic_base_msr = rdmsr(kMsrApicBase);
  if (!(apic_base_msr & kApicBaseEnable)) {
    smp_error("apic-disabled");
    return 1;
  }
  Lapic lapic = {.x2apic = (apic_base_msr & kApicBaseX2Apic) != 0,
                 .base = apic_base_msr & 0xffffff000ull};
  if (!lapic.x2apic && !phys_range_mapped(lapic.base, 0x1000)) {
    smp_error("apic-unmapped");
    return 1;
  }
  u64 cr3 = read_cr3();
  if (cr3 >= kIdentityMapLimit) {
    smp_error("cr3-above-4g");
    return 1;
  }
  usize trampoline_size = (usize)(ap_trampoline_end - ap_trampoline_start);
  ap_cr3 = (u32)cr3;
  ap_efer = (u32)(rdmsr(kMsrEfer) & ~(u64)kEferLma);
  ap_started_count = 0;
  memcpy((void*)(usize)kApTrampolineAddr, ap_trampoline_start, trampoline_size);

  u32 bsp_id;
  if (lapic.x2apic) {
    bsp_id = (u32)rdmsr(kMsrX2ApicId);
    wrmsr(kMsrX2ApicSvr, kSvrEnable | kSpuriousVector);
  } else {
    bsp_id = mmio_read32(lapic.base + kApicRegId) >> 24;
    mmio_write32(lapic.base + kApicRegSvr, kSvrEnable | kSpuriousVector);
  }

  u32 targets = 0;
  for (u32 i = 0; i < madt->apic_id_count; ++i) {
    u32 id = madt->apic_ids[i];
    if (id == bsp_id) continue;
    if (!lapic.x2apic && id > 0xfe) continue;  // not addressable in xAPIC mode
    send_ipi(&lapic, id, kIcrInitAssert);
    send_ipi(&lapic, id, kIcrStartup | kSipiVector);
    send_ipi(&lapic, id, kIcrStartup | kSipiVector);  // ignored by an AP already running
    ++targets;
  }

  for (u32 poll = 0; poll < kApWaitPolls; ++poll) {
    if (ap_started_count >= targets) break;
    (void)inb(kSerialLsrPort);
  }
  return 1 + ap_started_count;
}
