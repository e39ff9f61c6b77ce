// SPDX-License-Identifier: Apache-2.0
// The virtio-net benchmark payload (bench/net_bench.cc runs it under skiff and QEMU): with
// `skiff.netbench=<test>[,count=N][,warmup=N]` ring 0 sets up the first virtio-net PCI
// function (1af4:1041) through virtio_dev.c (virtio 1.2 §3.1.1, §5.1: receiveq0 and
// transmitq0, no MSI-X, INTx disabled, avail.flags = NO_INTERRUPT), then the measured loop
// runs in ring 3 (ring3.c), like blk_bench.c:
//   - tx64, tx1500: keeps the transmit queue full of 64- or 1514-byte frames (one descriptor:
//     zeroed virtio-net header + frame, §5.1.6.2), notifies once per batch unless the device
//     set VIRTQ_USED_F_NO_NOTIFY (§2.7.10), polls the used ring and counts completions;
//   - txtso: the same with 64 KiB IPv4/TCP frames and a GSO header (VIRTIO_NET_F_CSUM and
//     HOST_TSO4 negotiated, §5.1.6.2.1);
//   - rx64, rx1500, rxtso: keeps every receive descriptor posted (one 2 KiB or, with
//     GUEST_CSUM + GUEST_TSO4, one 68 KiB buffer each: §5.1.6.3.1 asks for 65562 bytes
//     without MRG_RXBUF), counts the frames the host sends through the tap and reposts them.
// RDTSC brackets the loop. Ring 0 prints the markers the host times and the counts (README.md,
// "net-bench").
//
// Ring 0 is emulated on the development machines (~1.7M instructions/s): everything
// proportional to the frame count, building the frames included, runs in ring 3.
#include "guest.h"
#include "virtio_dev.h"

enum {
  kNetConfigMin = 8,  // mac[6] + status: nothing of it is read, but the region must be there
  kRxQueue = 0,       // receiveq0, transmitq0 (§5.1.2)
  kTxQueue = 1,
  kMaxQueueSize = 256,
  // ---- virtio-net (§5.1)
  kNetHeaderBytes = 12,  // struct virtio_net_hdr with num_buffers (VERSION_1)
  kHeaderFlagNeedsCsum = 1,
  kGsoTcpv4 = 1,
  kEthernetBytes = 14,
  kIpv4Bytes = 20,
  kTcpBytes = 20,
  kTsoFrameBytes = 65536,  // 14 + IPv4 total length 65522 (<= 65535)
  kTsoSegmentBytes = 1448,  // MSS of a 1500-byte MTU with TCP timestamps, as Linux sends
  kSmallBufferBytes = 2048,  // holds header + 1514 (1518 with a VLAN tag)
  kTsoBufferBytes = 69632,   // 68 KiB >= 65562 (§5.1.6.3.1 without MRG_RXBUF)
  kTsoTxBuffers = 8,         // distinct TX frames the chains cycle through (they are read-only)
  kRing3StackBytes = 16384,
};

// §5.1.3 feature bits.
static const u64 kFeatureCsum = 1ull << 0;
static const u64 kFeatureGuestCsum = 1ull << 1;
static const u64 kFeatureGuestTso4 = 1ull << 7;
static const u64 kFeatureHostTso4 = 1ull << 11;
static const u32 kVirtioNetPciId = 0x10411af4;  // device << 16 | vendor (§4.1.2.1)
// Where a BAR above 4 GiB is moved: the one virtio_net.c uses (only one of the two drives).
static const u64 kBarRelocation = 0xc2000000ull;
// Rings and buffers: guest RAM from 64 MiB, outside the image (as blk_bench.c); with 256 TSO
// receive buffers the area ends below 82 MiB, so the VM needs >= 96 MiB.
static const u64 kAreaBase = 0x4000000ull;
static const u64 kAreaRxRings = 0x0000;  // desc 4 KiB, avail at +4 KiB, used at +8 KiB
static const u64 kAreaTxRings = 0x4000;
static const u64 kAreaBuffers = 0x10000;
static const u64 kRingBytes = 0x3000;
// No progress for this many TSC cycles ends the ring-3 loop (~10 s at 3 GHz).
static const u64 kTimeoutCycles = 30000000000ull;
// Fixed addresses of the frames: neither is the tap's, so the host stack drops them early.
static const u8 kGuestMac[6] = {0x02, 0x5b, 0x00, 0x00, 0x00, 0x02};
static const u8 kHostMac[6] = {0x02, 0x5b, 0x00, 0x00, 0x00, 0x01};
static const u8 kGuestIp[4] = {10, 0, 0, 2};
static const u8 kHostIp[4] = {10, 0, 0, 1};
static const u32 kEtherTypeTest = 0x88b5;  // IEEE 802 local experimental
static const u32 kEtherTypeIpv4 = 0x0800;

typedef struct {
  const char* name;
  int receive;
  u32 frame_bytes;  // transmit: what each frame has; receive: the host's (for the report)
  int tso;
} TestKind;

static const TestKind kTests[] = {
    {"tx64", 0, 64, 0},  {"tx1500", 0, 1514, 0}, {"txtso", 0, kTsoFrameBytes, 1},
    {"rx64", 1, 64, 0},  {"rx1500", 1, 1514, 0}, {"rxtso", 1, kTsoFrameBytes, 1},
};

// Shared between ring 0 and the ring-3 loop (the image is mapped U/S by ring3.S).
typedef struct {
  // set up by ring 0
  const TestKind* kind;
  volatile VdevDesc* desc;
  volatile VdevAvail* avail;
  volatile VdevUsed* used;
  u64 notify;
  u64 buffers;
  u32 buffer_bytes;
  u32 buffer_count;  // distinct buffers (receive: one per descriptor)
  u16 queue_size;
  u64 count;  // frames in this run
  // carried from run to run
  int prepared;
  u16 avail_idx;
  u16 used_idx;
  // results of one run
  u64 frames;
  u64 bytes;  // frame bytes, without the virtio-net header
  u64 gso_frames;  // received frames whose header carried a gso_type
  u64 short_frames;  // received frames shorter than header + Ethernet header
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

static void put_be16(u8* at, u32 value) {
  at[0] = (u8)(value >> 8);
  at[1] = (u8)value;
}

static u32 fold_checksum(u32 sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

// The virtio-net header and frame of transmit buffer `index`. Small frames: to kHostMac,
// ethertype 0x88b5, payload = the buffer index then a byte pattern. TSO: IPv4/TCP
// 10.0.0.2:5000 -> 10.0.0.1:5001 with the header the device needs to segment it (§5.1.6.2:
// NEEDS_CSUM with csum_start/offset at the TCP checksum, gso_type TCPV4, hdr_len, gso_size).
static void build_tx_buffer(const BenchRun* r, u32 index) {
  u8* buffer = (u8*)(usize)(r->buffers + (u64)index * r->buffer_bytes);
  u8* frame = buffer + kNetHeaderBytes;
  u32 length = r->kind->frame_bytes;
  for (u32 i = 0; i < kNetHeaderBytes; ++i) buffer[i] = 0;
  for (u32 i = 0; i < 6; ++i) {
    frame[i] = kHostMac[i];
    frame[6 + i] = kGuestMac[i];
  }
  u32 payload = kEthernetBytes;
  if (!r->kind->tso) {
    put_be16(frame + 12, kEtherTypeTest);
  } else {
    put_be16(frame + 12, kEtherTypeIpv4);
    u8* ip = frame + kEthernetBytes;
    static const u8 kIpHead[12] = {0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0};  // DF, TTL 64, TCP
    for (u32 i = 0; i < 12; ++i) ip[i] = kIpHead[i];
    put_be16(ip + 2, length - kEthernetBytes);
    put_be16(ip + 4, index);
    for (u32 i = 0; i < 4; ++i) {
      ip[12 + i] = kGuestIp[i];
      ip[16 + i] = kHostIp[i];
    }
    u32 sum = 0;
    for (u32 i = 0; i < kIpv4Bytes; i += 2) sum += (u32)ip[i] << 8 | ip[i + 1];
    put_be16(ip + 10, ~fold_checksum(sum) & 0xffff);  // RFC 791
    u8* tcp = ip + kIpv4Bytes;
    for (u32 i = 0; i < kTcpBytes; ++i) tcp[i] = 0;
    put_be16(tcp, 5000);
    put_be16(tcp + 2, 5001);
    tcp[7] = (u8)index;       // sequence number
    tcp[12] = 5 << 4;         // data offset: 20 bytes
    tcp[13] = 0x18;           // PSH, ACK
    put_be16(tcp + 14, 0xffff);  // window
    // CHECKSUM_PARTIAL convention: the field holds the pseudo-header sum (RFC 793 §3.1), the
    // device adds the rest from csum_start.
    u32 tcp_length = length - kEthernetBytes - kIpv4Bytes;
    u32 pseudo = ((u32)kGuestIp[0] << 8 | kGuestIp[1]) + ((u32)kGuestIp[2] << 8 | kGuestIp[3]) +
                 ((u32)kHostIp[0] << 8 | kHostIp[1]) + ((u32)kHostIp[2] << 8 | kHostIp[3]) + 6 + tcp_length;
    put_be16(tcp + 16, fold_checksum(pseudo));
    payload = kEthernetBytes + kIpv4Bytes + kTcpBytes;
    // struct virtio_net_hdr (§5.1.6), little-endian fields.
    u32 csum_start = kEthernetBytes + kIpv4Bytes;
    buffer[0] = kHeaderFlagNeedsCsum;
    buffer[1] = kGsoTcpv4;
    buffer[2] = (u8)payload;  // hdr_len: Ethernet + IPv4 + TCP headers
    buffer[3] = (u8)(payload >> 8);
    buffer[4] = (u8)kTsoSegmentBytes;
    buffer[5] = (u8)(kTsoSegmentBytes >> 8);
    buffer[6] = (u8)csum_start;
    buffer[7] = (u8)(csum_start >> 8);
    buffer[8] = 16;  // csum_offset: the TCP checksum field
    buffer[9] = 0;
  }
  if (payload + 4 <= length) {
    frame[payload] = (u8)(index >> 24);
    frame[payload + 1] = (u8)(index >> 16);
    frame[payload + 2] = (u8)(index >> 8);
    frame[payload + 3] = (u8)index;
    payload += 4;
  }
  for (u32 i = payload; i < length; ++i) frame[i] = (u8)(i * 7 + 3);
}

// First run only: the descriptor table (descriptor i -> buffer i % buffer_count) and the
// transmit frames.
static void prepare(BenchRun* r) {
  for (u32 i = 0; i < r->queue_size; ++i) {
    u32 buffer = i % r->buffer_count;
    r->desc[i].addr = r->buffers + (u64)buffer * r->buffer_bytes;
    r->desc[i].len = r->kind->receive ? r->buffer_bytes : kNetHeaderBytes + r->kind->frame_bytes;
    r->desc[i].flags = r->kind->receive ? kVdevDescWrite : 0;
    r->desc[i].next = 0;
  }
  if (!r->kind->receive) {
    for (u32 i = 0; i < r->buffer_count; ++i) build_tx_buffer(r, i);
  }
  r->prepared = 1;
}

static void publish_and_notify(BenchRun* r, u16 avail) {
  // §2.7.13: ring entries before the index; x86 keeps stores in order.
  barrier();
  r->avail->idx = avail;
  // The index before the flags check (§2.7.10 asks for a full fence here): a device that
  // clears NO_NOTIFY after our load must see the new index.
  __asm__ volatile("mfence" : : : "memory");
  if (!(r->used->flags & kVdevUsedNoNotify)) {
    *(volatile u16*)(usize)r->notify = r->kind->receive ? kRxQueue : kTxQueue;  // §4.1.5.2
    ++r->notifies;
  }
}

// Transmit: every descriptor is a chain of its own; up to queue_size frames in flight.
static void transmit_loop(BenchRun* r) {
  u64 submitted = 0;
  u16 avail = r->avail_idx;
  u16 seen = r->used_idx;
  r->tsc_start = rdtsc();
  u64 last_progress = r->tsc_start;
  for (u32 head = 0; head < r->queue_size && submitted < r->count; ++head, ++submitted) {
    r->avail->ring[avail % r->queue_size] = (u16)head;
    avail = (u16)(avail + 1);
  }
  publish_and_notify(r, avail);
  u32 spins = 0;
  while (r->frames < r->count) {
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
      if (head >= r->queue_size) {
        ++r->bad_ids;  // that chain is lost; the loop ends by timeout if it was needed
        continue;
      }
      ++r->frames;
      r->bytes += r->kind->frame_bytes;
      if (submitted < r->count) {
        r->avail->ring[avail % r->queue_size] = (u16)head;
        avail = (u16)(avail + 1);
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

// Receive: every descriptor stays posted; each used one is counted and posted again.
static void receive_loop(BenchRun* r) {
  u16 avail = r->avail_idx;
  u16 seen = r->used_idx;
  if (avail == seen) {  // nothing posted yet: the whole ring
    for (u32 head = 0; head < r->queue_size; ++head) {
      r->avail->ring[avail % r->queue_size] = (u16)head;
      avail = (u16)(avail + 1);
    }
    publish_and_notify(r, avail);
  }
  r->tsc_start = rdtsc();
  u64 last_progress = r->tsc_start;
  u32 spins = 0;
  while (r->frames < r->count) {
    u16 now = r->used->idx;
    if (now == seen) {
      cpu_pause();
      if ((++spins & 0x3ff) == 0 && rdtsc() - last_progress > kTimeoutCycles) {
        r->timed_out = 1;
        break;
      }
      continue;
    }
    barrier();
    while (seen != now) {
      u32 head = r->used->ring[seen % r->queue_size].id;
      u32 length = r->used->ring[seen % r->queue_size].len;
      seen = (u16)(seen + 1);
      if (head >= r->queue_size) {
        ++r->bad_ids;
        continue;
      }
      if (length < kNetHeaderBytes + kEthernetBytes || length > r->buffer_bytes) {
        ++r->short_frames;
      } else {
        const volatile u8* header = (const volatile u8*)(usize)(r->buffers + (u64)head * r->buffer_bytes);
        if (header[1] != 0) ++r->gso_frames;
        ++r->frames;
        r->bytes += length - kNetHeaderBytes;
      }
      r->avail->ring[avail % r->queue_size] = (u16)head;
      avail = (u16)(avail + 1);
    }
    publish_and_notify(r, avail);
    last_progress = rdtsc();
  }
  r->tsc_end = rdtsc();
  r->avail_idx = avail;
  r->used_idx = seen;
}

static void bench_loop(void* arg) {
  BenchRun* r = arg;
  if (!r->prepared) prepare(r);
  r->frames = r->bytes = r->gso_frames = r->short_frames = r->notifies = r->bad_ids = r->timed_out = 0;
  if (r->kind->receive) {
    receive_loop(r);
  } else {
    transmit_loop(r);
  }
}

// ---- ring 0 -------------------------------------------------------------------------------

typedef struct {
  const TestKind* kind;
  u64 count;
  u64 warmup;
} BenchConfig;

static void bench_error(const char* what, u64 value) {
  line_begin();
  put_str("error netbench ");
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

// `<test>[,count=N][,warmup=N]`; 0 after printing why it is unusable.
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
  config->count = 100000;
  config->warmup = 0;
  usize start = end + 1;
  while (start < length) {
    end = start;
    while (end < length && value[end] != ',') ++end;
    const char* item;
    usize item_length;
    u64 number = 0;
    if (token_has_key(value + start, end - start, "count", &item, &item_length) &&
        parse_u64(item, item_length, &number) && number >= 1) {
      config->count = number;
    } else if (token_has_key(value + start, end - start, "warmup", &item, &item_length) &&
               parse_u64(item, item_length, &number)) {
      config->warmup = number;
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

static int setup_queue(VirtioDev* dev, VdevQueue* queue, u16 index, u64 rings) {
  zero_area(rings, kRingBytes);
  queue->desc = (volatile VdevDesc*)(usize)(kAreaBase + rings);
  queue->avail = kAreaBase + rings + 0x1000;
  queue->used = kAreaBase + rings + 0x2000;
  return vdev_setup_queue(dev, queue, index, kMaxQueueSize, 1);
}

// One pass of the loop in ring 3; 0 after printing how ring 3 ended if it did not return.
static int run_ring3(BenchRun* run, u64 count) {
  run->count = count;
  Ring3Exit exit;
  if (ring3_run(bench_loop, run, g_ring3_stack, sizeof(g_ring3_stack), &exit)) return 1;
  line_begin();
  put_str("error netbench ring3 vector=");
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
  put_field("frames", run->frames);
  put_field("bytes", run->bytes);
  put_field("gso-frames", run->gso_frames);
  put_field("short", run->short_frames);
  put_field("notifies", run->notifies);
  put_field("bad-ids", run->bad_ids);
  put_field("timed-out", run->timed_out);
}

void net_bench_run(const char* cmdline) {
  const char* value;
  usize length;
  if (!cmdline_value(cmdline, "skiff.netbench", &value, &length)) return;
  BenchConfig config;
  if (!parse_config(value, length, &config)) return;
  int slot = vdev_pci_find(kVirtioNetPciId);
  if (slot < 0) {
    bench_error("no-device pci-slots", kVdevPciSlots);
    return;
  }
  VirtioDev dev;
  if (!vdev_open_pci(&dev, "netbench", (u32)slot, kBarRelocation, kNetConfigMin, 1)) return;
  const TestKind* kind = config.kind;
  // Nothing but what the test needs: no MRG_RXBUF, indirect descriptors or event index.
  u64 wanted = kVdevFeatureVersion1;
  if (kind->tso) wanted |= kind->receive ? kFeatureGuestCsum | kFeatureGuestTso4 : kFeatureCsum | kFeatureHostTso4;
  u64 offered = 0;
  if (!vdev_negotiate(&dev, wanted, &offered) || (dev.features & wanted) != wanted) {
    line_begin();
    put_str("error netbench features offered=");
    put_hex(offered);
    put_str(" wanted=");
    put_hex(wanted);
    line_end();
    return;
  }
  VdevQueue rx;
  VdevQueue tx;
  memset(&rx, 0, sizeof(rx));
  memset(&tx, 0, sizeof(tx));
  if (!setup_queue(&dev, &rx, kRxQueue, kAreaRxRings) || !setup_queue(&dev, &tx, kTxQueue, kAreaTxRings)) {
    vdev_fail(&dev);
    return;
  }
  vdev_driver_ok(&dev);
  BenchRun* run = &g_run;
  memset(run, 0, sizeof(*run));
  const VdevQueue* queue = kind->receive ? &rx : &tx;
  run->kind = kind;
  run->desc = queue->desc;
  run->avail = (volatile VdevAvail*)(usize)queue->avail;
  run->used = (volatile VdevUsed*)(usize)queue->used;
  run->notify = queue->notify;
  run->queue_size = queue->size;
  run->buffers = kAreaBase + kAreaBuffers;
  run->buffer_bytes = kind->tso ? kTsoBufferBytes : kSmallBufferBytes;
  run->buffer_count = kind->receive ? queue->size : kind->tso ? kTsoTxBuffers : queue->size;
  if (run->buffer_count > queue->size) run->buffer_count = queue->size;
  line_begin();
  put_str("netbench device");
  put_field("slot", (u64)slot);
  put_str(" device-features=");
  put_hex(offered);
  put_str(" driver-features=");
  put_hex(dev.features);
  put_field("queue-size", run->queue_size);
  put_str(" notify=");
  put_hex(run->notify);
  line_end();
  line_begin();
  put_str("netbench test=");
  put_str(kind->name);
  put_field("frame-bytes", kind->frame_bytes);
  put_field("count", config.count);
  put_field("warmup", config.warmup);
  line_end();
  // The host starts sending (receive tests) at this line.
  line_begin();
  put_str("netbench ready");
  line_end();
  if (config.warmup != 0) {
    if (!run_ring3(run, config.warmup)) return;
    line_begin();
    put_str("netbench warmup");
    put_run_counts(run);
    line_end();
  }
  // The host times the newline of this line to the first byte of the netbench-end line.
  line_begin();
  put_str("netbench-start");
  line_end();
  int returned = run_ring3(run, config.count);
  line_begin();
  put_str("netbench-end");
  if (returned) {
    put_run_counts(run);
    put_field("tsc-cycles", run->tsc_end - run->tsc_start);
  } else {
    put_str(" failed=1");
  }
  line_end();
  line_begin();
  put_str("netbench reset-status=");
  put_dec(vdev_reset(&dev));
  line_end();
}
