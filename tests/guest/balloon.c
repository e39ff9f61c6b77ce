// SPDX-License-Identifier: Apache-2.0
// virtio-balloon (virtio 1.2 §5.5) from the guest's side, only with skiff.virtio=1 and
// skiff.balloon=<MiB>: the first balloon device (virtio-mmio slots first, then PCI bus 0) follows
// the host's target, polling with interrupts off. README.md, "virtio-balloon", lists the
// lines; tests/integration/virtio_balloon_test.cc drives the target and measures the host
// side (resident memory, the hugepage pool).
//
// The balloon is taken from a fixed region of <MiB> MiB from kRegionBase (16 MiB) up, one
// 4 KiB page per PFN; the host sizes guest RAM to hold it:
//   0. write every page of the region, so that the host has it resident ("touched=");
//   1. wait for a non-zero target T (the spec's initial target, or one the host sets);
//   2. give pages [0, T) of the region to the host on inflateq and set `actual` = T;
//   3. wait for the target to change to T2 < T and take the pages above T2 back on
//      deflateq; count the pages that read back as zero (the host dropped them) and those
//      that kept their pattern, write the pattern into each again and read it back;
//   4. repeat from 2 while the target is non-zero; end at target 0.
// With STATS_VQ offered, the statistics buffer is refilled and posted again each time the
// device returns it (§5.5.6.3); the number of rounds is printed at the end.
#include "virtio_dev.h"

enum {
  kConfigNumPages = 0,  // le32, written by the device: the target
  kConfigActual = 4,    // le32, written by the driver
  kConfigLength = 8,
  kQueueInflate = 0,
  kQueueDeflate = 1,
  kQueueStats = 2,
  kQueueSizeWanted = 8,
  kPfnsPerBuffer = 2048,  // one 8 KiB buffer of le32 PFNs per request
  kStatTagMinorFaults = 3,
  kStatTagFreeMemory = 4,
  kStatTagTotalMemory = 5,
  kStatEntries = 3,
  kPageShift = 12,
};

static const u64 kFeatureStatsVq = 1ull << 1;  // VIRTIO_BALLOON_F_STATS_VQ
static const u64 kRegionBase = 16ull << 20;     // clear of the image (1 MiB) and its .bss
// The value reported as free_memory: the host test looks for it.
static const u64 kReportedFreeMemory = 0x5ba110000ull;
static const u64 kBarRelocation = 0xc3000000ull;  // clear of rng, blk and net (virtio_pci.c)
// Target polls before the driver gives up waiting for the host (each poll is a config read).
static const u32 kTargetPolls = 20000000;

typedef struct {
  u16 tag;
  u64 value;
} __attribute__((packed)) StatEntry;

_Static_assert(sizeof(StatEntry) == 10, "struct virtio_balloon_stat is 10 bytes");

static volatile VdevDesc g_desc[3][kQueueSizeWanted] __attribute__((aligned(4096)));
static volatile u16 g_avail[3][3 + kQueueSizeWanted] __attribute__((aligned(16)));
static volatile u32 g_used[3][2 + 2 * kQueueSizeWanted] __attribute__((aligned(16)));
static u32 g_pfns[kPfnsPerBuffer] __attribute__((aligned(16)));
static volatile StatEntry g_stats[kStatEntries] __attribute__((aligned(16)));

typedef struct {
  VirtioDev dev;
  VdevQueue queues[3];
  int has_stats;
  u64 stats_rounds;
  u64 ram_pages;  // pages of the region (skiff.balloon)
} Balloon;

static int g_enabled;  // skiff.balloon=1
static int g_driven;   // the first balloon device has been taken
static int g_once;     // skiff.balloon=<MiB>,once: stop after the first inflation

static void balloon_line_begin(void) {
  line_begin();
  put_str("virtio-balloon");
}

static void balloon_error(const char* what, u64 value) {
  line_begin();
  put_str("error virtio-balloon ");
  put_str(what);
  put_char('=');
  put_dec(value);
  line_end();
}

// ---- statistics -------------------------------------------------------------------------------

static void post_stats(Balloon* b) {
  g_stats[0].tag = kStatTagMinorFaults;
  g_stats[0].value = b->stats_rounds;
  g_stats[1].tag = kStatTagFreeMemory;
  g_stats[1].value = kReportedFreeMemory;
  g_stats[2].tag = kStatTagTotalMemory;
  g_stats[2].value = b->ram_pages << kPageShift;
  volatile VdevDesc* desc = &g_desc[kQueueStats][0];
  desc->addr = (u64)(usize)g_stats;
  desc->len = sizeof(g_stats);
  desc->flags = 0;  // §5.5.6.3: the device reads the statistics
  desc->next = 0;
  u16 head = 0;
  vdev_post(&b->dev, &b->queues[kQueueStats], &head, 1);
}

// The device returns the buffer when it wants fresh numbers: refill and post it again.
static void service_stats(Balloon* b) {
  u32 id, length;
  if (!b->has_stats || !vdev_take_used(&b->queues[kQueueStats], &id, &length)) return;
  ++b->stats_rounds;
  post_stats(b);
}

// ---- inflate and deflate ------------------------------------------------------------------------

// Sends pages [first, first + count) of the region on `queue`, kPfnsPerBuffer at a time.
static int send_pfns(Balloon* b, u32 queue, u64 first, u64 count) {
  const u64 base_pfn = kRegionBase >> kPageShift;
  while (count != 0) {
    u32 n = count < kPfnsPerBuffer ? (u32)count : (u32)kPfnsPerBuffer;
    for (u32 i = 0; i < n; ++i) g_pfns[i] = (u32)(base_pfn + first + i);
    volatile VdevDesc* desc = &g_desc[queue][0];
    desc->addr = (u64)(usize)g_pfns;
    desc->len = n * 4;
    desc->flags = 0;
    desc->next = 0;
    u16 head = 0;
    vdev_post(&b->dev, &b->queues[queue], &head, 1);
    u32 id = 0, length = 0;
    int done = 0;
    for (u32 round = 0; round < 64 && !done; ++round) {
      done = vdev_wait_used(&b->dev, &b->queues[queue], &id, &length);
      service_stats(b);
    }
    if (!done) {
      balloon_error(queue == kQueueInflate ? "inflate-lost-pfn" : "deflate-lost-pfn", base_pfn + first);
      return 0;
    }
    first += n;
    count -= n;
  }
  return 1;
}

static u64 page_address(u64 page) { return kRegionBase + (page << kPageShift); }

static u32 pattern(u64 page) { return (u32)(0x5b000000u | (u32)page); }

// Waits until the target differs from `current`, serving statistics meanwhile.
static int wait_target(Balloon* b, u32 current, u32* target) {
  for (u32 poll = 0; poll < kTargetPolls; ++poll) {
    u32 now = vdev_config32(&b->dev, kConfigNumPages);
    if (now != current) {
      *target = now;
      return 1;
    }
    service_stats(b);
  }
  balloon_error("target-wait", current);
  return 0;
}

static void follow_target(Balloon* b) {
  u32 held = 0;  // pages in the balloon now
  u32 target = 0;
  while (wait_target(b, held, &target)) {
    balloon_line_begin();
    put_field("target", target);
    put_field("held", held);
    line_end();
    if (target > b->ram_pages) {
      balloon_error("target-beyond-region", target);
      return;
    }
    if (target > held) {
      if (!send_pfns(b, kQueueInflate, held, target - held)) return;
      vdev_config_write32(&b->dev, kConfigActual, target);
      balloon_line_begin();
      put_field("inflated", target - held);
      put_field("actual", vdev_config32(&b->dev, kConfigActual));
      line_end();
    } else {
      if (!send_pfns(b, kQueueDeflate, target, held - target)) return;
      vdev_config_write32(&b->dev, kConfigActual, target);
      // Pages the host really released read as zero now (anonymous and file memory, and
      // whole huge pages); a page it kept holds the pattern written before inflating.
      u64 zeroed = 0, kept = 0, rewrite_ok = 1;
      for (u64 page = target; page < held; ++page) {
        u32 value = mmio_read32(page_address(page));
        if (value == 0) ++zeroed;
        if (value == pattern(page)) ++kept;
        mmio_write32(page_address(page), pattern(page));
        if (mmio_read32(page_address(page)) != pattern(page)) rewrite_ok = 0;
      }
      balloon_line_begin();
      put_field("deflated", held - target);
      put_field("zeroed", zeroed);
      put_field("kept", kept);
      put_field("rewrite-ok", rewrite_ok);
      put_field("actual", vdev_config32(&b->dev, kConfigActual));
      line_end();
    }
    held = target;
    if (target == 0 || g_once) break;
  }
}

static void drive(Balloon* b, const char* transport, u64 region_mib) {
  g_driven = 1;
  volatile u8* rings[] = {(volatile u8*)g_desc, (volatile u8*)g_avail, (volatile u8*)g_used};
  const usize sizes[] = {sizeof(g_desc), sizeof(g_avail), sizeof(g_used)};
  for (u32 r = 0; r < 3; ++r) {
    for (usize i = 0; i < sizes[r]; ++i) rings[r][i] = 0;
  }
  b->ram_pages = (region_mib << 20) >> kPageShift;

  u64 offered = 0;
  int ok = vdev_negotiate(&b->dev, kVdevFeatureVersion1 | kFeatureStatsVq, &offered);
  balloon_line_begin();
  put_str(" transport=");
  put_str(transport);
  put_str(" device-features=");
  put_hex(offered);
  put_str(" driver-features=");
  put_hex(b->dev.features);
  put_field("features-ok", (u64)ok);
  line_end();
  if (!ok) return;
  b->has_stats = (b->dev.features & kFeatureStatsVq) != 0;
  u32 count = b->has_stats ? 3 : 2;
  for (u32 q = 0; q < count; ++q) {
    VdevQueue* queue = &b->queues[q];
    queue->desc = g_desc[q];
    queue->avail = (u64)(usize)g_avail[q];
    queue->used = (u64)(usize)g_used[q];
    if (!vdev_setup_queue(&b->dev, queue, (u16)q, kQueueSizeWanted, 1)) {
      vdev_fail(&b->dev);
      return;
    }
  }
  vdev_driver_ok(&b->dev);
  // §5.5.6.3: the first statistics buffer goes out right after DRIVER_OK.
  if (b->has_stats) post_stats(b);
  balloon_line_begin();
  put_field("region-pages", b->ram_pages);
  put_field("stats", (u64)b->has_stats);
  put_field("status", vdev_status(&b->dev));
  line_end();

  // The host is to find the whole region resident before any of it is given back.
  for (u64 page = 0; page < b->ram_pages; ++page) mmio_write32(page_address(page), pattern(page));
  balloon_line_begin();
  put_field("touched", b->ram_pages);
  line_end();

  follow_target(b);

  balloon_line_begin();
  put_field("stats-rounds", b->stats_rounds);
  put_field("reset-status", vdev_reset(&b->dev));
  line_end();
}

// ---- entry points -----------------------------------------------------------------------------

static u64 g_region_mib;  // skiff.balloon

void balloon_configure(const char* cmdline) {
  g_enabled = 0;
  g_driven = 0;
  const char* value;
  usize length;
  u64 mib = 0;
  if (!cmdline_value(cmdline, "skiff.balloon", &value, &length)) return;
  // "<MiB>" or "<MiB>,once": with once, the driver stops after the first inflation (the
  // benchmark's run ends there instead of waiting for the next target).
  static const char kOnce[] = ",once";
  const usize once_length = sizeof(kOnce) - 1;
  g_once = length > once_length && bytes_equal(value + length - once_length, kOnce, once_length);
  if (g_once) length -= once_length;
  // The region must stay inside the identity map and the u32 PFNs.
  if (!parse_u64(value, length, &mib) || mib == 0 || mib > 2048) {
    line_begin();
    put_str("error bad-balloon-region");
    line_end();
    return;
  }
  g_region_mib = mib;
  g_enabled = 1;
}

void balloon_mmio_drive(u64 base, u32 poll_limit) {
  if (!g_enabled || g_driven) return;
  Balloon b;
  memset(&b, 0, sizeof(b));
  vdev_open_mmio(&b.dev, "virtio-balloon", base, poll_limit);
  drive(&b, "mmio", g_region_mib);
}

void balloon_pci_drive(u32 slot, u32 poll_limit) {
  if (!g_enabled || g_driven) return;
  g_driven = 1;
  Balloon b;
  memset(&b, 0, sizeof(b));
  if (!vdev_open_pci(&b.dev, "virtio-balloon", slot, kBarRelocation, kConfigLength, poll_limit)) return;
  drive(&b, "pci", g_region_mib);
}
