// SPDX-License-Identifier: Apache-2.0
// The virtio-blk benchmark payload (bench/blk_bench.cc runs it under skiff and QEMU):
// with `skiff.blkbench=<test>[,qd=N][,count=N][,warmup=N][,bs=N]` ring 0 sets up the first
// virtio-blk PCI function (1af4:1042) like virtio_blk.c does (virtio 1.2 §3.1.1, §4.1.5.1.3:
// VERSION_1 only, one queue, no MSI-X, INTx disabled, avail.flags = NO_INTERRUPT), then the
// measured loop runs in ring 3 (ring3.c): it keeps `qd` read requests in flight, notifies
// through the notify register (one MMIO write per batch, skipped while the device sets
// VIRTQ_USED_F_NO_NOTIFY, §2.7.10), polls the used ring and counts completions; RDTSC
// brackets it. Ring 0 prints the markers the host times and the counts (README.md,
// "blk-bench").
//
// Ring 0 is emulated on the development machines (~1.7M instructions/s): everything
// proportional to the request count runs in ring 3; ring 0 only does the O(1) setup.
#include "guest.h"

enum {
  // ---- virtio-pci (§4.1.4)
  kCfgVendorDevice = 0x00,
  kCfgCommand = 0x04,
  kCommandMemory = 1 << 1,
  kCommandBusMaster = 1 << 2,
  kCommandIntxDisable = 1 << 10,
  kCapCommon = 1,
  kCapNotify = 2,
  kCapDevice = 4,
  kCommonCfgLength = 0x38,
  kCommonDeviceFeatureSelect = 0x00,  // struct virtio_pci_common_cfg (§4.1.4.3)
  kCommonDeviceFeature = 0x04,
  kCommonDriverFeatureSelect = 0x08,
  kCommonDriverFeature = 0x0c,
  kCommonNumQueues = 0x12,
  kCommonDeviceStatus = 0x14,
  kCommonQueueSelect = 0x16,
  kCommonQueueSize = 0x18,
  kCommonQueueEnable = 0x1c,
  kCommonQueueNotifyOff = 0x1e,
  kCommonQueueDesc = 0x20,
  kCommonQueueDriver = 0x28,
  kCommonQueueDevice = 0x30,
  kPciSlots = 32,
  // ---- §2.1 device status
  kStatusAcknowledge = 1,
  kStatusDriver = 2,
  kStatusDriverOk = 4,
  kStatusFeaturesOk = 8,
  kStatusFailed = 128,
  kResetPolls = 1000,
  // ---- split virtqueue (§2.7)
  kMaxQueueSize = 256,
  kDescFlagNext = 1,
  kDescFlagWrite = 2,
  kAvailNoInterrupt = 1,
  kUsedNoNotify = 1,
  kDescsPerRequest = 3,  // header -> data -> status
  // ---- virtio-blk (§5.2)
  kBlkTypeIn = 0,
  kBlkConfigLength = 8,  // only capacity is read
  kSectorBytes = 512,
  kStatusNone = 0xff,
  // ---- the benchmark
  kMaxDepth = 64,
  kMaxBlockBytes = 128 * 1024,
  kRing3StackBytes = 16384,
};

static const u32 kVirtioBlkPciId = 0x10421af4;  // device << 16 | vendor (§4.1.2.1)
static const u64 kFeatureVersion1 = 1ull << 32;
// Where a BAR above 4 GiB is moved (skiff's 32-bit PCI window; virtio_blk.c uses the same).
static const u64 kBarRelocation = 0xc1000000ull;
// Rings, request headers, status bytes and data buffers: guest RAM at 64 MiB, outside the
// image (so neither the image nor its .bss grows by megabytes); the VM needs >= 80 MiB.
static const u64 kAreaBase = 0x4000000ull;
static const u64 kAreaDesc = 0x0000;
static const u64 kAreaAvail = 0x1000;
static const u64 kAreaUsed = 0x2000;
static const u64 kAreaHeaders = 0x3000;
static const u64 kAreaStatus = 0x3800;
static const u64 kAreaData = 0x10000;
// A device that stops answering ends the ring-3 loop after this many TSC cycles without a
// completion (~10 s at 3 GHz, ~40 s at 800 MHz).
static const u64 kTimeoutCycles = 30000000000ull;

typedef struct {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
} Desc;

typedef struct {
  u16 flags;
  u16 idx;
  u16 ring[kMaxQueueSize];
} Avail;

typedef struct {
  u16 flags;
  u16 idx;
  struct {
    u32 id;
    u32 len;
  } ring[kMaxQueueSize];
} Used;

typedef struct {
  u32 type;
  u32 reserved;
  u64 sector;
} BlkHeader;

// Shared between ring 0 and the ring-3 loop (the image is mapped U/S by ring3.S).
typedef struct {
  // set up by ring 0
  volatile Desc* desc;
  volatile Avail* avail;
  volatile Used* used;
  volatile BlkHeader* headers;
  volatile u8* status;
  u64 data;
  u64 notify;  // this queue's notify address (16-bit writes of the queue index, §4.1.5.2)
  u16 queue_size;
  u32 depth;
  u32 block_bytes;
  int random;
  u64 blocks;  // capacity in block_bytes units
  u64 count;   // requests in this run
  // carried from run to run
  u16 avail_idx;
  u16 used_idx;
  u64 rng;
  u64 next_block;
  // results of one run
  u64 completed;
  u64 errors;
  u64 notifies;
  u64 bad_ids;
  u64 timed_out;
  u64 tsc_start;
  u64 tsc_end;
} BenchRun;

static BenchRun g_run;
static u8 g_ring3_stack[kRing3StackBytes] __attribute__((aligned(16)));

static void barrier(void) { __asm__ volatile("" : : : "memory"); }

// ---- ring 3 (no port I/O, no printing: both would fault) -------------------------------------

static u64 rdtsc(void) {
  u32 lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64)hi << 32) | lo;
}

static void cpu_pause(void) { __asm__ volatile("pause" : : : "memory"); }

static u64 next_block(BenchRun* r) {
  if (r->random) {
    // xorshift64* (Vigna): cheap and uniform enough to spread reads over the file.
    u64 x = r->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->rng = x;
    return (x * 0x2545f4914f6cdd1dull) % r->blocks;
  }
  u64 block = r->next_block;
  r->next_block = block + 1 >= r->blocks ? 0 : block + 1;
  return block;
}

// Fills request `slot`'s header and hands its chain (head descriptor 3 * slot) to the
// avail ring, not yet published.
static void queue_request(BenchRun* r, u32 slot, u16* avail) {
  r->headers[slot].sector = next_block(r) * (r->block_bytes / kSectorBytes);
  r->status[slot] = kStatusNone;
  r->avail->ring[*avail % r->queue_size] = (u16)(slot * kDescsPerRequest);
  *avail = (u16)(*avail + 1);
}

static void publish_and_notify(BenchRun* r, u16 avail) {
  // §2.7.13: ring entries before the index; x86 keeps stores in order.
  barrier();
  r->avail->idx = avail;
  // The index before the flags check (§2.7.10 asks for a full fence here): a device that
  // clears NO_NOTIFY after our load must see the new index.
  __asm__ volatile("mfence" : : : "memory");
  if (!(r->used->flags & kUsedNoNotify)) {
    *(volatile u16*)(usize)r->notify = 0;
    ++r->notifies;
  }
}

static void bench_loop(void* arg) {
  BenchRun* r = arg;
  for (u32 slot = 0; slot < r->depth; ++slot) {
    u32 head = slot * kDescsPerRequest;
    u64 data = r->data + (u64)slot * r->block_bytes;
    r->headers[slot].type = kBlkTypeIn;
    r->headers[slot].reserved = 0;
    r->desc[head] = (Desc){(u64)(usize)&r->headers[slot], sizeof(BlkHeader), kDescFlagNext, (u16)(head + 1)};
    r->desc[head + 1] = (Desc){data, r->block_bytes, kDescFlagWrite | kDescFlagNext, (u16)(head + 2)};
    r->desc[head + 2] = (Desc){(u64)(usize)&r->status[slot], 1, kDescFlagWrite, 0};
  }
  r->completed = r->errors = r->notifies = r->bad_ids = r->timed_out = 0;
  u64 submitted = 0;
  u16 avail = r->avail_idx;
  u16 seen = r->used_idx;
  r->tsc_start = rdtsc();
  u64 last_progress = r->tsc_start;
  for (u32 slot = 0; slot < r->depth && submitted < r->count; ++slot, ++submitted) {
    queue_request(r, slot, &avail);
  }
  publish_and_notify(r, avail);
  u32 spins = 0;
  while (r->completed < r->count) {
    u16 now = r->used->idx;
    if (now == seen) {
      cpu_pause();
      if ((++spins & 0x3ff) == 0 && rdtsc() - last_progress > kTimeoutCycles) {
        r->timed_out = 1;
        break;
      }
      continue;
    }
    barrier();  // used elements after the index that published them
    while (seen != now) {
      u32 head = r->used->ring[seen % r->queue_size].id;
      seen = (u16)(seen + 1);
      u32 slot = head / kDescsPerRequest;
      if (head % kDescsPerRequest != 0 || slot >= r->depth) {
        ++r->bad_ids;  // that chain is lost; the loop ends by timeout if it was needed
        continue;
      }
      if (r->status[slot] != 0) ++r->errors;
      ++r->completed;
      if (submitted < r->count) {
        queue_request(r, slot, &avail);
        ++submitted;
      }
    }
    if (avail != r->avail->idx) publish_and_notify(r, avail);  // not after the last ones
    last_progress = rdtsc();
  }
  r->tsc_end = rdtsc();
  r->avail_idx = avail;
  r->used_idx = seen;
}

// ---- ring 0 -------------------------------------------------------------------------------

typedef struct {
  const char* name;
  int random;
  u32 block_bytes;
  u32 depth;
} TestKind;

static const TestKind kTests[] = {
    {"randread4k", 1, 4096, 1},
    {"seqread128k", 0, 128 * 1024, 8},
};

typedef struct {
  const TestKind* kind;
  u32 depth;
  u32 block_bytes;
  u64 count;
  u64 warmup;
} BenchConfig;

static void bench_error(const char* what, u64 value) {
  line_begin();
  put_str("error blkbench ");
  put_str(what);
  put_char('=');
  put_dec(value);
  line_end();
}

static void put_field(const char* key, u64 value) {
  put_char(' ');
  put_str(key);
  put_char('=');
  put_dec(value);
}

static int text_is(const char* text, usize length, const char* word) {
  usize i = 0;
  for (; i < length && word[i] != 0; ++i) {
    if (text[i] != word[i]) return 0;
  }
  return i == length && word[i] == 0;
}

// `<test>[,qd=N][,count=N][,warmup=N][,bs=N]`; 0 after printing why it is unusable.
static int parse_config(const char* value, usize length, BenchConfig* config) {
  usize end = 0;
  while (end < length && value[end] != ',') ++end;
  config->kind = NULL;
  for (u32 i = 0; i < ARRAY_SIZE(kTests); ++i) {
    if (text_is(value, end, kTests[i].name)) config->kind = &kTests[i];
  }
  if (config->kind == NULL) {
    bench_error("unknown-test index", 0);
    return 0;
  }
  config->depth = config->kind->depth;
  config->block_bytes = config->kind->block_bytes;
  config->count = 10000;
  config->warmup = 0;
  usize start = end + 1;
  while (start < length) {
    end = start;
    while (end < length && value[end] != ',') ++end;
    const char* item;
    usize item_length;
    u64 number = 0;
    if (token_has_key(value + start, end - start, "qd", &item, &item_length) &&
        parse_u64(item, item_length, &number) && number >= 1 && number <= kMaxDepth) {
      config->depth = (u32)number;
    } else if (token_has_key(value + start, end - start, "count", &item, &item_length) &&
               parse_u64(item, item_length, &number) && number >= 1) {
      config->count = number;
    } else if (token_has_key(value + start, end - start, "warmup", &item, &item_length) &&
               parse_u64(item, item_length, &number)) {
      config->warmup = number;
    } else if (token_has_key(value + start, end - start, "bs", &item, &item_length) &&
               parse_u64(item, item_length, &number) && number >= kSectorBytes &&
               number <= kMaxBlockBytes && number % kSectorBytes == 0) {
      config->block_bytes = (u32)number;
    } else {
      bench_error("bad-option index", start);
      return 0;
    }
    start = end + 1;
  }
  return 1;
}

static int find_device(void) {
  for (u32 slot = 0; slot < kPciSlots; ++slot) {
    if (pci_config_read32(slot, kCfgVendorDevice) == kVirtioBlkPciId) return (int)slot;
  }
  return -1;
}

typedef struct {
  u64 common;
  u64 device_config;
  u64 notify;
  u32 notify_length;
  u32 notify_multiplier;
} PciDevice;

static u32 get_status(const PciDevice* dev) { return read8(dev->common + kCommonDeviceStatus); }
static void set_status(const PciDevice* dev, u32 status) {
  mmio_write8(dev->common + kCommonDeviceStatus, (u8)status);
}

static u32 reset_device(const PciDevice* dev) {
  set_status(dev, 0);
  u32 status = get_status(dev);
  for (u32 i = 0; i < kResetPolls && status != 0; ++i) status = get_status(dev);
  return status;
}

static void set_queue_address(const PciDevice* dev, u32 offset, u64 address) {
  mmio_write32(dev->common + offset, (u32)address);
  mmio_write32(dev->common + offset + 4, (u32)(address >> 32));
}

// BAR placement and the regions this driver uses (as virtio_blk_pci_drive does).
static int locate_device(u32 slot, PciDevice* dev) {
  VirtioPciCaps caps;
  virtio_pci_read_capabilities(slot, &caps);
  const VirtioPciRegion* common = &caps.regions[kCapCommon];
  const VirtioPciRegion* notify = &caps.regions[kCapNotify];
  const VirtioPciRegion* device = &caps.regions[kCapDevice];
  if (!common->present || !notify->present || !device->present) {
    bench_error("missing-cap slot", slot);
    return 0;
  }
  u32 command = pci_config_read16(slot, kCfgCommand);
  pci_config_write16(slot, kCfgCommand, (u16)(command & ~(u32)(kCommandMemory | kCommandBusMaster)));
  u64 bar_size = 0;
  u32 bar = common->bar;
  u64 base = virtio_pci_place_bar(slot, bar, kBarRelocation, "blkbench", &bar_size);
  if (base == 0) return 0;
  if (!virtio_pci_region_fits("blkbench", "common", common->bar, common->offset, common->length, bar,
                              bar_size, kCommonCfgLength) ||
      !virtio_pci_region_fits("blkbench", "notify", notify->bar, notify->offset, notify->length, bar,
                              bar_size, 2) ||
      !virtio_pci_region_fits("blkbench", "device", device->bar, device->offset, device->length, bar,
                              bar_size, kBlkConfigLength)) {
    return 0;
  }
  pci_config_write16(slot, kCfgCommand,
                     (u16)(command | kCommandMemory | kCommandBusMaster | kCommandIntxDisable));
  dev->common = base + common->offset;
  dev->device_config = base + device->offset;
  dev->notify = base + notify->offset;
  dev->notify_length = notify->length;
  dev->notify_multiplier = caps.notify_multiplier;
  return 1;
}

static void zero_area(u64 offset, u64 bytes) {
  volatile u64* words = (volatile u64*)(usize)(kAreaBase + offset);
  for (u64 i = 0; i < bytes / 8; ++i) words[i] = 0;
}

// §3.1.1 up to DRIVER_OK with queue 0 in the benchmark area. 0 after printing why not.
static int initialise(const PciDevice* dev, BenchRun* run) {
  u32 status = reset_device(dev);
  if (status != 0) {
    bench_error("reset-status", status);
    return 0;
  }
  status = kStatusAcknowledge | kStatusDriver;
  set_status(dev, kStatusAcknowledge);
  set_status(dev, status);
  mmio_write32(dev->common + kCommonDeviceFeatureSelect, 1);
  u64 offered = (u64)mmio_read32(dev->common + kCommonDeviceFeature) << 32;
  if (!(offered & kFeatureVersion1)) {
    bench_error("no-version-1 features-high", offered >> 32);
    set_status(dev, status | kStatusFailed);
    return 0;
  }
  // Nothing but VERSION_1: no indirect descriptors, no event index, one queue.
  mmio_write32(dev->common + kCommonDriverFeatureSelect, 0);
  mmio_write32(dev->common + kCommonDriverFeature, 0);
  mmio_write32(dev->common + kCommonDriverFeatureSelect, 1);
  mmio_write32(dev->common + kCommonDriverFeature, (u32)(kFeatureVersion1 >> 32));
  status |= kStatusFeaturesOk;
  set_status(dev, status);
  if (!(get_status(dev) & kStatusFeaturesOk)) {
    bench_error("features-ok", 0);
    set_status(dev, status | kStatusFailed);
    return 0;
  }
  if (read16(dev->common + kCommonNumQueues) < 1) {
    bench_error("num-queues", 0);
    return 0;
  }
  mmio_write16(dev->common + kCommonQueueSelect, 0);
  u32 size_max = read16(dev->common + kCommonQueueSize);
  u32 in_use = read16(dev->common + kCommonQueueEnable);
  if (in_use != 0 || size_max < kDescsPerRequest) {
    bench_error("queue size-max", size_max);
    set_status(dev, status | kStatusFailed);
    return 0;
  }
  u32 size = kMaxQueueSize;
  while (size > size_max) size >>= 1;  // split queues: powers of two (§2.7)
  u32 notify_off = read16(dev->common + kCommonQueueNotifyOff);
  u64 notify_offset = (u64)notify_off * dev->notify_multiplier;
  if (notify_offset + 2 > dev->notify_length) {
    bench_error("queue-notify-off", notify_off);
    set_status(dev, status | kStatusFailed);
    return 0;
  }
  zero_area(kAreaDesc, kAreaHeaders);  // descriptor table, avail and used rings
  run->desc = (volatile Desc*)(usize)(kAreaBase + kAreaDesc);
  run->avail = (volatile Avail*)(usize)(kAreaBase + kAreaAvail);
  run->used = (volatile Used*)(usize)(kAreaBase + kAreaUsed);
  run->headers = (volatile BlkHeader*)(usize)(kAreaBase + kAreaHeaders);
  run->status = (volatile u8*)(usize)(kAreaBase + kAreaStatus);
  run->data = kAreaBase + kAreaData;
  run->avail->flags = kAvailNoInterrupt;
  run->queue_size = (u16)size;
  run->notify = dev->notify + notify_offset;
  mmio_write16(dev->common + kCommonQueueSize, (u16)size);
  set_queue_address(dev, kCommonQueueDesc, kAreaBase + kAreaDesc);
  set_queue_address(dev, kCommonQueueDriver, kAreaBase + kAreaAvail);
  set_queue_address(dev, kCommonQueueDevice, kAreaBase + kAreaUsed);
  mmio_write16(dev->common + kCommonQueueEnable, 1);
  status |= kStatusDriverOk;
  set_status(dev, status);
  return 1;
}

// One pass of the loop in ring 3; 0 after printing how ring 3 ended if it did not return.
static int run_ring3(BenchRun* run, u64 count) {
  run->count = count;
  Ring3Exit exit;
  if (ring3_run(bench_loop, run, g_ring3_stack, sizeof(g_ring3_stack), &exit)) return 1;
  line_begin();
  put_str("error blkbench ring3 vector=");
  put_dec(exit.vector);
  put_str(" error-code=");
  put_hex(exit.error_code);
  put_str(" rip=");
  put_hex(exit.rip);
  put_str(" cs=");
  put_hex(exit.cs);
  put_str(" cr2=");
  put_hex(exit.cr2);
  line_end();
  return 0;
}

static void put_run_counts(const BenchRun* run) {
  put_field("completed", run->completed);
  put_field("errors", run->errors);
  put_field("notifies", run->notifies);
  put_field("bad-ids", run->bad_ids);
  put_field("timed-out", run->timed_out);
}

void blk_bench_run(const char* cmdline) {
  const char* value;
  usize length;
  if (!cmdline_value(cmdline, "skiff.blkbench", &value, &length)) return;
  BenchConfig config;
  if (!parse_config(value, length, &config)) return;
  int slot = find_device();
  if (slot < 0) {
    bench_error("no-device pci-slots", kPciSlots);
    return;
  }
  PciDevice dev;
  if (!locate_device((u32)slot, &dev)) return;
  BenchRun* run = &g_run;
  memset(run, 0, sizeof(*run));
  if (!initialise(&dev, run)) return;
  u64 capacity = mmio_read32(dev.device_config) | (u64)mmio_read32(dev.device_config + 4) << 32;
  u32 depth = config.depth;
  if (depth > run->queue_size / kDescsPerRequest) depth = run->queue_size / kDescsPerRequest;
  run->depth = depth;
  run->block_bytes = config.block_bytes;
  run->random = config.kind->random;
  run->blocks = capacity / (config.block_bytes / kSectorBytes);
  run->rng = 0x9e3779b97f4a7c15ull;
  line_begin();
  put_str("blkbench device");
  put_field("slot", (u64)slot);
  put_field("capacity", capacity);
  put_field("queue-size", run->queue_size);
  put_str(" notify=");
  put_hex(run->notify);
  line_end();
  line_begin();
  put_str("blkbench test=");
  put_str(config.kind->name);
  put_field("bs", config.block_bytes);
  put_field("qd", depth);
  put_field("count", config.count);
  put_field("warmup", config.warmup);
  line_end();
  if (run->blocks == 0) {
    bench_error("capacity", capacity);
    return;
  }
  if (config.warmup != 0) {
    if (!run_ring3(run, config.warmup)) return;
    line_begin();
    put_str("blkbench warmup");
    put_run_counts(run);
    line_end();
  }
  // The host times the newline of this line to the first byte of the blkbench-end line.
  line_begin();
  put_str("blkbench-start");
  line_end();
  int returned = run_ring3(run, config.count);
  line_begin();
  put_str("blkbench-end");
  if (returned) {
    put_run_counts(run);
    put_field("tsc-cycles", run->tsc_end - run->tsc_start);
  } else {
    put_str(" failed=1");
  }
  line_end();
  line_begin();
  put_str("blkbench reset-status=");
  put_dec(reset_device(&dev));
  line_end();
}
