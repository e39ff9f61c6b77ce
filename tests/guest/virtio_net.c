// SPDX-License-Identifier: Apache-2.0
// virtio-net (virtio 1.2 §5.1) from the guest's side, over virtio-mmio (§4.2) or virtio-pci
// (§4.1), only with skiff.virtio=1 and skiff.net=<tests>: the first network device found (the
// virtio-mmio slots first, then PCI bus 0) is initialised, its configuration printed, and the
// requested frames sent and received with interrupts off, polling the used rings. README.md,
// "virtio-net", lists the lines; tests/integration/virtio_net_test.cc reads the frames from
// the tap on the host side and writes the ones this driver waits for.
//
// Frames are fixed so the host can rebuild them byte for byte: see the build_* functions.
#include "guest.h"

enum {
  // ---- virtio-mmio registers (§4.2.2), 32-bit
  kMmioDeviceFeatures = 0x010,
  kMmioDeviceFeaturesSel = 0x014,
  kMmioDriverFeatures = 0x020,
  kMmioDriverFeaturesSel = 0x024,
  kMmioQueueSel = 0x030,
  kMmioQueueNumMax = 0x034,
  kMmioQueueNum = 0x038,
  kMmioQueueReady = 0x044,
  kMmioQueueNotify = 0x050,
  kMmioStatus = 0x070,
  kMmioQueueDescLow = 0x080,
  kMmioQueueDriverLow = 0x090,
  kMmioQueueDeviceLow = 0x0a0,
  kMmioConfig = 0x100,
  // ---- virtio-pci (§4.1.4)
  kCapCommon = 1,
  kCapNotify = 2,
  kCapDevice = 4,
  kCfgCommand = 0x04,
  kCommandMemory = 1 << 1,
  kCommandBusMaster = 1 << 2,
  kCommandIntxDisable = 1 << 10,  // the driver polls
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
  // ---- §2.1 device status
  kStatusAcknowledge = 1,
  kStatusDriver = 2,
  kStatusDriverOk = 4,
  kStatusFeaturesOk = 8,
  kStatusFailed = 128,
  kResetPolls = 1000,
  // ---- split virtqueues (§2.7)
  kQueueSizeWanted = 8,
  kDescFlagNext = 1,
  kDescFlagWrite = 2,
  kAvailNoInterrupt = 1,  // §2.7.7: the driver polls
  kSerialLsrPort = 0x3fd,
  // Ring slots: receiveq0, transmitq0, receiveq1, transmitq1, controlq (its queue index is
  // 2 * max_virtqueue_pairs, §5.1.2).
  kRx0 = 0,
  kTx0 = 1,
  kRx1 = 2,
  kTx1 = 3,
  kCtrl = 4,
  kRings = 5,
  // ---- virtio-net (§5.1)
  kNetConfigMac = 0,       // u8[6]
  kNetConfigStatus = 6,    // le16
  kNetConfigMaxPairs = 8,  // le16
  kNetConfigMtu = 10,      // le16
  kNetConfigLength = 12,
  kNetHeaderBytes = 12,  // struct virtio_net_hdr with VERSION_1 (num_buffers included)
  kNetHeaderNumBuffers = 10,
  kRxPosted = 4,          // RX buffers posted per receive queue
  kRxBufferBytes = 2048,  // header + a 1514-byte frame, one buffer per chain (§5.1.6.3.1)
  kTxBufferBytes = 2048,
  kMaxTxFrame = kTxBufferBytes - kNetHeaderBytes,
  kMaxSkipped = 16,  // unrelated frames ignored while waiting for the expected one
  kCtrlClassMq = 4,  // VIRTIO_NET_CTRL_MQ (§5.1.6.5.5)
  kCtrlMqVqPairsSet = 0,
  kCtrlAckNone = 0xff,
  kEtherTypeArp = 0x0806,
  kEtherTypeIpv4 = 0x0800,
  kEtherTypeTest = 0x88b5,  // IEEE 802 local experimental: the host's test frames
  kUdpGuestPort = 5000,
  kUdpHostPort = 5001,
  // ---- skiff.net tests
  kTestEnabled = 1 << 0,  // probe and configuration only
  kTestArp = 1 << 1,
  kTestRx = 1 << 2,
  kTestBig = 1 << 3,
  kTestMq = 1 << 4,
  kTestMrg = 1 << 5,
};

static const u64 kFeatureVersion1 = 1ull << 32;
static const u64 kNetFeatureMtu = 1ull << 3;
static const u64 kNetFeatureMac = 1ull << 5;
static const u64 kNetFeatureMrgRxbuf = 1ull << 15;
static const u64 kNetFeatureStatus = 1ull << 16;
static const u64 kNetFeatureCtrlVq = 1ull << 17;
static const u64 kNetFeatureMq = 1ull << 22;
// Where a PCI BAR above 4 GiB is moved: inside skiff's 32-bit PCI window, clear of the
// entropy device (0xc0000000) and the block device (0xc1000000).
static const u64 kBarRelocation = 0xc2000000ull;
// 10.0.0.2 (the guest) and 10.0.0.1 (the host), network byte order as bytes.
static const u8 kGuestIp[4] = {10, 0, 0, 2};
static const u8 kHostIp[4] = {10, 0, 0, 1};

typedef struct {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
} Desc;

typedef struct {
  Desc desc[kQueueSizeWanted] __attribute__((aligned(16)));
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
} Ring;

_Static_assert(sizeof(Ring) <= 256, "a ring set must fit its 256-byte slot");

static volatile Ring g_rings[kRings] __attribute__((aligned(4096)));
static u8 g_rx[2][kRxPosted][kRxBufferBytes] __attribute__((aligned(4096)));
static u8 g_tx[2][kTxBufferBytes] __attribute__((aligned(16)));
static volatile struct {
  u8 command[4];  // class, command, le16 virtqueue_pairs
  u8 ack;
} g_ctrl __attribute__((aligned(16)));

typedef struct {
  int is_pci;
  u64 base;  // virtio-mmio register block
  u64 common;  // virtio-pci regions (guest-physical, inside the placed BAR)
  u64 device_config;
  u64 notify;
  u32 notify_length;
  u32 notify_multiplier;
  u32 poll_limit;
  u64 features;  // negotiated
  u8 mac[6];
  u32 mtu;        // config mtu, or 1500 without VIRTIO_NET_F_MTU
  u32 max_pairs;  // config max_virtqueue_pairs, or 1 without VIRTIO_NET_F_MQ
  u16 queue_index[kRings];  // the device's queue number behind each ring slot
  u16 queue_size[kRings];   // 0: slot not set up
  u64 queue_notify[kRings];  // virtio-pci: notification address
  u16 next_avail[kRings];
  u16 last_used[kRings];
} NetDevice;

static u32 g_tests;   // skiff.net, kTest* bits; 0 = off
static int g_driven;  // the first network device has been taken

static void barrier(void) { __asm__ volatile("" : : : "memory"); }
static u64 address_of(const volatile void* p) { return (u64)(usize)p; }

static void net_line_begin(void) {
  line_begin();
  put_str("virtio-net ");
}

static void net_error(const char* what, u64 value) {
  line_begin();
  put_str("error virtio-net ");
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

// ---- transport --------------------------------------------------------------------------------

static u32 get_status(const NetDevice* dev) {
  return dev->is_pci ? read8(dev->common + kCommonDeviceStatus) : mmio_read32(dev->base + kMmioStatus);
}

static void set_status(const NetDevice* dev, u32 status) {
  if (dev->is_pci) {
    mmio_write8(dev->common + kCommonDeviceStatus, (u8)status);
  } else {
    mmio_write32(dev->base + kMmioStatus, status);
  }
}

// §2.4.2: a reset is complete when the status reads back as 0.
static u32 reset_device(const NetDevice* dev) {
  set_status(dev, 0);
  u32 status = get_status(dev);
  for (u32 i = 0; i < kResetPolls && status != 0; ++i) status = get_status(dev);
  return status;
}

static u32 read_feature_word(const NetDevice* dev, u32 select) {
  if (dev->is_pci) {
    mmio_write32(dev->common + kCommonDeviceFeatureSelect, select);
    return mmio_read32(dev->common + kCommonDeviceFeature);
  }
  mmio_write32(dev->base + kMmioDeviceFeaturesSel, select);
  return mmio_read32(dev->base + kMmioDeviceFeatures);
}

static void write_feature_word(const NetDevice* dev, u32 select, u32 value) {
  if (dev->is_pci) {
    mmio_write32(dev->common + kCommonDriverFeatureSelect, select);
    mmio_write32(dev->common + kCommonDriverFeature, value);
  } else {
    mmio_write32(dev->base + kMmioDriverFeaturesSel, select);
    mmio_write32(dev->base + kMmioDriverFeatures, value);
  }
}

// §4.1.3.1 / §4.2.2.2: configuration fields are read with accesses of their own width.
static u64 config_address(const NetDevice* dev, u32 offset) {
  return (dev->is_pci ? dev->device_config : dev->base + kMmioConfig) + offset;
}

static void set_queue_address(const NetDevice* dev, u32 offset, u64 address) {
  u64 at = dev->is_pci ? dev->common + offset : dev->base + offset;
  mmio_write32(at, (u32)address);
  mmio_write32(at + 4, (u32)(address >> 32));
}

// One queue (§4.1.5.1.3, §4.2.3.2): unused, at least kRxPosted descriptors, rings from its
// slot, enabled. 0 after printing why not.
static int setup_queue(NetDevice* dev, u32 slot, u16 index) {
  u32 in_use;
  u32 size_max;
  if (dev->is_pci) {
    if (read16(dev->common + kCommonNumQueues) <= index) {
      net_error("num-queues", read16(dev->common + kCommonNumQueues));
      return 0;
    }
    mmio_write16(dev->common + kCommonQueueSelect, index);
    size_max = read16(dev->common + kCommonQueueSize);
    in_use = read16(dev->common + kCommonQueueEnable);
  } else {
    mmio_write32(dev->base + kMmioQueueSel, index);
    size_max = mmio_read32(dev->base + kMmioQueueNumMax);
    in_use = mmio_read32(dev->base + kMmioQueueReady);
  }
  if (in_use != 0 || size_max < kRxPosted) {
    line_begin();
    put_str("error virtio-net queue=");
    put_dec(index);
    put_field("in-use", in_use);
    put_field("size-max", size_max);
    line_end();
    return 0;
  }
  u32 size = kQueueSizeWanted;
  while (size > size_max) size >>= 1;  // split queues: powers of two (§2.7)
  volatile Ring* ring = &g_rings[slot];
  g_rings[slot].avail.flags = kAvailNoInterrupt;
  if (dev->is_pci) {
    mmio_write16(dev->common + kCommonQueueSize, (u16)size);
    set_queue_address(dev, kCommonQueueDesc, address_of(ring->desc));
    set_queue_address(dev, kCommonQueueDriver, address_of(&ring->avail));
    set_queue_address(dev, kCommonQueueDevice, address_of(&ring->used));
    // §4.1.4.4: the queue's notification address, inside the notify capability.
    u32 notify_off = read16(dev->common + kCommonQueueNotifyOff);
    u64 offset = (u64)notify_off * dev->notify_multiplier;
    if (offset + 2 > dev->notify_length) {
      net_error("queue-notify-off", notify_off);
      return 0;
    }
    dev->queue_notify[slot] = dev->notify + offset;
    mmio_write16(dev->common + kCommonQueueEnable, 1);
  } else {
    mmio_write32(dev->base + kMmioQueueNum, size);
    set_queue_address(dev, kMmioQueueDescLow, address_of(ring->desc));
    set_queue_address(dev, kMmioQueueDriverLow, address_of(&ring->avail));
    set_queue_address(dev, kMmioQueueDeviceLow, address_of(&ring->used));
    mmio_write32(dev->base + kMmioQueueReady, 1);
  }
  dev->queue_index[slot] = index;
  dev->queue_size[slot] = (u16)size;
  return 1;
}

// Publishes `count` chains whose heads are `heads` on a ring slot and notifies its queue.
static void post(NetDevice* dev, u32 slot, const u16* heads, u32 count) {
  volatile Ring* ring = &g_rings[slot];
  u16 next = dev->next_avail[slot];
  for (u32 i = 0; i < count; ++i) ring->avail.ring[(u16)(next + i) % dev->queue_size[slot]] = heads[i];
  // §2.7.13: descriptors and ring entries before the index that publishes them; x86 keeps
  // stores in order, only the compiler must not move them.
  barrier();
  ring->avail.idx = (u16)(next + count);
  barrier();
  dev->next_avail[slot] = (u16)(next + count);
  if (dev->is_pci) {
    mmio_write16(dev->queue_notify[slot], dev->queue_index[slot]);  // §4.1.5.2
  } else {
    mmio_write32(dev->base + kMmioQueueNotify, dev->queue_index[slot]);
  }
}

// Polls one used ring until it moves past what was consumed, at most poll_limit times. On
// success stores the element and returns 1.
static int wait_used(NetDevice* dev, u32 slot, u32* id, u32* length) {
  volatile Ring* ring = &g_rings[slot];
  for (u32 poll = 0; poll < dev->poll_limit; ++poll) {
    if (ring->used.idx != dev->last_used[slot]) {
      barrier();
      u16 at = dev->last_used[slot] % dev->queue_size[slot];
      *id = ring->used.ring[at].id;
      *length = ring->used.ring[at].len;
      ++dev->last_used[slot];
      return 1;
    }
    (void)inb(kSerialLsrPort);
  }
  return 0;
}

// ---- frames -------------------------------------------------------------------------------------

static void put_be16(u8* at, u32 value) {
  at[0] = (u8)(value >> 8);
  at[1] = (u8)value;
}

static u32 ethernet_header(u8* frame, const u8* destination, const u8* source, u32 ethertype) {
  memcpy(frame, destination, 6);
  memcpy(frame + 6, source, 6);
  put_be16(frame + 12, ethertype);
  return 14;
}

static const u8 kBroadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// ARP request (RFC 826): who-has 10.0.0.1 tell 10.0.0.2, from the device MAC. 42 bytes.
static u32 build_arp(const NetDevice* dev, u8* frame) {
  u32 n = ethernet_header(frame, kBroadcast, dev->mac, kEtherTypeArp);
  put_be16(frame + n, 1);               // htype Ethernet
  put_be16(frame + n + 2, kEtherTypeIpv4);
  frame[n + 4] = 6;
  frame[n + 5] = 4;
  put_be16(frame + n + 6, 1);  // request
  memcpy(frame + n + 8, dev->mac, 6);
  memcpy(frame + n + 14, kGuestIp, 4);
  memset(frame + n + 18, 0, 6);
  memcpy(frame + n + 24, kHostIp, 4);
  return n + 28;
}

// A frame of exactly 14 + mtu bytes (capped to the TX buffer): broadcast, ethertype 0x88b5,
// payload byte i = (i * 7 + 3) & 0xff.
static u32 build_big(const NetDevice* dev, u8* frame) {
  u32 length = 14 + dev->mtu;
  if (length > kMaxTxFrame) length = kMaxTxFrame;
  u32 n = ethernet_header(frame, kBroadcast, dev->mac, kEtherTypeTest);
  for (u32 i = 0; n + i < length; ++i) frame[n + i] = (u8)(i * 7 + 3);
  return length;
}

// IPv4/UDP 10.0.0.2:5000 -> 10.0.0.1:5001 with the payload "SKQ1" (UDP checksum 0: none).
static u32 build_udp(const NetDevice* dev, u8* frame) {
  u32 n = ethernet_header(frame, kBroadcast, dev->mac, kEtherTypeIpv4);
  u8* ip = frame + n;
  static const u8 kHead[12] = {0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0};  // DF, TTL 64, UDP
  memcpy(ip, kHead, 12);
  memcpy(ip + 12, kGuestIp, 4);
  memcpy(ip + 16, kHostIp, 4);
  u32 sum = 0;
  for (u32 i = 0; i < 20; i += 2) sum += (u32)ip[i] << 8 | ip[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  put_be16(ip + 10, ~sum & 0xffff);  // RFC 791 header checksum
  u8* udp = ip + 20;
  put_be16(udp, kUdpGuestPort);
  put_be16(udp + 2, kUdpHostPort);
  put_be16(udp + 4, 12);
  put_be16(udp + 6, 0);
  udp[8] = 'S';
  udp[9] = 'K';
  udp[10] = 'Q';
  udp[11] = '1';
  return n + 32;
}

static u64 fnv1a(const u8* data, u32 size) {
  u64 hash = 0xcbf29ce484222325ull;
  for (u32 i = 0; i < size; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

// One frame on a transmit slot: a zeroed virtio-net header (no offloads, §5.1.6.2) and the
// frame in one device-readable descriptor; polled until the device returns it.
static void send_frame(NetDevice* dev, u32 slot, u32 (*build)(const NetDevice*, u8*), const char* what) {
  u8* buffer = g_tx[slot == kTx0 ? 0 : 1];
  memset(buffer, 0, kNetHeaderBytes);
  u32 length = build(dev, buffer + kNetHeaderBytes);
  volatile Ring* ring = &g_rings[slot];
  ring->desc[0].addr = address_of(buffer);
  ring->desc[0].len = kNetHeaderBytes + length;
  ring->desc[0].flags = 0;
  ring->desc[0].next = 0;
  u16 head = 0;
  post(dev, slot, &head, 1);
  u32 id = 0;
  u32 used_length = 0;
  int used = wait_used(dev, slot, &id, &used_length);
  if (used && id != 0) net_error("used-id", id);
  net_line_begin();
  put_str("tx ");
  put_str(what);
  put_field("queue", dev->queue_index[slot]);
  put_field("len", length);
  put_str(" fnv=");
  put_hex_padded(fnv1a(buffer + kNetHeaderBytes, length));
  put_field("used", (u64)used);
  line_end();
}

// Gives a receive slot kRxPosted one-descriptor chains of kRxBufferBytes each.
static void post_rx_buffers(NetDevice* dev, u32 slot) {
  volatile Ring* ring = &g_rings[slot];
  u16 heads[kRxPosted];
  for (u32 i = 0; i < kRxPosted; ++i) {
    ring->desc[i].addr = address_of(g_rx[slot == kRx0 ? 0 : 1][i]);
    ring->desc[i].len = kRxBufferBytes;
    ring->desc[i].flags = kDescFlagWrite;
    ring->desc[i].next = 0;
    heads[i] = (u16)i;
  }
  post(dev, slot, heads, kRxPosted);
}

// Waits on the receive slots (one, or rx0 and rx1) for a frame with `ethertype`; others are
// counted, given back and skipped. Prints what arrived, or "timeout".
static void receive_frame(NetDevice* dev, u32 first_slot, u32 last_slot, u32 ethertype) {
  u32 skipped = 0;
  u32 polls = 0;
  while (polls < dev->poll_limit && skipped <= kMaxSkipped) {
    for (u32 slot = first_slot; slot <= last_slot; slot += 2) {
      volatile Ring* ring = &g_rings[slot];
      if (dev->queue_size[slot] == 0 || ring->used.idx == dev->last_used[slot]) continue;
      barrier();
      u16 at = dev->last_used[slot] % dev->queue_size[slot];
      u32 id = ring->used.ring[at].id;
      u32 length = ring->used.ring[at].len;
      ++dev->last_used[slot];
      if (id >= kRxPosted || length > kRxBufferBytes) {
        net_error("rx-used-id", id);
        net_error("rx-used-len", length);
        return;
      }
      const u8* buffer = g_rx[slot == kRx0 ? 0 : 1][id];
      u32 frame_length = length >= kNetHeaderBytes ? length - kNetHeaderBytes : 0;
      const u8* frame = buffer + kNetHeaderBytes;
      u32 type = frame_length >= 14 ? (u32)frame[12] << 8 | frame[13] : 0;
      if (type != ethertype) {
        ++skipped;
        u16 head = (u16)id;
        post(dev, slot, &head, 1);
        continue;
      }
      net_line_begin();
      put_str("rx");
      put_field("queue", dev->queue_index[slot]);
      put_field("len", frame_length);
      put_field("num-buffers", (u32)buffer[kNetHeaderNumBuffers] | (u32)buffer[kNetHeaderNumBuffers + 1] << 8);
      put_str(" ethertype=");
      put_hex(type);
      put_str(" fnv=");
      put_hex_padded(fnv1a(frame, frame_length));
      put_str(" head=");
      for (u32 i = 0; i < 16 && i < frame_length; ++i) put_hex_digits(frame[i], 2);
      put_field("skipped", skipped);
      line_end();
      return;
    }
    (void)inb(kSerialLsrPort);
    ++polls;
  }
  net_line_begin();
  put_str("rx timeout");
  put_str(" ethertype=");
  put_hex(ethertype);
  put_field("skipped", skipped);
  line_end();
}

// §5.1.6.5.5: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; returns the ack byte (0xff: none came back).
static u32 set_queue_pairs(NetDevice* dev, u16 pairs) {
  g_ctrl.command[0] = kCtrlClassMq;
  g_ctrl.command[1] = kCtrlMqVqPairsSet;
  g_ctrl.command[2] = (u8)pairs;
  g_ctrl.command[3] = (u8)(pairs >> 8);
  g_ctrl.ack = kCtrlAckNone;
  volatile Ring* ring = &g_rings[kCtrl];
  ring->desc[0].addr = address_of(g_ctrl.command);
  ring->desc[0].len = 4;
  ring->desc[0].flags = kDescFlagNext;
  ring->desc[0].next = 1;
  ring->desc[1].addr = address_of(&g_ctrl.ack);
  ring->desc[1].len = 1;
  ring->desc[1].flags = kDescFlagWrite;
  ring->desc[1].next = 0;
  u16 head = 0;
  post(dev, kCtrl, &head, 1);
  u32 id = 0;
  u32 length = 0;
  if (!wait_used(dev, kCtrl, &id, &length)) return kCtrlAckNone;
  barrier();
  return g_ctrl.ack;
}

// ---- the device ------------------------------------------------------------------------------

// §3.1.1 up to DRIVER_OK with rx0/tx0 (and rx1/tx1/ctrl for mq). 0 after reporting why not.
static int initialise(NetDevice* dev, const char* transport) {
  u32 status = reset_device(dev);
  if (status != 0) {
    net_error("reset-status", status);
    return 0;
  }
  status = kStatusAcknowledge;
  set_status(dev, status);
  status |= kStatusDriver;
  set_status(dev, status);
  u64 offered = read_feature_word(dev, 0) | (u64)read_feature_word(dev, 1) << 32;
  // No checksum or segmentation offloads, indirect descriptors or event index.
  u64 wanted = kFeatureVersion1 | kNetFeatureMac | kNetFeatureMtu | kNetFeatureStatus;
  if (g_tests & kTestMrg) wanted |= kNetFeatureMrgRxbuf;
  if (g_tests & kTestMq) wanted |= kNetFeatureCtrlVq | kNetFeatureMq;
  dev->features = offered & wanted;
  if (!(dev->features & kNetFeatureCtrlVq)) dev->features &= ~kNetFeatureMq;  // §5.1.3.1
  write_feature_word(dev, 0, (u32)dev->features);
  write_feature_word(dev, 1, (u32)(dev->features >> 32));
  status |= kStatusFeaturesOk;
  set_status(dev, status);
  int features_ok = (get_status(dev) & kStatusFeaturesOk) != 0;
  net_line_begin();
  put_str("transport=");
  put_str(transport);
  put_str(" device-features=");
  put_hex(offered);
  put_str(" driver-features=");
  put_hex(dev->features);
  put_field("features-ok", (u64)features_ok);
  line_end();
  if (!features_ok) {
    set_status(dev, (status & ~(u32)kStatusFeaturesOk) | kStatusFailed);
    return 0;
  }

  // Configuration (§5.1.4), read before the queues: the control queue's index depends on it.
  for (u32 i = 0; i < 6; ++i) dev->mac[i] = read8(config_address(dev, kNetConfigMac + i));
  u32 link = read16(config_address(dev, kNetConfigStatus));
  u32 max_pairs = read16(config_address(dev, kNetConfigMaxPairs));
  u32 mtu = read16(config_address(dev, kNetConfigMtu));
  dev->mtu = (dev->features & kNetFeatureMtu) ? mtu : 1500;
  dev->max_pairs = (dev->features & kNetFeatureMq) ? max_pairs : 1;
  net_line_begin();
  put_str("config mac=");
  for (u32 i = 0; i < 6; ++i) {
    if (i != 0) put_char(':');
    put_hex_digits(dev->mac[i], 2);
  }
  put_field("status", link);
  put_field("max-pairs", max_pairs);
  put_field("mtu", mtu);
  put_field("mac-offered", (offered & kNetFeatureMac) != 0);
  put_field("mtu-offered", (offered & kNetFeatureMtu) != 0);
  put_field("mrg-rxbuf", (dev->features & kNetFeatureMrgRxbuf) != 0);
  put_field("mq", (dev->features & kNetFeatureMq) != 0);
  line_end();

  int ok = setup_queue(dev, kRx0, 0) && setup_queue(dev, kTx0, 1);
  if (ok && (dev->features & kNetFeatureMq)) {
    if (dev->max_pairs < 2 || dev->max_pairs > 0x8000) {  // §5.1.4.1
      net_error("max-pairs", dev->max_pairs);
      ok = 0;
    } else {
      ok = setup_queue(dev, kRx1, 2) && setup_queue(dev, kTx1, 3) &&
           setup_queue(dev, kCtrl, (u16)(2 * dev->max_pairs));
    }
  }
  if (!ok) {
    set_status(dev, status | kStatusFailed);
    return 0;
  }
  status |= kStatusDriverOk;
  set_status(dev, status);
  net_line_begin();
  put_str("queues");
  put_field("queue-size", dev->queue_size[kRx0]);
  put_field("ctrl-queue", (dev->features & kNetFeatureMq) ? dev->queue_index[kCtrl] : 0);
  put_field("status", get_status(dev));
  line_end();
  return 1;
}

static void drive(NetDevice* dev, const char* transport) {
  g_driven = 1;
  volatile u8* rings = (volatile u8*)g_rings;
  for (usize i = 0; i < sizeof(g_rings); ++i) rings[i] = 0;
  if (!initialise(dev, transport)) return;
  // Receive buffers first: the host answers the frames below, possibly at once.
  post_rx_buffers(dev, kRx0);
  if (dev->features & kNetFeatureMq) post_rx_buffers(dev, kRx1);
  if (g_tests & kTestArp) send_frame(dev, kTx0, build_arp, "arp");
  if (g_tests & kTestRx) receive_frame(dev, kRx0, kRx0, kEtherTypeTest);
  if (g_tests & kTestBig) send_frame(dev, kTx0, build_big, "big");
  if (g_tests & kTestMq) {
    if (!(dev->features & kNetFeatureMq)) {
      net_line_begin();
      put_str("mq offered=0");
      line_end();
    } else {
      u32 ack = set_queue_pairs(dev, 2);
      net_line_begin();
      put_str("mq pairs-set=2");
      put_field("ack", ack);
      line_end();
      send_frame(dev, kTx1, build_udp, "udp");
      // The host answers on the same flow: the tap steers it to the queue that sent it.
      receive_frame(dev, kRx0, kRx1, kEtherTypeIpv4);
    }
  }
  // The device must stop using the queues before anything else reuses that memory.
  net_line_begin();
  put_str("reset-status=");
  put_dec(reset_device(dev));
  line_end();
}

// ---- entry points -------------------------------------------------------------------------

static int word_is(const char* text, usize length, const char* word) {
  usize i = 0;
  for (; i < length && word[i] != 0; ++i) {
    if (text[i] != word[i]) return 0;
  }
  return i == length && word[i] == 0;
}

void virtio_net_configure(const char* cmdline) {
  g_tests = 0;
  g_driven = 0;
  const char* value;
  usize length;
  if (!cmdline_value(cmdline, "skiff.net", &value, &length)) return;
  static const struct {
    const char* word;
    u32 bits;
  } kWords[] = {{"1", 0}, {"probe", 0}, {"arp", kTestArp}, {"rx", kTestRx},
                {"big", kTestBig}, {"mq", kTestMq}, {"mrg", kTestMrg}};
  u32 tests = kTestEnabled;
  usize start = 0;
  while (start <= length) {
    usize end = start;
    while (end < length && value[end] != ',') ++end;
    u32 known = 0;
    for (u32 i = 0; i < ARRAY_SIZE(kWords) && !known; ++i) {
      if (word_is(value + start, end - start, kWords[i].word)) {
        tests |= kWords[i].bits;
        known = 1;
      }
    }
    if (!known) {
      line_begin();
      put_str("error bad-net-test index=");
      put_dec(start);
      line_end();
    }
    start = end + 1;
  }
  g_tests = tests;
}

void virtio_net_mmio_drive(u64 base, u32 poll_limit) {
  if (g_tests == 0 || g_driven) return;
  NetDevice dev;
  memset(&dev, 0, sizeof(dev));
  dev.base = base;
  dev.poll_limit = poll_limit;
  drive(&dev, "mmio");
}

void virtio_net_pci_drive(u32 slot, u32 poll_limit) {
  if (g_tests == 0 || g_driven) return;
  g_driven = 1;
  VirtioPciCaps caps;
  virtio_pci_read_capabilities(slot, &caps);
  const VirtioPciRegion* common = &caps.regions[kCapCommon];
  const VirtioPciRegion* notify = &caps.regions[kCapNotify];
  const VirtioPciRegion* device = &caps.regions[kCapDevice];
  if (!common->present || !notify->present || !device->present) {
    line_begin();
    put_str("error virtio-net missing-cap");
    if (!common->present) put_str(" common");
    if (!notify->present) put_str(" notify");
    if (!device->present) put_str(" device");
    line_end();
    return;
  }
  // Decode off while the BAR is sized and moved (PCI 3.0 §6.2.5.1).
  u32 command = pci_config_read16(slot, kCfgCommand);
  pci_config_write16(slot, kCfgCommand, (u16)(command & ~(u32)(kCommandMemory | kCommandBusMaster)));
  u64 bar_size = 0;
  u32 bar = common->bar;
  u64 base = virtio_pci_place_bar(slot, bar, kBarRelocation, "virtio-net", &bar_size);
  if (base == 0) return;
  if (!virtio_pci_region_fits("virtio-net", "common", common->bar, common->offset, common->length, bar,
                              bar_size, kCommonCfgLength) ||
      !virtio_pci_region_fits("virtio-net", "notify", notify->bar, notify->offset, notify->length, bar,
                              bar_size, 2) ||
      !virtio_pci_region_fits("virtio-net", "device", device->bar, device->offset, device->length, bar,
                              bar_size, kNetConfigLength)) {
    return;
  }
  pci_config_write16(slot, kCfgCommand,
                     (u16)(command | kCommandMemory | kCommandBusMaster | kCommandIntxDisable));
  NetDevice dev;
  memset(&dev, 0, sizeof(dev));
  dev.is_pci = 1;
  dev.common = base + common->offset;
  dev.device_config = base + device->offset;
  dev.notify = base + notify->offset;
  dev.notify_length = notify->length;
  dev.notify_multiplier = caps.notify_multiplier;
  dev.poll_limit = poll_limit;
  drive(&dev, "pci");
}
