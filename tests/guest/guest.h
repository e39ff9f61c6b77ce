// SPDX-License-Identifier: Apache-2.0
// Freestanding runtime of the skiff test guest: port/MMIO/MSR helpers, the serial
// console and the pieces each file provides. Compiled without SSE/x87 and without any
// instruction the emulated ring 0 of /dev/kvm lacks (see check_insns.sh).
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned long usize;

#define NULL ((void*)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

// Boot paths, passed by head.S as guest_main's first argument.
enum BootTag {
  kBootPvh = 1,
  kBootBzImage16 = 2,  // through setup.S (a BIOS loader such as QEMU -M pc)
  kBootBzImage32 = 3,  // code32_start
  kBootBzImage64 = 4,  // image + 0x200
};

// Physical addresses are identity-mapped only below 4 GiB (head.S page tables, and
// the boot protocol's guarantee for the 64-bit entry).
#define kIdentityMapLimit 0x100000000ull

static inline int phys_range_mapped(u64 addr, u64 size) {
  return addr < kIdentityMapLimit && size <= kIdentityMapLimit - addr;
}


static inline void outb(u16 port, u8 value) {
  __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}
static inline void outw(u16 port, u16 value) {
  __asm__ volatile("outw %0, %1" : : "a"(value), "Nd"(port));
}
static inline void outl(u16 port, u32 value) {
  __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}
static inline u16 inw(u16 port) {
  u16 value;
  __asm__ volatile("inw %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}
static inline u32 inl(u16 port) {
  u32 value;
  __asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}
static inline u8 inb(u16 port) {
  u8 value;
  __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}
static inline u64 rdmsr(u32 msr) {
  u32 lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
  return ((u64)hi << 32) | lo;
}
static inline void wrmsr(u32 msr, u64 value) {
  __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)value), "d"((u32)(value >> 32)));
}
static inline u64 read_cr3(void) {
  u64 value;
  __asm__ volatile("mov %%cr3, %0" : "=r"(value));
  return value;
}
// Physical memory accessors. The empty asm hides the (often constant, sometimes
// page-zero) address from GCC, which would otherwise warn about null-page accesses.
static inline usize phys_addr(u64 addr) {
  usize a = (usize)addr;
  __asm__("" : "+r"(a));
  return a;
}
static inline u32 mmio_read32(u64 addr) { return *(volatile u32*)phys_addr(addr); }
static inline void mmio_write32(u64 addr, u32 value) { *(volatile u32*)phys_addr(addr) = value; }
static inline void mmio_write16(u64 addr, u16 value) { *(volatile u16*)phys_addr(addr) = value; }
static inline void mmio_write8(u64 addr, u8 value) { *(volatile u8*)phys_addr(addr) = value; }
static inline u8 read8(u64 addr) { return *(const volatile u8*)phys_addr(addr); }
static inline u16 read16(u64 addr) { return *(const volatile u16*)phys_addr(addr); }
static inline u32 read32(u64 addr) { return *(const volatile u32*)phys_addr(addr); }
static inline u64 read64(u64 addr) { return *(const volatile u64*)phys_addr(addr); }
static inline const void* phys_ptr(u64 addr) { return (const void*)phys_addr(addr); }

__attribute__((noreturn)) static inline void halt_forever(void) {
  for (;;) __asm__ volatile("cli; hlt");
}

// print.c: polled 16550 at 0x3f8. Every protocol line starts with line_begin().
void serial_init(void);
void put_char(char c);
void put_str(const char* s);
void put_hex(u64 value);  // "0x" + lowercase hex, no padding
void put_hex_padded(u64 value);  // "0x" + 16 hex digits
void put_hex_digits(u64 value, u32 digits);  // exactly `digits` (<= 16) hex digits, no "0x"
void put_dec(u64 value);
// " key=<decimal>": one field of a result line.
void put_field(const char* key, u64 value);
void line_begin(void);  // "SKIFF-GUEST "
void line_end(void);    // "\n"

// lib.c
void* memset(void* dst, int value, usize size);
void* memcpy(void* dst, const void* src, usize size);
int bytes_equal(const void* a, const void* b, usize size);
u8 byte_sum(u64 addr, u64 size);

// guest.c: the command line, space-separated key=value tokens, read in place (at most
// kCmdlineMaxPrint bytes, NUL-terminated earlier).
#define kCmdlineMaxPrint 4095  // = setup header cmdline_size
const char* cmdline_text(u64 cmdline);  // "" when absent or unmapped
// Next space-separated token at or after *position; 0 at the end of the line.
int cmdline_next_token(const char* cmdline, usize* position, const char** token, usize* length);
int token_has_key(const char* token, usize length, const char* key, const char** value,
                  usize* value_length);
int cmdline_value(const char* cmdline, const char* key, const char** value, usize* value_length);
int parse_u64(const char* text, usize length, u64* out);  // decimal or 0x hex, whole text
// A comma-separated list of test names (skiff.net=arp,rx): the OR of the bits of the names
// found in `words`. A name not in the table prints "error bad-<what>-test index=<offset>".
typedef struct {
  const char* word;
  u32 bits;
} CmdlineWord;
u32 cmdline_word_bits(const char* value, usize length, const CmdlineWord* words, u32 count, const char* what);

// acpi.c: CPU enumeration from the firmware tables.
#define kMaxCpus 256
typedef struct {
  int found;          // 0: no valid MADT
  u32 enabled_count;  // enabled type 0 + type 9 entries
  u32 apic_ids[kMaxCpus];
  u32 apic_id_count;  // ids stored (<= kMaxCpus)
} MadtInfo;
void acpi_report(u64 rsdp_hint, MadtInfo* madt);
void mptable_report(void);

// smp.c
u32 start_application_processors(const MadtInfo* madt);  // returns CPUs running, BSP included

// virtio.c: virtio-mmio devices named by virtio_mmio.device= tokens; with skiff.virtio=1
// each is probed and an entropy device is driven through one request round. Returns the
// used-ring poll limit (skiff.virtio-polls, >= 1) when skiff.virtio=1, else 0.
u32 virtio_mmio_report(const char* cmdline);

// virtio.c: the one requestq both transports use (a page of .bss, identity-mapped) and
// its request round: chain a = descriptor 0 (64 writable bytes), chain b = descriptors
// 1 -> 2 (16 + 48 writable bytes).
#define kVirtqSizeWanted 8
typedef struct {
  u16 used;        // used->idx when the poll ended
  u32 lengths[2];  // used length of the chain headed by descriptor 0 / 1 (0: not returned)
  int nonzero;     // the 128 buffer bytes (zeroed before posting) are not all zero
} VirtqRound;
void virtq_clear(void);  // zeroes rings and buffers (before the queue is handed over)
u64 virtq_desc_address(void);
u64 virtq_avail_address(void);
u64 virtq_used_address(void);
void virtq_post_requests(void);  // fills both chains and publishes avail->idx = 2
// Polls used->idx until >= 2, at most poll_limit times (one UART LSR read per poll), and
// collects the result. An unexpected used id prints "error <error_prefix> used-id=<dec>".
void virtq_wait_used(u32 poll_limit, u16 queue_size, const char* error_prefix, VirtqRound* round);

// virtio_pci.c: with skiff.virtio=1, PCI bus 0 is listed through configuration mechanism
// #1 and the first virtio-pci entropy device (1af4:1044) is driven through one request
// round with MSI-X; then the first block device (1af4:1042) goes to virtio_blk.c.
void virtio_pci_report(u32 poll_limit);

// virtio_pci.c, shared with virtio_blk.c: bus 0 configuration space (mechanism #1) and the
// pieces of a virtio-pci device a driver locates (§4.1.4).
u32 pci_config_read32(u32 slot, u32 offset);
void pci_config_write32(u32 slot, u32 offset, u32 value);
u16 pci_config_read16(u32 slot, u32 offset);
void pci_config_write16(u32 slot, u32 offset, u16 value);
#define kVirtioPciCapTypes 6  // cfg_type 1-5 are known (5: PCI configuration access)
typedef struct {
  int present;
  u32 bar;
  u32 offset;
  u32 length;
} VirtioPciRegion;
typedef struct {
  VirtioPciRegion regions[kVirtioPciCapTypes];  // by cfg_type; the first of each type (§4.1.4)
  u32 notify_multiplier;
  u32 msix_cap;  // config offset of the MSI-X capability, 0 if none
  u32 msix_vectors;
  u32 table_bar, table_offset, pba_bar, pba_offset;
} VirtioPciCaps;
// Walks the capability list, printing a "virtio-pci cap ..." / "virtio-pci msix ..." line each.
void virtio_pci_read_capabilities(u32 slot, VirtioPciCaps* caps);
// Sizes memory BAR `index` (decode must be off) and places it: where the VMM assigned it if
// that is below 4 GiB, else at `relocation`. Prints "virtio-pci bar<n>=..."; returns the
// address, or 0 after printing "error <error_prefix> bar-...".
u64 virtio_pci_place_bar(u32 slot, u32 index, u64 relocation, const char* error_prefix, u64* size_out);
// 1 if [offset, offset + length) lies in BAR `want_bar` of `bar_size` bytes and length >=
// min_length, else 0 after printing "error <error_prefix> region=<what> ...".
int virtio_pci_region_fits(const char* error_prefix, const char* what, u32 bar, u32 offset, u64 length,
                           u32 want_bar, u64 bar_size, u64 min_length);

// virtio_blk.c: the block device (virtio 1.2 §5.2), only with skiff.virtio=1 and skiff.blk=<tests>
// (README.md, "virtio-blk"). virtio_blk_configure() reads skiff.blk; the drive functions do
// nothing unless it asked for something, and act on the first block device only.
void virtio_blk_configure(const char* cmdline);
void virtio_blk_mmio_drive(u64 base, u32 poll_limit);
void virtio_blk_pci_drive(u32 slot, u32 poll_limit);

// virtio_net.c: the network device (virtio 1.2 §5.1), only with skiff.virtio=1 and
// skiff.net=<tests> (README.md, "virtio-net"); the same shape as virtio-blk above.
void virtio_net_configure(const char* cmdline);
void virtio_net_mmio_drive(u64 base, u32 poll_limit);
void virtio_net_pci_drive(u32 slot, u32 poll_limit);

// ring3.c / ring3.S: run a function at CPL 3 (native speed where ring 0 is emulated). The
// first call loads its own GDT (same ring-0 selectors as head.S), TSS, IDT and page tables
// (the identity map with U/S set) and masks the 8259 PICs. Ring-3 code must not use port
// I/O (no printing); it comes back through an exception: fn returning executes `ud2`.
typedef struct {
  u64 vector;  // 6 (#UD) after a normal return
  u64 error_code;
  u64 rip;
  u64 cs;
  u64 cr2;  // page faults only
} Ring3Exit;
void ring3_init(void);
// 1 when fn(arg) returned normally, else 0 with `exit` saying which exception ended it.
int ring3_run(void (*fn)(void*), void* arg, void* stack, u64 stack_bytes, Ring3Exit* exit);

// lifecycle.c: skiff.action=wait-shutdown prints tick=<n> lines until the host presses the
// ACPI power button (or, with skiff.shutdown-via=keyboard, sends Ctrl-Alt-Del), then returns.
void wait_for_shutdown_request(const char* cmdline);
// blk_bench.c: with skiff.blkbench=<test>,... the virtio-blk benchmark (README.md,
// "blk-bench"): first virtio-blk PCI function, measured loop in ring 3.
void blk_bench_run(const char* cmdline);
// net_bench.c: with skiff.netbench=<test>,... the virtio-net benchmark (README.md,
// "net-bench"): first virtio-net PCI function, measured loop in ring 3.
void net_bench_run(const char* cmdline);
