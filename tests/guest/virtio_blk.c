// SPDX-License-Identifier: Apache-2.0
// virtio-blk (virtio 1.2 §5.2) from the guest's side, over virtio-mmio (§4.2) or virtio-pci
// (§4.1), only with skiff.virtio=1 and skiff.blk=<tests>: the first block device found (the
// virtio-mmio slots first, then PCI bus 0) is initialised with the features this driver
// understands, its configuration and GET_ID answer are printed, and the requested tests run
// as single requests on queue 0, each a descriptor chain header → data → status (FLUSH:
// header → status), posted one at a time and polled with interrupts off. README.md,
// "virtio-blk", lists the lines; tests/integration/virtio_blk_test.cc checks them and the
// host file afterwards.
//
// The data pattern and the sector ranges are fixed so the host can check its file: see the
// kSector* constants and pattern_byte(). The transport (open, negotiate, queue, post and
// poll) is virtio_dev.c's.
#include "virtio_dev.h"

enum {
  kGenerationTries = 4,  // §2.5.1: re-read while config_generation changes
  kQueueSizeWanted = 8,
  // ---- virtio-blk (§5.2)
  kBlkConfigCapacity = 0,  // le64
  kBlkConfigSizeMax = 8,
  kBlkConfigSegMax = 12,
  kBlkConfigBlkSize = 20,
  kBlkConfigPhysicalBlockExp = 24,  // u8
  kBlkConfigAlignmentOffset = 25,   // u8
  kBlkConfigMinIoSize = 26,         // le16
  kBlkConfigOptIoSize = 28,
  kBlkConfigWriteback = 32,  // u8
  kBlkConfigNumQueues = 34,  // le16
  kBlkConfigMaxDiscardSectors = 36,
  kBlkConfigMaxDiscardSeg = 40,
  kBlkConfigDiscardAlignment = 44,
  kBlkConfigMaxWriteZeroesSectors = 48,
  kBlkConfigMaxWriteZeroesSeg = 52,
  kBlkConfigWriteZeroesMayUnmap = 56,  // u8
  kBlkConfigLength = 60,               // through write_zeroes_may_unmap and its padding
  kBlkTypeIn = 0,
  kBlkTypeOut = 1,
  kBlkTypeFlush = 4,
  kBlkTypeGetId = 8,
  kBlkTypeDiscard = 11,
  kBlkTypeWriteZeroes = 13,
  kBlkIdBytes = 20,
  kStatusNone = 0xff,  // what the status byte holds until the device writes it
  kSectorBytes = 512,
  kDataBytes = 8192,  // two 4 KiB blocks: the largest transfer (the straddling read)
  // ---- what the tests touch (512-byte sectors; everything 4 KiB-aligned so a disk with
  // 4096-byte logical blocks takes it as it is)
  kSectorPattern = 8,     // write-read: 4 KiB at 4 KiB
  kPatternBytes = 4096,
  kSectorDiscard = 128,   // discard: 64 KiB at 64 KiB
  kSectorZeroes = 256,    // write-zeroes: 64 KiB at 128 KiB
  kRangeSectors = 128,
  kReadBackBytes = 8192,  // read after discard / write-zeroes: the range's first 8 KiB
  // ---- skiff.blk tests
  kTestEnabled = 1 << 0,  // probe, configuration, GET_ID
  kTestWriteRead = 1 << 1,
  kTestOutOfRange = 1 << 2,
  kTestDiscard = 1 << 3,
  kTestWriteZeroes = 1 << 4,
  kTestAll = 0x1f,
};

static const u64 kBlkFeatureSizeMax = 1ull << 1;
static const u64 kBlkFeatureSegMax = 1ull << 2;
static const u64 kBlkFeatureRo = 1ull << 5;
static const u64 kBlkFeatureBlkSize = 1ull << 6;
static const u64 kBlkFeatureFlush = 1ull << 9;
static const u64 kBlkFeatureTopology = 1ull << 10;
static const u64 kBlkFeatureDiscard = 1ull << 13;
static const u64 kBlkFeatureWriteZeroes = 1ull << 14;
// Where a PCI BAR above 4 GiB is moved: inside skiff's 32-bit PCI window, clear of where
// virtio_pci.c puts the entropy device (0xc0000000).
static const u64 kBarRelocation = 0xc1000000ull;

// ---- the requestq, in .bss (identity-mapped) -----------------------------------------------

typedef struct {
  u32 type;
  u32 reserved;
  u64 sector;
} BlkHeader;  // struct virtio_blk_req, device-readable part

typedef struct {
  u64 sector;
  u32 num_sectors;
  u32 flags;
} BlkSegment;  // struct virtio_blk_discard_write_zeroes

typedef struct {
  VdevDesc desc[kQueueSizeWanted] __attribute__((aligned(16)));
  struct {
    u16 flags;
    u16 idx;
    u16 ring[kQueueSizeWanted];
    u16 used_event;
  } avail __attribute__((aligned(2)));
  struct {
    u16 flags;
    u16 idx;
    struct {
      u32 id;
      u32 len;
    } ring[kQueueSizeWanted];
    u16 avail_event;
  } used __attribute__((aligned(4)));
  BlkHeader header __attribute__((aligned(16)));
  BlkSegment segment;
  u8 id[kBlkIdBytes];
  u8 status;
} BlkQueue;

_Static_assert(sizeof(BlkQueue) <= 4096, "the requestq must fit in its page");

static volatile BlkQueue g_queue __attribute__((aligned(4096)));
static u8 g_data[kDataBytes] __attribute__((aligned(4096)));

typedef struct {
  VirtioDev dev;
  VdevQueue queue;  // the requestq, in g_queue
  int dead;         // a request timed out: the device may still own the descriptors
} BlkDevice;

static u32 g_tests;   // skiff.blk, kTest* bits; 0 = off
static int g_driven;  // the first block device has been taken

static void barrier(void) { __asm__ volatile("" : : : "memory"); }
static u64 address_of(const volatile void* p) { return (u64)(usize)p; }

static void blk_line_begin(void) {
  line_begin();
  put_str("virtio-blk ");
}

static void blk_error(const char* what, u64 value) {
  line_begin();
  put_str("error virtio-blk ");
  put_str(what);
  put_char('=');
  put_dec(value);
  line_end();
}

static void clear_queue(void) {
  volatile u8* bytes = (volatile u8*)&g_queue;
  for (usize i = 0; i < sizeof(g_queue); ++i) bytes[i] = 0;
}

// Queue 0 (§4.1.5.1.3, §4.2.3.2): unused and at least 3 descriptors (one request), sized,
// given g_queue's rings, enabled. 0 after printing why not.
static int setup_queue(BlkDevice* blk, u32* size_max) {
  u32 in_use = 0;
  if (!vdev_query_queue(&blk->dev, 0, size_max, &in_use)) return 0;
  if (in_use != 0 || *size_max < 3) {
    if (in_use != 0) blk_error("queue-in-use", in_use);
    if (*size_max < 3) blk_error("queue-size-max", *size_max);
    return 0;
  }
  clear_queue();
  blk->queue.desc = g_queue.desc;
  blk->queue.avail = address_of(&g_queue.avail);
  blk->queue.used = address_of(&g_queue.used);
  return vdev_enable_queue(&blk->dev, &blk->queue, 0, *size_max, kQueueSizeWanted);
}

// §3.1.1 up to DRIVER_OK. 0 after reporting why it gave up.
static int initialise(BlkDevice* blk) {
  VirtioDev* dev = &blk->dev;
  if (!vdev_begin(dev)) return 0;
  u64 offered = vdev_device_features(dev);
  // No indirect descriptors, event index or multiqueue: one queue, polled.
  u64 wanted = kVdevFeatureVersion1 | kBlkFeatureSizeMax | kBlkFeatureSegMax | kBlkFeatureRo |
               kBlkFeatureBlkSize | kBlkFeatureFlush | kBlkFeatureTopology | kBlkFeatureDiscard |
               kBlkFeatureWriteZeroes;
  int features_ok = vdev_accept_features(dev, offered & wanted);
  blk_line_begin();
  put_str("transport=");
  put_str(dev->is_pci ? "pci" : "mmio");
  put_str(" device-features=");
  put_hex(offered);
  put_str(" driver-features=");
  put_hex(dev->features);
  put_field("features-ok", (u64)features_ok);
  line_end();
  if (!features_ok) return 0;
  u32 size_max = 0;
  if (!setup_queue(blk, &size_max)) {
    vdev_fail(dev);
    return 0;
  }
  vdev_driver_ok(dev);
  blk_line_begin();
  put_str("queue-size-max=");
  put_dec(size_max);
  put_field("queue-size", blk->queue.size);
  put_field("status", vdev_status(dev));
  line_end();
  return 1;
}

// ---- requests ---------------------------------------------------------------------------------

typedef struct {
  u32 status;    // the status byte, kStatusNone if the device wrote none or never answered
  u32 used_len;  // bytes the device says it wrote (data + status)
} Completion;

static void set_desc(u16 index, u64 addr, u32 length, u16 flags, u16 next) {
  g_queue.desc[index].addr = addr;
  g_queue.desc[index].len = length;
  g_queue.desc[index].flags = flags;
  g_queue.desc[index].next = next;
}

// One request: header (device-readable), optional data (`data_bytes` at `data`, readable
// or writable), status byte; posted alone and polled until the device returns it.
static Completion submit(BlkDevice* blk, u32 type, u64 sector, u64 data, u32 data_bytes, int device_writes) {
  Completion done = {kStatusNone, 0};
  if (blk->dead) return done;
  g_queue.header.type = type;
  g_queue.header.reserved = 0;
  g_queue.header.sector = sector;
  g_queue.status = kStatusNone;
  u16 status_index = data_bytes != 0 ? 2 : 1;
  set_desc(0, address_of(&g_queue.header), sizeof(BlkHeader), kVdevDescNext, 1);
  if (data_bytes != 0) {
    set_desc(1, data, data_bytes, (u16)(kVdevDescNext | (device_writes ? kVdevDescWrite : 0)), 2);
  }
  set_desc(status_index, address_of(&g_queue.status), 1, kVdevDescWrite, 0);
  u16 head = 0;
  vdev_post(&blk->dev, &blk->queue, &head, 1);
  u32 id = 0;
  u32 used_len = 0;
  if (!vdev_wait_used(&blk->dev, &blk->queue, &id, &used_len)) {
    blk_error("timeout type", type);
    blk->dead = 1;
    return done;
  }
  if (id != 0) blk_error("used-id", id);
  done.used_len = used_len;
  done.status = g_queue.status;
  return done;
}

static u64 data_address(void) { return address_of(g_data); }

static Completion transfer(BlkDevice* dev, u32 type, u64 sector, u32 bytes) {
  return submit(dev, type, sector, data_address(), bytes, type == kBlkTypeIn);
}

// DISCARD or WRITE_ZEROES of one range (§5.2.6.2; flags 0: no unmap request).
static Completion range_request(BlkDevice* dev, u32 type, u64 sector, u32 sectors) {
  g_queue.segment.sector = sector;
  g_queue.segment.num_sectors = sectors;
  g_queue.segment.flags = 0;
  return submit(dev, type, 0, address_of(&g_queue.segment), sizeof(BlkSegment), 0);
}

static void fill_data(u8 value) {
  u64* words = (u64*)g_data;
  for (u32 i = 0; i < kDataBytes / 8; ++i) words[i] = value * 0x0101010101010101ull;
  barrier();
}

static int data_all_zero(u32 bytes) {
  barrier();
  const u64* words = (const u64*)g_data;
  u64 bits = 0;
  for (u32 i = 0; i < bytes / 8; ++i) bits |= words[i];
  return bits == 0;
}

// The write-read pattern: byte `offset` of sector `sector` (README.md, "virtio-blk").
static u8 pattern_byte(u64 sector, u32 offset) { return (u8)(sector * 7 + offset); }

// ---- the tests ----------------------------------------------------------------------------

static void report_config(const VirtioDev* dev, u64* capacity, u32* blk_size) {
  u32 generation = 0;
  u32 tries = 0;
  u64 cap;
  u32 fields[13];
  do {
    generation = vdev_config_generation(dev);
    cap = vdev_config64(dev, kBlkConfigCapacity);
    fields[0] = vdev_config32(dev, kBlkConfigSizeMax);
    fields[1] = vdev_config32(dev, kBlkConfigSegMax);
    fields[2] = vdev_config32(dev, kBlkConfigBlkSize);
    fields[3] = vdev_config8(dev, kBlkConfigPhysicalBlockExp);
    fields[4] = vdev_config8(dev, kBlkConfigAlignmentOffset);
    fields[5] = vdev_config16(dev, kBlkConfigMinIoSize);
    fields[6] = vdev_config32(dev, kBlkConfigOptIoSize);
    fields[7] = vdev_config8(dev, kBlkConfigWriteback);
    fields[8] = vdev_config16(dev, kBlkConfigNumQueues);
    fields[9] = vdev_config32(dev, kBlkConfigMaxDiscardSectors);
    fields[10] = vdev_config32(dev, kBlkConfigDiscardAlignment);
    fields[11] = vdev_config32(dev, kBlkConfigMaxWriteZeroesSectors);
    fields[12] = vdev_config8(dev, kBlkConfigWriteZeroesMayUnmap);
  } while (++tries < kGenerationTries && vdev_config_generation(dev) != generation);
  blk_line_begin();
  put_str("config");
  put_field("capacity", cap);
  put_field("size-max", fields[0]);
  put_field("seg-max", fields[1]);
  put_field("blk-size", fields[2]);
  put_field("physical-block-exp", fields[3]);
  put_field("alignment-offset", fields[4]);
  put_field("min-io-size", fields[5]);
  put_field("opt-io-size", fields[6]);
  put_field("writeback", fields[7]);
  put_field("num-queues", fields[8]);
  put_field("max-discard-sectors", fields[9]);
  put_field("discard-alignment", fields[10]);
  put_field("max-write-zeroes-sectors", fields[11]);
  put_field("write-zeroes-may-unmap", fields[12]);
  put_field("ro", (dev->features & kBlkFeatureRo) != 0);
  put_field("flush", (dev->features & kBlkFeatureFlush) != 0);
  put_field("discard", (dev->features & kBlkFeatureDiscard) != 0);
  put_field("write-zeroes", (dev->features & kBlkFeatureWriteZeroes) != 0);
  line_end();
  *capacity = cap;
  // Without BLK_SIZE, or with a value this driver cannot use, requests stay 512-aligned.
  u32 size = fields[2];
  *blk_size = (dev->features & kBlkFeatureBlkSize) && size >= kSectorBytes && size <= 4096 &&
                      (size & (size - 1)) == 0
                  ? size
                  : kSectorBytes;
}

static void test_get_id(BlkDevice* dev) {
  for (u32 i = 0; i < kBlkIdBytes; ++i) g_queue.id[i] = 0;
  Completion done = submit(dev, kBlkTypeGetId, 0, address_of(g_queue.id), kBlkIdBytes, 1);
  blk_line_begin();
  put_str("get-id");
  put_field("id-status", done.status);
  put_field("id-len", done.used_len);
  // §5.2.6: up to 20 bytes, NUL-terminated only when shorter. Bytes outside 0x21-0x7e
  // would break the line's key=value words: printed as '?'.
  put_str(" serial=");
  for (u32 i = 0; i < kBlkIdBytes && g_queue.id[i] != 0; ++i) {
    u8 c = g_queue.id[i];
    put_char(c > 0x20 && c < 0x7f ? (char)c : '?');
  }
  line_end();
}

static void test_write_read(BlkDevice* dev) {
  for (u32 s = 0; s < kPatternBytes / kSectorBytes; ++s) {
    for (u32 o = 0; o < kSectorBytes; ++o) g_data[s * kSectorBytes + o] = pattern_byte(kSectorPattern + s, o);
  }
  barrier();
  Completion write = transfer(dev, kBlkTypeOut, kSectorPattern, kPatternBytes);
  Completion flush = {kStatusNone, 0};
  if (dev->dev.features & kBlkFeatureFlush) flush = submit(dev, kBlkTypeFlush, 0, 0, 0, 0);
  fill_data(0);
  Completion read = transfer(dev, kBlkTypeIn, kSectorPattern, kPatternBytes);
  barrier();
  u32 mismatches = 0;
  for (u32 s = 0; s < kPatternBytes / kSectorBytes; ++s) {
    for (u32 o = 0; o < kSectorBytes; ++o) {
      mismatches += g_data[s * kSectorBytes + o] != pattern_byte(kSectorPattern + s, o);
    }
  }
  blk_line_begin();
  put_str("write-read");
  put_field("sector", kSectorPattern);
  put_field("bytes", kPatternBytes);
  put_field("write-status", write.status);
  put_field("write-len", write.used_len);
  put_field("flush-status", flush.status);
  put_field("read-status", read.status);
  put_field("read-len", read.used_len);
  put_field("match", mismatches == 0);
  line_end();
}

static void test_out_of_range(BlkDevice* dev, u64 capacity, u32 blk_size) {
  // §5.2.6.1: a request beyond the capacity is answered IOERR. One block at the capacity,
  // and two blocks whose second one is past the end.
  u64 straddle = capacity >= blk_size / kSectorBytes ? capacity - blk_size / kSectorBytes : 0;
  Completion past = transfer(dev, kBlkTypeIn, capacity, blk_size);
  Completion across = transfer(dev, kBlkTypeIn, straddle, 2 * blk_size);
  Completion huge = transfer(dev, kBlkTypeIn, 0xffffffffffffffffull, blk_size);  // wraps when * 512
  blk_line_begin();
  put_str("out-of-range");
  put_field("sector", capacity);
  put_field("oob-status", past.status);
  put_field("straddle-sector", straddle);
  put_field("straddle-status", across.status);
  put_field("wrap-status", huge.status);
  line_end();
}

// A range request, then the range's first kReadBackBytes read back (pre-filled with 0xa5).
static void test_range(BlkDevice* dev, u32 type, u64 feature, const char* name, const char* key,
                       u64 sector) {
  blk_line_begin();
  put_str(name);
  if (!(dev->dev.features & feature)) {
    put_str(" offered=0");
    line_end();
    return;
  }
  Completion done = range_request(dev, type, sector, kRangeSectors);
  fill_data(0xa5);
  Completion read = transfer(dev, kBlkTypeIn, sector, kReadBackBytes);
  put_field("sector", sector);
  put_field("sectors", kRangeSectors);
  put_char(' ');
  put_str(key);
  put_str("-status=");
  put_dec(done.status);
  put_char(' ');
  put_str(key);
  put_str("-read-status=");
  put_dec(read.status);
  put_char(' ');
  put_str(key);
  put_str("-zero=");
  put_dec((u64)data_all_zero(kReadBackBytes));
  line_end();
}

static void drive(BlkDevice* dev) {
  g_driven = 1;
  if (!initialise(dev)) return;
  u64 capacity = 0;
  u32 blk_size = kSectorBytes;
  report_config(&dev->dev, &capacity, &blk_size);
  test_get_id(dev);
  if (g_tests & kTestWriteRead) test_write_read(dev);
  if (g_tests & kTestOutOfRange) test_out_of_range(dev, capacity, blk_size);
  if (g_tests & kTestDiscard) test_range(dev, kBlkTypeDiscard, kBlkFeatureDiscard, "discard", "discard", kSectorDiscard);
  if (g_tests & kTestWriteZeroes) {
    test_range(dev, kBlkTypeWriteZeroes, kBlkFeatureWriteZeroes, "write-zeroes", "wz", kSectorZeroes);
  }
  // The device must stop using the queue before anything else reuses that memory.
  blk_line_begin();
  put_str("reset-status=");
  put_dec(vdev_reset(&dev->dev));
  line_end();
}

// ---- entry points -------------------------------------------------------------------------

void virtio_blk_configure(const char* cmdline) {
  g_tests = 0;
  g_driven = 0;
  const char* value;
  usize length;
  if (!cmdline_value(cmdline, "skiff.blk", &value, &length)) return;
  static const CmdlineWord kWords[] = {{"id", 0},
                                       {"1", 0},
                                       {"rw", kTestWriteRead},
                                       {"oob", kTestOutOfRange},
                                       {"discard", kTestDiscard},
                                       {"zeroes", kTestWriteZeroes},
                                       {"all", kTestAll}};
  g_tests = kTestEnabled | cmdline_word_bits(value, length, kWords, ARRAY_SIZE(kWords), "blk");
}

void virtio_blk_mmio_drive(u64 base, u32 poll_limit) {
  if (g_tests == 0 || g_driven) return;
  BlkDevice blk;
  memset(&blk, 0, sizeof(blk));
  vdev_open_mmio(&blk.dev, "virtio-blk", base, poll_limit);
  drive(&blk);
}

void virtio_blk_pci_drive(u32 slot, u32 poll_limit) {
  if (g_tests == 0 || g_driven) return;
  g_driven = 1;
  BlkDevice blk;
  memset(&blk, 0, sizeof(blk));
  if (!vdev_open_pci(&blk.dev, "virtio-blk", slot, kBarRelocation, kBlkConfigLength, poll_limit)) return;
  drive(&blk);
}
