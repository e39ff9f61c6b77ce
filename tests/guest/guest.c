// SPDX-License-Identifier: Apache-2.0
// The skiff test guest: reports what the VMM handed it (boot path, command line,
// memory map, initrd, CPU tables, CPUs that start) as "SKIFF-GUEST ..." lines on
// COM1, then ends the run the way the command line asks. README.md is the contract
// the integration tests parse; keep the two in sync.
#include "guest.h"

// ---- Linux boot protocol: struct boot_params offsets (arch/x86/include/uapi/asm/bootparam.h)
enum {
  kBpAcpiRsdpAddr = 0x070,    // u64, protocol 2.14+
  kBpExtRamdiskImage = 0x0c0, // u32, high half of ramdisk_image
  kBpExtRamdiskSize = 0x0c4,
  kBpExtCmdLinePtr = 0x0c8,
  kBpE820Entries = 0x1e8,     // u8
  kBpHdrRamdiskImage = 0x218, // u32
  kBpHdrRamdiskSize = 0x21c,
  kBpHdrCmdLinePtr = 0x228,
  kBpE820Table = 0x2d0,       // 128 x {u64 addr, u64 size, u32 type}, packed
  kBpE820EntrySize = 20,
  kBpE820MaxEntries = 128,
  kBootParamsSize = 4096,
};

// ---- PVH: struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h)
enum {
  kPvhMagic = 0x336ec578,
  kPvhVersion = 0x04,       // u32
  kPvhNrModules = 0x0c,     // u32
  kPvhModlistPaddr = 0x10,  // u64 -> hvm_modlist_entry {u64 paddr, size, cmdline_paddr, reserved}
  kPvhCmdlinePaddr = 0x18,  // u64
  kPvhRsdpPaddr = 0x20,     // u64
  kPvhMemmapPaddr = 0x28,   // u64, version >= 1 -> hvm_memmap_table_entry {u64 addr, size; u32 type, reserved}
  kPvhMemmapEntries = 0x30, // u32, version >= 1
  kPvhStartInfoSize = 0x38,
  kPvhModlistEntrySize = 32,
  kPvhMemmapEntrySize = 24,
  kPvhMemmapMaxEntries = 128,
};

enum {
  kInitrdHashWindow = 4096,
  kDebugExitPort = 0xf4,
  kI8042CommandPort = 0x64,
  kI8042ResetCommand = 0xfe,
  kAcpiPm1aControlPort = 0x604,
  kPm1SlpTypS5 = 5 << 10,
  kPm1SlpEn = 1 << 13,
  kActionGracePolls = 20000,
  kSerialLsrPort = 0x3fd,
};

static const u64 kFnvOffsetBasis = 0xcbf29ce484222325ull;
static const u64 kFnvPrime = 0x100000001b3ull;

typedef struct {
  u64 cmdline;  // physical address, 0 if none
  u64 initrd_addr;
  u64 initrd_size;
  u64 rsdp;  // 0: unknown, scan
} BootInfo;

static void error_line(const char* what, u64 value) {
  line_begin();
  put_str("error ");
  put_str(what);
  put_char(' ');
  put_hex(value);
  line_end();
}

static void e820_line(u64 addr, u64 size, u32 type) {
  line_begin();
  put_str("e820 ");
  put_hex(addr);
  put_char(' ');
  put_hex(size);
  put_char(' ');
  put_dec(type);
  line_end();
}

static void e820_count_line(u32 count) {
  line_begin();
  put_str("e820-count ");
  put_dec(count);
  line_end();
}

static int read_boot_params(u64 bp, BootInfo* info) {
  if (bp == 0 || !phys_range_mapped(bp, kBootParamsSize)) {
    error_line("boot-params", bp);
    return 0;
  }
  info->cmdline = read32(bp + kBpHdrCmdLinePtr) | ((u64)read32(bp + kBpExtCmdLinePtr) << 32);
  info->initrd_addr = read32(bp + kBpHdrRamdiskImage) | ((u64)read32(bp + kBpExtRamdiskImage) << 32);
  info->initrd_size = read32(bp + kBpHdrRamdiskSize) | ((u64)read32(bp + kBpExtRamdiskSize) << 32);
  info->rsdp = read64(bp + kBpAcpiRsdpAddr);
  return 1;
}

static void print_boot_params_e820(u64 bp) {
  u32 count = read8(bp + kBpE820Entries);
  if (count > kBpE820MaxEntries) {
    error_line("e820-entries", count);
    count = kBpE820MaxEntries;
  }
  for (u32 i = 0; i < count; ++i) {
    u64 entry = bp + kBpE820Table + (u64)i * kBpE820EntrySize;
    e820_line(read64(entry), read64(entry + 8), read32(entry + 16));
  }
  e820_count_line(count);
}

static int read_start_info(u64 si, BootInfo* info) {
  if (si == 0 || !phys_range_mapped(si, kPvhStartInfoSize) || read32(si) != kPvhMagic) {
    error_line("pvh-start-info", si);
    return 0;
  }
  info->cmdline = read64(si + kPvhCmdlinePaddr);
  info->rsdp = read64(si + kPvhRsdpPaddr);
  u32 modules = read32(si + kPvhNrModules);
  u64 modlist = read64(si + kPvhModlistPaddr);
  if (modules > 0) {
    if (phys_range_mapped(modlist, kPvhModlistEntrySize)) {
      info->initrd_addr = read64(modlist);
      info->initrd_size = read64(modlist + 8);
    } else {
      error_line("pvh-modlist", modlist);
    }
  }
  return 1;
}

static void print_start_info_memmap(u64 si) {
  u32 count = 0;
  if (read32(si + kPvhVersion) >= 1) {
    count = read32(si + kPvhMemmapEntries);
    u64 memmap = read64(si + kPvhMemmapPaddr);
    if (count > kPvhMemmapMaxEntries) {
      error_line("pvh-memmap-entries", count);
      count = kPvhMemmapMaxEntries;
    }
    if (!phys_range_mapped(memmap, (u64)count * kPvhMemmapEntrySize)) {
      error_line("pvh-memmap", memmap);
      count = 0;
    }
    for (u32 i = 0; i < count; ++i) {
      u64 entry = memmap + (u64)i * kPvhMemmapEntrySize;
      e820_line(read64(entry), read64(entry + 8), read32(entry + 16));
    }
  }
  e820_count_line(count);
}

// The command line is printed verbatim up to its NUL (at most cmdline_size bytes);
// bytes outside printable ASCII become '?', so one line stays one line.
static void print_cmdline(u64 cmdline) {
  line_begin();
  put_str("cmdline=");
  if (cmdline != 0 && phys_range_mapped(cmdline, kCmdlineMaxPrint)) {
    for (u64 i = 0; i < kCmdlineMaxPrint; ++i) {
      u8 c = read8(cmdline + i);
      if (c == 0) break;
      put_char(c >= 0x20 && c < 0x7f ? (char)c : '?');
    }
  }
  line_end();
}

static u64 fnv1a(u64 addr, u64 size) {
  u64 hash = kFnvOffsetBasis;
  for (u64 i = 0; i < size; ++i) {
    hash ^= read8(addr + i);
    hash *= kFnvPrime;
  }
  return hash;
}

// Hashing a whole initrd at emulated ring 0 costs ~6 instructions per byte, so only the
// first and the last 4 KiB are hashed (each window is the whole file when it is smaller).
static void print_initrd(const BootInfo* info) {
  line_begin();
  if (info->initrd_size == 0) {
    put_str("initrd none");
    line_end();
    return;
  }
  put_str("initrd addr=");
  put_hex(info->initrd_addr);
  put_str(" size=");
  put_dec(info->initrd_size);
  if (!phys_range_mapped(info->initrd_addr, info->initrd_size)) {
    put_str(" unmapped");
    line_end();
    return;
  }
  u64 window = info->initrd_size < kInitrdHashWindow ? info->initrd_size : kInitrdHashWindow;
  put_str(" head_fnv1a=");
  put_hex_padded(fnv1a(info->initrd_addr, window));
  put_str(" tail_fnv1a=");
  put_hex_padded(fnv1a(info->initrd_addr + info->initrd_size - window, window));
  line_end();
}

// ---- command line: space-separated key=value tokens -----------------------------------

const char* cmdline_text(u64 cmdline) {
  static const char kEmpty[] = "";
  return cmdline != 0 && phys_range_mapped(cmdline, kCmdlineMaxPrint) ? (const char*)phys_ptr(cmdline)
                                                                      : kEmpty;
}

int cmdline_next_token(const char* cmdline, usize* position, const char** token, usize* length) {
  usize i = *position;
  while (i < kCmdlineMaxPrint && cmdline[i] == ' ') ++i;
  usize start = i;
  while (i < kCmdlineMaxPrint && cmdline[i] && cmdline[i] != ' ') ++i;
  *position = i;
  *token = cmdline + start;
  *length = i - start;
  return i > start;
}

int token_has_key(const char* token, usize length, const char* key, const char** value,
                  usize* value_length) {
  usize key_length = 0;
  while (key[key_length]) ++key_length;
  if (length <= key_length || token[key_length] != '=' || !bytes_equal(token, key, key_length)) {
    return 0;
  }
  *value = token + key_length + 1;
  *value_length = length - key_length - 1;
  return 1;
}

// The last occurrence of `key` wins, as in Linux's parser. Returns 0 if absent.
int cmdline_value(const char* cmdline, const char* key, const char** value, usize* value_length) {
  int found = 0;
  usize position = 0;
  const char* token;
  usize length;
  while (cmdline_next_token(cmdline, &position, &token, &length)) {
    if (token_has_key(token, length, key, value, value_length)) found = 1;
  }
  return found;
}

static int word_is(const char* text, usize length, const char* word) {
  usize i = 0;
  for (; i < length && word[i] != 0; ++i) {
    if (text[i] != word[i]) return 0;
  }
  return i == length && word[i] == 0;
}

u32 cmdline_word_bits(const char* value, usize length, const CmdlineWord* words, u32 count, const char* what) {
  u32 bits = 0;
  usize start = 0;
  while (start <= length) {
    usize end = start;
    while (end < length && value[end] != ',') ++end;
    u32 known = 0;
    for (u32 i = 0; i < count && !known; ++i) {
      if (word_is(value + start, end - start, words[i].word)) {
        bits |= words[i].bits;
        known = 1;
      }
    }
    if (!known) {
      line_begin();
      put_str("error bad-");
      put_str(what);
      put_str("-test index=");
      put_dec(start);
      line_end();
    }
    start = end + 1;
  }
  return bits;
}

int parse_u64(const char* text, usize length, u64* out) {
  u64 value = 0;
  u32 base = 10;
  usize i = 0;
  if (length > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    base = 16;
    i = 2;
  }
  if (i == length) return 0;
  for (; i < length; ++i) {
    char c = text[i];
    u32 digit;
    if (c >= '0' && c <= '9') {
      digit = (u32)(c - '0');
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      digit = (u32)(c - 'a' + 10);
    } else if (base == 16 && c >= 'A' && c <= 'F') {
      digit = (u32)(c - 'A' + 10);
    } else {
      return 0;
    }
    if (digit >= base) return 0;
    value = value * base + digit;
  }
  *out = value;
  return 1;
}

typedef enum {
  kActionExit,
  kActionReboot,
  kActionPoweroff,
  kActionTripleFault,
  kActionHalt,
  kActionWaitShutdown,
} Action;

static const struct {
  const char* name;
  Action action;
} kActions[] = {
    {"exit", kActionExit},
    {"reboot", kActionReboot},
    {"poweroff", kActionPoweroff},
    {"triple-fault", kActionTripleFault},
    {"halt", kActionHalt},
    {"wait-shutdown", kActionWaitShutdown},
};

static int name_matches(const char* name, const char* text, usize length) {
  usize n = 0;
  while (name[n]) ++n;
  return n == length && bytes_equal(name, text, length);
}

__attribute__((noreturn)) static void act(const char* text) {
  const char* value;
  usize value_length;

  u64 code = 0;
  if (cmdline_value(text, "skiff.exit", &value, &value_length) &&
      !parse_u64(value, value_length, &code)) {
    line_begin();
    put_str("error bad-exit-code");
    line_end();
    code = 0;
  }
  code &= 0xff;

  u32 action_index = 0;  // exit
  if (cmdline_value(text, "skiff.action", &value, &value_length)) {
    u32 i = 0;
    while (i < ARRAY_SIZE(kActions) && !name_matches(kActions[i].name, value, value_length)) ++i;
    if (i < ARRAY_SIZE(kActions)) {
      action_index = i;
    } else {
      line_begin();
      put_str("error unknown-action");
      line_end();
    }
  }

  line_begin();
  put_str("action=");
  put_str(kActions[action_index].name);
  put_str(" code=");
  put_dec(code);
  line_end();

  switch (kActions[action_index].action) {
    case kActionExit:
      outb(kDebugExitPort, (u8)code);
      break;
    case kActionReboot:
      outb(kI8042CommandPort, kI8042ResetCommand);
      break;
    case kActionWaitShutdown:  // lifecycle.c: returns once the host asks
      wait_for_shutdown_request(text);
      outw(kAcpiPm1aControlPort, kPm1SlpTypS5 | kPm1SlpEn);
      break;
    case kActionPoweroff:
      outw(kAcpiPm1aControlPort, kPm1SlpTypS5 | kPm1SlpEn);
      break;
    case kActionTripleFault: {
      // An IDT with limit 0: #UD cannot be delivered, nor the #DF that follows.
      struct __attribute__((packed)) {
        u16 limit;
        u64 base;
      } empty_idt = {0, 0};
      __asm__ volatile("lidt %0; ud2" : : "m"(empty_idt));
      break;
    }
    case kActionHalt:
      halt_forever();
  }
  // A VMM may act on the request asynchronously (QEMU queues reset and shutdown for
  // its main loop): give it a bounded number of port reads (VM exits) before
  // declaring failure. A VMM that stops synchronously never gets here.
  for (u32 i = 0; i < kActionGracePolls; ++i) (void)inb(kSerialLsrPort);
  line_begin();
  put_str("action-failed");
  line_end();
  halt_forever();
}

static MadtInfo g_madt;

void guest_main(u32 tag, u64 boot_info);

void guest_main(u32 tag, u64 boot_info) {
  serial_init();
  int is_pvh = tag == kBootPvh;
  BootInfo info = {0, 0, 0, 0};
  int have_info = is_pvh ? read_start_info(boot_info, &info) : read_boot_params(boot_info, &info);

  // skiff.quick=1: straight to the action, with one line of output (the action line) and
  // no report: the shortest possible guest, for timing a VMM's start and exit (bench/).
  const char* value;
  usize value_length;
  if (have_info && cmdline_value(cmdline_text(info.cmdline), "skiff.quick", &value, &value_length) &&
      name_matches("1", value, value_length)) {
    act(cmdline_text(info.cmdline));
  }
  line_end();  // firmware (SeaBIOS "Booting from ROM..") may have left a partial line

  static const char* const kEntryNames[] = {"?", "32", "16", "32", "64"};
  line_begin();
  put_str(is_pvh ? "boot=pvh" : "boot=bzimage");
  line_end();
  line_begin();
  put_str("entry=");
  put_str(tag < ARRAY_SIZE(kEntryNames) ? kEntryNames[tag] : "?");
  line_end();

  print_cmdline(info.cmdline);
  if (!have_info) {
    e820_count_line(0);
  } else if (is_pvh) {
    print_start_info_memmap(boot_info);
  } else {
    print_boot_params_e820(boot_info);
  }
  print_initrd(&info);

  acpi_report(info.rsdp, &g_madt);
  mptable_report();

  u32 cpus = start_application_processors(&g_madt);
  line_begin();
  put_str("cpus-started=");
  put_dec(cpus);
  line_end();

  const char* cmdline = cmdline_text(info.cmdline);
  u32 virtio_polls = virtio_mmio_report(cmdline);
  if (virtio_polls != 0) virtio_pci_report(virtio_polls);
  blk_bench_run(cmdline);
  net_bench_run(cmdline);
  act(cmdline);
}
