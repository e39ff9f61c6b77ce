// SPDX-License-Identifier: Apache-2.0
// The virtio-blk benchmark payload (bench/blk_bench.cc runs it under skiff and QEMU):
// with `skiff.blkbench=<test>[,qd=N][,count=N][,warmup=N][,bs=N]` ring 0 sets up the first
// virtio-blk PCI function (1af4:1042) through virtio_dev.c (virtio 1.2 §3.1.1, §4.1.5.1.3:
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
#include "virtio_dev.h"

enum {
  // ---- split virtqueue (§2.7)
  kMaxQueueSize = 256,
  kDescsPerRequest = 3,  // header -> data -> status
  // ---- virtio-blk (§5.2)
  kBlkTypeIn = 0,
  kBlkConfigCapacity = 0,  // le64
  kBlkConfigLength = 8,    // only capacity is read
  kSectorBytes = 512,
  kStatusNone = 0xff,
  // ---- the benchmark
  kMaxDepth = 64,
  kMaxBlockBytes = 128 * 1024,
  kRing3StackBytes = 16384,
};

static const u32 kVirtioBlkPciId = 0x10421af4;  // device << 16 | vendor (§4.1.2.1)
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
  u32 type;
  u32 reserved;
  u64 sector;
} BlkHeader;

// Shared between ring 0 and the ring-3 loop (the image is mapped U/S by ring3.S).
typedef struct {
  // set up by ring 0
  volatile VdevDesc* desc;
  volatile VdevAvail* avail;
  volatile VdevUsed* used;
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
  if (!(r->used->flags & kVdevUsedNoNotify)) {
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
    r->desc[head] = (VdevDesc){(u64)(usize)&r->headers[slot], sizeof(BlkHeader), kVdevDescNext, (u16)(head + 1)};
    r->desc[head + 1] = (VdevDesc){data, r->block_bytes, kVdevDescWrite | kVdevDescNext, (u16)(head + 2)};
    r->desc[head + 2] = (VdevDesc){(u64)(usize)&r->status[slot], 1, kVdevDescWrite, 0};
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

static void zero_area(u64 offset, u64 bytes) {
  volatile u64* words = (volatile u64*)(usize)(kAreaBase + offset);
  for (u64 i = 0; i < bytes / 8; ++i) words[i] = 0;
}

// §3.1.1 up to DRIVER_OK with queue 0 in the benchmark area. 0 after printing why not.
static int initialise(VirtioDev* dev, BenchRun* run) {
  if (!vdev_begin(dev)) return 0;
  u64 offered = vdev_device_features(dev);
  if (!(offered & kVdevFeatureVersion1)) {
    bench_error("no-version-1 features-high", offered >> 32);
    vdev_fail(dev);
    return 0;
  }
  // Nothing but VERSION_1: no indirect descriptors, no event index, one queue.
  if (!vdev_accept_features(dev, kVdevFeatureVersion1)) {
    bench_error("features-ok", 0);
    return 0;
  }
  u32 size_max = 0;
  u32 in_use = 0;
  if (!vdev_query_queue(dev, 0, &size_max, &in_use)) return 0;
  if (in_use != 0 || size_max < kDescsPerRequest) {
    bench_error("queue size-max", size_max);
    vdev_fail(dev);
    return 0;
  }
  zero_area(kAreaDesc, kAreaHeaders);  // descriptor table, avail and used rings
  VdevQueue queue;
  memset(&queue, 0, sizeof(queue));
  queue.desc = (volatile VdevDesc*)(usize)(kAreaBase + kAreaDesc);
  queue.avail = kAreaBase + kAreaAvail;
  queue.used = kAreaBase + kAreaUsed;
  if (!vdev_enable_queue(dev, &queue, 0, size_max, kMaxQueueSize)) {
    vdev_fail(dev);
    return 0;
  }
  run->desc = queue.desc;
  run->avail = (volatile VdevAvail*)(usize)queue.avail;
  run->used = (volatile VdevUsed*)(usize)queue.used;
  run->headers = (volatile BlkHeader*)(usize)(kAreaBase + kAreaHeaders);
  run->status = (volatile u8*)(usize)(kAreaBase + kAreaStatus);
  run->data = kAreaBase + kAreaData;
  run->queue_size = queue.size;
  run->notify = queue.notify;
  vdev_driver_ok(dev);
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
  int slot = vdev_pci_find(kVirtioBlkPciId);
  if (slot < 0) {
    bench_error("no-device pci-slots", kVdevPciSlots);
    return;
  }
  VirtioPciCaps caps;
  virtio_pci_read_capabilities((u32)slot, &caps);
  if (!vdev_pci_has_regions(&caps)) {
    bench_error("missing-cap slot", (u64)slot);
    return;
  }
  VirtioDev dev;
  if (!vdev_open_pci_caps(&dev, "blkbench", (u32)slot, &caps, kBarRelocation, kBlkConfigLength, 1)) return;
  BenchRun* run = &g_run;
  memset(run, 0, sizeof(*run));
  if (!initialise(&dev, run)) return;
  u64 capacity = vdev_config64(&dev, kBlkConfigCapacity);
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
  put_dec(vdev_reset(&dev));
  line_end();
}
