// SPDX-License-Identifier: Apache-2.0
// Ring 3 for code that must run at native speed (see ring3.S for why): a GDT with user
// segments and a 64-bit TSS (RSP0 for exceptions taken at CPL 3), an IDT whose 256 gates
// all lead back to ring3_enter's caller, the identity map with U/S set, and the 8259 PICs
// masked so nothing interrupts the loop. Intel SDM vol. 3A §3.4.5 (descriptors), §7.2.3
// (64-bit TSS), §6.14 (64-bit IDT gates, interrupt-stack frame).
#include "guest.h"

enum {
  kGdtEntries = 7,  // null, kernel code, kernel data, user data, user code, TSS (2 slots)
  kSelKernelCode = 0x08,
  kSelTss = 0x28,
  kTssBytes = 104,
  kTssRsp0 = 4,
  kTssIoMapBase = 102,
  kIdtGates = 256,
  kStubStride = 16,  // ring3.S aligns every stub to 16 bytes
  kGateInterrupt64 = 0x8e,  // present, DPL 0, 64-bit interrupt gate (IF cleared on entry)
  kCr4Tsd = 1 << 2,
  kCr4Smep = 1 << 20,
  kCr4Smap = 1 << 21,
  kPic1Data = 0x21,
  kPic2Data = 0xa1,
  kKernelStackBytes = 8192,
};

// SDM vol. 3A §3.4.5: 64-bit code (L=1), flat data; DPL 0 and 3.
static const u64 kDescKernelCode = 0x00af9b000000ffffull;
static const u64 kDescKernelData = 0x00cf93000000ffffull;
static const u64 kDescUserData = 0x00cff3000000ffffull;
static const u64 kDescUserCode = 0x00affb000000ffffull;

typedef struct {
  u16 offset_low;
  u16 selector;
  u8 ist;
  u8 type_attr;
  u16 offset_mid;
  u32 offset_high;
  u32 reserved;
} IdtGate;

static u64 g_gdt[kGdtEntries] __attribute__((aligned(16)));
static IdtGate g_idt[kIdtGates] __attribute__((aligned(16)));
static u8 g_tss[kTssBytes] __attribute__((aligned(16)));
static u8 g_kernel_stack[kKernelStackBytes] __attribute__((aligned(16)));

// Read and written by ring3.S.
u64 ring3_saved_rsp;
u64 ring3_last_vector;
u64 ring3_last_error;
u64 ring3_last_rip;
u64 ring3_last_cs;

extern u8 ring3_stubs[];
extern u8 ring3_return_ud2[];
extern u8 ring3_pml4[];
u64 ring3_enter(void (*fn)(void*), void* arg, u64 user_stack_top);

static int g_ready;

typedef struct __attribute__((packed)) {
  u16 limit;
  u64 base;
} TableRegister;

static u64 addr_of(const void* p) { return (u64)(usize)p; }

void ring3_init(void) {
  if (g_ready) return;
  // 64-bit TSS descriptor (§7.2.3): limit 103, type 9 (available), present, base in four
  // pieces over two GDT slots.
  u64 tss = addr_of(g_tss);
  g_gdt[0] = 0;
  g_gdt[1] = kDescKernelCode;
  g_gdt[2] = kDescKernelData;
  g_gdt[3] = kDescUserData;
  g_gdt[4] = kDescUserCode;
  g_gdt[5] = (u64)(kTssBytes - 1) | (tss & 0xffffff) << 16 | 0x89ull << 40 | ((tss >> 24) & 0xff) << 56;
  g_gdt[6] = tss >> 32;
  u64 rsp0 = addr_of(g_kernel_stack) + kKernelStackBytes;
  for (u32 i = 0; i < 8; ++i) g_tss[kTssRsp0 + i] = (u8)(rsp0 >> (8 * i));
  g_tss[kTssIoMapBase] = kTssBytes;  // no I/O permission bitmap: ring 3 gets no ports
  g_tss[kTssIoMapBase + 1] = 0;

  u64 stubs = addr_of(ring3_stubs);
  for (u32 v = 0; v < kIdtGates; ++v) {
    u64 handler = stubs + (u64)v * kStubStride;
    g_idt[v].offset_low = (u16)handler;
    g_idt[v].selector = kSelKernelCode;
    g_idt[v].ist = 0;
    g_idt[v].type_attr = kGateInterrupt64;
    g_idt[v].offset_mid = (u16)(handler >> 16);
    g_idt[v].offset_high = (u32)(handler >> 32);
    g_idt[v].reserved = 0;
  }

  // Same selectors as head.S's GDT for ring 0, so CS/SS stay valid across the switch.
  TableRegister gdtr = {sizeof(g_gdt) - 1, addr_of(g_gdt)};
  TableRegister idtr = {sizeof(g_idt) - 1, addr_of(g_idt)};
  __asm__ volatile("lgdt %0" : : "m"(gdtr) : "memory");
  __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
  __asm__ volatile("ltr %w0" : : "r"((u16)kSelTss) : "memory");

  // RDTSC allowed at CPL 3 (TSD clear); SMEP/SMAP off so ring 0 may touch user pages.
  u64 cr4;
  __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
  cr4 &= ~(u64)(kCr4Tsd | kCr4Smep | kCr4Smap);
  __asm__ volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");
  __asm__ volatile("mov %0, %%cr3" : : "r"(addr_of(ring3_pml4)) : "memory");

  // Firmware (SeaBIOS under QEMU -M pc) leaves the PIT running on IRQ 0: mask both PICs.
  outb(kPic1Data, 0xff);
  outb(kPic2Data, 0xff);
  g_ready = 1;
}

int ring3_run(void (*fn)(void*), void* arg, void* stack, u64 stack_bytes, Ring3Exit* exit) {
  ring3_init();
  u64 top = (addr_of(stack) + stack_bytes) & ~0xfull;
  exit->vector = ring3_enter(fn, arg, top);
  exit->error_code = ring3_last_error;
  exit->rip = ring3_last_rip;
  exit->cs = ring3_last_cs;
  exit->cr2 = 0;
  if (exit->vector == 14) __asm__ volatile("mov %%cr2, %0" : "=r"(exit->cr2));
  return exit->vector == 6 && exit->rip == addr_of(ring3_return_ud2) && (exit->cs & 3) == 3;
}
