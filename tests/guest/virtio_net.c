// SPDX-License-Identifier: Apache-2.0
// virtio-net (virtio 1.2 §5.1) from the guest's side, over virtio-mmio (§4.2) or virtio-pci
// (§4.1), only with skiff.virtio=1 and skiff.net=<tests>: the first network device found (the
// virtio-mmio slots first, then PCI bus 0) is initialised, its configuration printed, and the
// requested frames sent and received with interrupts off, polling the used rings. README.md,
// "virtio-net", lists the lines; tests/integration/virtio_net_test.cc reads the frames from
// the tap on the host side and writes the ones this driver waits for.
//
// Frames are fixed so the host can rebuild them byte for byte: see the build_* functions.
// The transport (open, negotiate, queues, post and poll) is virtio_dev.c's.
#include "virtio_dev.h"

enum {
  kQueueSizeWanted = 8,
  kSerialLsrPort = 0x3fd,  // a harmless port read: the pause between used-ring polls
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
  VirtioDev vdev;
  VdevQueue queues[kRings];  // by ring slot; size 0: slot not set up
  u8 mac[6];
  u32 mtu;        // config mtu, or 1500 without VIRTIO_NET_F_MTU
  u32 max_pairs;  // config max_virtqueue_pairs, or 1 without VIRTIO_NET_F_MQ
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

// One queue (§4.1.5.1.3, §4.2.3.2): unused, at least kRxPosted descriptors, rings from its
// slot, enabled. 0 after printing why not.
static int setup_queue(NetDevice* dev, u32 slot, u16 index) {
  volatile Ring* ring = &g_rings[slot];
  VdevQueue* queue = &dev->queues[slot];
  queue->desc = ring->desc;
  queue->avail = address_of(&ring->avail);
  queue->used = address_of(&ring->used);
  return vdev_setup_queue(&dev->vdev, queue, index, kQueueSizeWanted, kRxPosted);
}

// Publishes `count` chains whose heads are `heads` on a ring slot and notifies its queue.
static void post(NetDevice* dev, u32 slot, const u16* heads, u32 count) {
  vdev_post(&dev->vdev, &dev->queues[slot], heads, count);
}

// Polls one used ring (skiff.virtio-polls times at most); 1 with the element it returned.
static int wait_used(NetDevice* dev, u32 slot, u32* id, u32* length) {
  return vdev_wait_used(&dev->vdev, &dev->queues[slot], id, length);
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
  put_field("queue", dev->queues[slot].index);
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
    ring->desc[i].flags = kVdevDescWrite;
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
  while (polls < dev->vdev.poll_limit && skipped <= kMaxSkipped) {
    for (u32 slot = first_slot; slot <= last_slot; slot += 2) {
      VdevQueue* queue = &dev->queues[slot];
      u32 id = 0;
      u32 length = 0;
      if (queue->size == 0 || !vdev_take_used(queue, &id, &length)) continue;
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
      put_field("queue", dev->queues[slot].index);
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
  ring->desc[0].flags = kVdevDescNext;
  ring->desc[0].next = 1;
  ring->desc[1].addr = address_of(&g_ctrl.ack);
  ring->desc[1].len = 1;
  ring->desc[1].flags = kVdevDescWrite;
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
static int initialise(NetDevice* dev) {
  VirtioDev* vdev = &dev->vdev;
  if (!vdev_begin(vdev)) return 0;
  u64 offered = vdev_device_features(vdev);
  // No checksum or segmentation offloads, indirect descriptors or event index.
  u64 wanted = kVdevFeatureVersion1 | kNetFeatureMac | kNetFeatureMtu | kNetFeatureStatus;
  if (g_tests & kTestMrg) wanted |= kNetFeatureMrgRxbuf;
  if (g_tests & kTestMq) wanted |= kNetFeatureCtrlVq | kNetFeatureMq;
  u64 features = offered & wanted;
  if (!(features & kNetFeatureCtrlVq)) features &= ~kNetFeatureMq;  // §5.1.3.1
  int features_ok = vdev_accept_features(vdev, features);
  net_line_begin();
  put_str("transport=");
  put_str(vdev->is_pci ? "pci" : "mmio");
  put_str(" device-features=");
  put_hex(offered);
  put_str(" driver-features=");
  put_hex(vdev->features);
  put_field("features-ok", (u64)features_ok);
  line_end();
  if (!features_ok) return 0;

  // Configuration (§5.1.4), read before the queues: the control queue's index depends on it.
  for (u32 i = 0; i < 6; ++i) dev->mac[i] = (u8)vdev_config8(vdev, kNetConfigMac + i);
  u32 link = vdev_config16(vdev, kNetConfigStatus);
  u32 max_pairs = vdev_config16(vdev, kNetConfigMaxPairs);
  u32 mtu = vdev_config16(vdev, kNetConfigMtu);
  dev->mtu = (dev->vdev.features & kNetFeatureMtu) ? mtu : 1500;
  dev->max_pairs = (dev->vdev.features & kNetFeatureMq) ? max_pairs : 1;
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
  put_field("mrg-rxbuf", (dev->vdev.features & kNetFeatureMrgRxbuf) != 0);
  put_field("mq", (dev->vdev.features & kNetFeatureMq) != 0);
  line_end();

  int ok = setup_queue(dev, kRx0, 0) && setup_queue(dev, kTx0, 1);
  if (ok && (dev->vdev.features & kNetFeatureMq)) {
    if (dev->max_pairs < 2 || dev->max_pairs > 0x8000) {  // §5.1.4.1
      net_error("max-pairs", dev->max_pairs);
      ok = 0;
    } else {
      ok = setup_queue(dev, kRx1, 2) && setup_queue(dev, kTx1, 3) &&
           setup_queue(dev, kCtrl, (u16)(2 * dev->max_pairs));
    }
  }
  if (!ok) {
    vdev_fail(vdev);
    return 0;
  }
  vdev_driver_ok(vdev);
  net_line_begin();
  put_str("queues");
  put_field("queue-size", dev->queues[kRx0].size);
  put_field("ctrl-queue", (dev->vdev.features & kNetFeatureMq) ? dev->queues[kCtrl].index : 0);
  put_field("status", vdev_status(vdev));
  line_end();
  return 1;
}

static void drive(NetDevice* dev) {
  g_driven = 1;
  volatile u8* rings = (volatile u8*)g_rings;
  for (usize i = 0; i < sizeof(g_rings); ++i) rings[i] = 0;
  if (!initialise(dev)) return;
  // Receive buffers first: the host answers the frames below, possibly at once.
  post_rx_buffers(dev, kRx0);
  if (dev->vdev.features & kNetFeatureMq) post_rx_buffers(dev, kRx1);
  if (g_tests & kTestArp) send_frame(dev, kTx0, build_arp, "arp");
  if (g_tests & kTestRx) receive_frame(dev, kRx0, kRx0, kEtherTypeTest);
  if (g_tests & kTestBig) send_frame(dev, kTx0, build_big, "big");
  if (g_tests & kTestMq) {
    if (!(dev->vdev.features & kNetFeatureMq)) {
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
  put_dec(vdev_reset(&dev->vdev));
  line_end();
}

// ---- entry points -------------------------------------------------------------------------

void virtio_net_configure(const char* cmdline) {
  g_tests = 0;
  g_driven = 0;
  const char* value;
  usize length;
  if (!cmdline_value(cmdline, "skiff.net", &value, &length)) return;
  static const CmdlineWord kWords[] = {{"1", 0}, {"probe", 0}, {"arp", kTestArp}, {"rx", kTestRx},
                {"big", kTestBig}, {"mq", kTestMq}, {"mrg", kTestMrg}};
  g_tests = kTestEnabled | cmdline_word_bits(value, length, kWords, ARRAY_SIZE(kWords), "net");
}

void virtio_net_mmio_drive(u64 base, u32 poll_limit) {
  if (g_tests == 0 || g_driven) return;
  NetDevice dev;
  memset(&dev, 0, sizeof(dev));
  vdev_open_mmio(&dev.vdev, "virtio-net", base, poll_limit);
  drive(&dev);
}

void virtio_net_pci_drive(u32 slot, u32 poll_limit) {
  if (g_tests == 0 || g_driven) return;
  g_driven = 1;
  NetDevice dev;
  memset(&dev, 0, sizeof(dev));
  if (!vdev_open_pci(&dev.vdev, "virtio-net", slot, kBarRelocation, kNetConfigLength, poll_limit)) return;
  drive(&dev);
}
