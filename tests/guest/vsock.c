// SPDX-License-Identifier: Apache-2.0
// virtio-vsock (virtio 1.2 §5.10) from the guest's side, over virtio-mmio (§4.2) or virtio-pci
// (§4.1), only with skiff.virtio=1 and skiff.vsock=<tests>: the first socket device found (the
// virtio-mmio slots first, then PCI bus 0) is initialised, its guest CID printed, and stream
// connections opened, accepted, fed and closed with interrupts off, polling the used rings.
// README.md, "virtio-vsock", lists the lines; tests/integration/virtio_vsock_test.cc plays the
// host side through skiff's Unix sockets (docs/devices.md, "virtio-vsock").
//
// The driver is a single-threaded packet loop, not a socket layer: each test sends a packet
// (one in flight on the transmit queue, waited for) and waits on the receive queue for the
// next packet of its connection; packets of any other connection are printed as
// "unexpected" and dropped. Receive buffers are one device-writable 4 KiB descriptor each
// (header + payload), given back as soon as their packet has been copied out.
//
// Tests (skiff.vsock= words):
//   connect    guest → host: REQUEST to CID 2 port 5000, RESPONSE, 1000 bytes out as one
//              OP_RW (through an indirect table when INDIRECT_DESC was negotiated), the
//              host's echo back as OP_RW packets (as many as the device splits it into),
//              CREDIT_UPDATE, SHUTDOWN(both), and the device's RST.
//   refused    REQUEST to port 5001, where nothing listens: RST.
//   accept     host → guest: "listen port=6000" tells the host to connect; the device's
//              REQUEST is answered with RESPONSE, 700 bytes from the host are read and sent
//              back reversed, the host's SHUTDOWN is answered with SHUTDOWN(both), then RST.
//   violation  packets that break the protocol: OP_RW from a CID that is not the guest's
//              (dropped, no answer), OP_RW on no connection (RST), a REQUEST whose len says
//              64 payload bytes that the chain does not carry (RST).
#include "virtio_dev.h"

enum {
  kQueueRx = 0,  // §5.10.2
  kQueueTx = 1,
  kQueueEvent = 2,
  kQueues = 3,
  kQueueSizeWanted = 8,
  kRxPosted = 4,
  kRxBufferBytes = 4096,
  kEventPosted = 2,
  kEventBytes = 4,  // struct virtio_vsock_event: le32 id (§5.10.6.5)
  kConfigGuestCid = 0,  // le64 (§5.10.4)
  kConfigLength = 8,
  kHeaderBytes = 44,  // struct virtio_vsock_hdr (§5.10.6)
  kHostCid = 2,
  kTypeStream = 1,
  kOpRequest = 1,
  kOpResponse = 2,
  kOpRst = 3,
  kOpShutdown = 4,
  kOpRw = 5,
  kOpCreditUpdate = 6,
  kOpCreditRequest = 7,
  kShutdownBoth = 3,  // VIRTIO_VSOCK_SHUTDOWN_RCV | _SEND
  kBufAlloc = 64 * 1024,  // what this driver advertises; it consumes at once
  kDescIndirect = 4,      // VIRTQ_DESC_F_INDIRECT (§2.7.5.3)
  kMaxUnexpected = 16,    // packets of other connections tolerated in one run
  // ---- the tests' ports and payloads (the host test knows them too)
  kEchoPort = 5000,
  kEchoLocalPort = 1024,
  kRefusedPort = 5001,
  kRefusedLocalPort = 1025,
  kListenPort = 6000,
  kViolationPort = 5000,  // a host port with a listener but, by then, no connection
  kNoConnectionLocalPort = 1026,
  kWrongSourceLocalPort = 1027,
  kShortPayloadLocalPort = 1028,
  kShortPayloadClaimed = 64,
  kEchoBytes = 1000,    // byte i = (i * 11 + 5) & 0xff
  kAcceptBytes = 700,   // what the host sends: byte i = (i * 13 + 1) & 0xff
  kDataRoom = 1024,
  // ---- skiff.vsock tests
  kTestEnabled = 1 << 0,
  kTestConnect = 1 << 1,
  kTestRefused = 1 << 2,
  kTestAccept = 1 << 3,
  kTestViolation = 1 << 4,
};

static const u64 kFeatureIndirectDesc = 1ull << 28;  // VIRTIO_F_INDIRECT_DESC
// Where a PCI BAR above 4 GiB is moved: clear of rng, blk, net and balloon (0xc0000000-0xc3ffffff).
static const u64 kBarRelocation = 0xc4000000ull;

typedef struct {
  u64 src_cid;
  u64 dst_cid;
  u32 src_port;
  u32 dst_port;
  u32 len;
  u16 type;
  u16 op;
  u32 flags;
  u32 buf_alloc;
  u32 fwd_cnt;
} __attribute__((packed)) VsockHeader;

_Static_assert(sizeof(VsockHeader) == kHeaderBytes, "struct virtio_vsock_hdr is 44 bytes");

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

static volatile Ring g_rings[kQueues] __attribute__((aligned(4096)));
static volatile VdevDesc g_indirect[2] __attribute__((aligned(16)));
static u8 g_rx[kRxPosted][kRxBufferBytes] __attribute__((aligned(4096)));
static volatile u8 g_events[kEventPosted][8] __attribute__((aligned(16)));
static VsockHeader g_tx_header __attribute__((aligned(16)));
static u8 g_out[kDataRoom] __attribute__((aligned(16)));  // payload sent
static u8 g_in[kDataRoom] __attribute__((aligned(16)));   // payload received

typedef struct {
  VirtioDev vdev;
  VdevQueue queues[kQueues];
  u64 cid;
  int indirect;     // INDIRECT_DESC negotiated
  u32 unexpected;   // packets of no test's connection
} Vsock;

static u32 g_tests;   // skiff.vsock, kTest* bits; 0 = off
static int g_driven;  // the first socket device has been taken

static u64 address_of(const volatile void* p) { return (u64)(usize)p; }

static void vsock_line_begin(void) {
  line_begin();
  put_str("virtio-vsock ");
}

static void vsock_error(const char* what, u64 value) {
  line_begin();
  put_str("error virtio-vsock ");
  put_str(what);
  put_char('=');
  put_dec(value);
  line_end();
}

static const char* op_name(u32 op) {
  static const char* const kNames[] = {"invalid",  "request", "response",      "rst",
                                       "shutdown", "rw",      "credit-update", "credit-request"};
  return op < ARRAY_SIZE(kNames) ? kNames[op] : "invalid";
}

// " reply=<op>" for a packet that came, " reply=timeout" when none did.
static void put_reply(int got, const VsockHeader* header) {
  put_str(" reply=");
  put_str(got ? op_name(header->op) : "timeout");
}

static u64 fnv1a(const u8* data, u32 size) {
  u64 hash = 0xcbf29ce484222325ull;
  for (u32 i = 0; i < size; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

// ---- packets --------------------------------------------------------------------------------

static void make_header(const Vsock* v, VsockHeader* header, u32 src_port, u32 dst_port, u32 op, u32 len,
                        u32 fwd_cnt) {
  memset(header, 0, sizeof(*header));
  header->src_cid = v->cid;
  header->dst_cid = kHostCid;
  header->src_port = src_port;
  header->dst_port = dst_port;
  header->len = len;
  header->type = kTypeStream;
  header->op = (u16)op;
  header->buf_alloc = kBufAlloc;
  header->fwd_cnt = fwd_cnt;
}

// One packet on the transmit queue: the header in one descriptor, the payload (if any) in a
// second, chained directly or through an indirect table; polled until the device returns it.
static int send_packet(Vsock* v, const VsockHeader* header, const u8* payload, u32 payload_bytes, int indirect) {
  memcpy(&g_tx_header, header, sizeof(g_tx_header));
  volatile Ring* ring = &g_rings[kQueueTx];
  volatile VdevDesc* chain = ring->desc;
  if (payload_bytes != 0 && indirect) {
    chain = g_indirect;
    ring->desc[0].addr = address_of(g_indirect);
    ring->desc[0].len = sizeof(g_indirect);
    ring->desc[0].flags = kDescIndirect;
    ring->desc[0].next = 0;
  }
  chain[0].addr = address_of(&g_tx_header);
  chain[0].len = kHeaderBytes;
  chain[0].flags = payload_bytes != 0 ? kVdevDescNext : 0;
  chain[0].next = 1;
  chain[1].addr = address_of(payload);
  chain[1].len = payload_bytes;
  chain[1].flags = 0;
  chain[1].next = 0;
  u16 head = 0;
  vdev_post(&v->vdev, &v->queues[kQueueTx], &head, 1);
  u32 id = 0;
  u32 length = 0;
  if (!vdev_wait_used(&v->vdev, &v->queues[kQueueTx], &id, &length)) {
    vsock_error("tx-timeout op", header->op);
    return 0;
  }
  if (id != 0) vsock_error("tx-used-id", id);
  return 1;
}

// The next packet on the receive queue: header and up to `room` payload bytes copied out,
// the buffer posted again. 0 when none came within skiff.virtio-polls polls or the device
// returned a buffer this driver cannot account for.
static int receive_packet(Vsock* v, VsockHeader* header, u8* payload, u32 room, u32* payload_bytes) {
  u32 id = 0;
  u32 length = 0;
  *payload_bytes = 0;
  if (!vdev_wait_used(&v->vdev, &v->queues[kQueueRx], &id, &length)) return 0;
  if (id >= kRxPosted || length < kHeaderBytes || length > kRxBufferBytes) {
    vsock_error("rx-used-id", id);
    vsock_error("rx-used-len", length);
    return 0;
  }
  memcpy(header, g_rx[id], kHeaderBytes);
  u32 carried = length - kHeaderBytes;
  // §5.10.6.3: the used length is the header plus the len bytes it announces.
  if (header->len != carried) {
    line_begin();
    put_str("error virtio-vsock rx-len");
    put_field("header-len", header->len);
    put_field("used-len", length);
    line_end();
  }
  u32 n = carried < header->len ? carried : header->len;
  if (n > room) n = room;
  if (payload != NULL) memcpy(payload, g_rx[id] + kHeaderBytes, n);
  *payload_bytes = n;
  u16 head = (u16)id;  // desc[id] still describes g_rx[id], device-writable
  vdev_post(&v->vdev, &v->queues[kQueueRx], &head, 1);
  return 1;
}

static void report_unexpected(Vsock* v, const VsockHeader* header) {
  ++v->unexpected;
  vsock_line_begin();
  put_str("unexpected op=");
  put_str(op_name(header->op));
  put_field("src-cid", header->src_cid);
  put_field("src-port", header->src_port);
  put_field("dst-cid", header->dst_cid);
  put_field("dst-port", header->dst_port);
  put_field("len", header->len);
  put_field("flags", header->flags);
  line_end();
}

static int from_host_to(const Vsock* v, const VsockHeader* header, u32 local_port) {
  return header->src_cid == kHostCid && header->dst_cid == v->cid && header->dst_port == local_port &&
         header->type == kTypeStream;
}

// Waits for the next packet of the connection (local_port, remote_port); others are reported
// and dropped. 0 on a timeout or after too many unexpected packets.
static int expect_packet(Vsock* v, u32 local_port, u32 remote_port, VsockHeader* header, u8* payload, u32 room,
                         u32* payload_bytes) {
  while (v->unexpected < kMaxUnexpected) {
    if (!receive_packet(v, header, payload, room, payload_bytes)) return 0;
    if (from_host_to(v, header, local_port) && header->src_port == remote_port) return 1;
    report_unexpected(v, header);
  }
  return 0;
}

// Receives `wanted` bytes of OP_RW on a connection into g_in, skipping the device's credit
// packets (a CREDIT_REQUEST is answered). Stops early on any other packet, which is left in
// *last (*other = 1).
static u32 receive_data(Vsock* v, u32 local_port, u32 remote_port, u32 wanted, u32* packets, VsockHeader* last,
                        int* other) {
  u32 received = 0;
  *packets = 0;
  *other = 0;
  while (received < wanted) {
    u32 got = 0;
    if (!expect_packet(v, local_port, remote_port, last, g_in + received, wanted - received, &got)) break;
    if (last->op == kOpRw) {
      received += got;
      ++*packets;
      continue;
    }
    if (last->op == kOpCreditUpdate) continue;
    if (last->op == kOpCreditRequest) {
      VsockHeader update;
      make_header(v, &update, local_port, remote_port, kOpCreditUpdate, 0, received);
      send_packet(v, &update, NULL, 0, 0);
      continue;
    }
    *other = 1;
    break;
  }
  return received;
}

// Sends SHUTDOWN(both) and waits for the device's answer (RST expected); prints the close line
// with `shown_port` (the port the test is about).
static void close_connection(Vsock* v, u32 local_port, u32 remote_port, u32 fwd_cnt, u32 shown_port) {
  VsockHeader header;
  make_header(v, &header, local_port, remote_port, kOpShutdown, 0, fwd_cnt);
  header.flags = kShutdownBoth;
  send_packet(v, &header, NULL, 0, 0);
  VsockHeader reply;
  u32 got = 0;
  int ok = 0;
  // The device may still have credit news for the connection: skip it.
  do {
    ok = expect_packet(v, local_port, remote_port, &reply, NULL, 0, &got);
  } while (ok && (reply.op == kOpCreditUpdate || reply.op == kOpCreditRequest));
  vsock_line_begin();
  put_str("close");
  put_field("port", shown_port);
  put_reply(ok, &reply);
  line_end();
}

// ---- tests ------------------------------------------------------------------------------------

// Guest → host: REQUEST, RESPONSE, data out, echo back, credit update, shutdown, RST.
static void test_connect(Vsock* v) {
  VsockHeader header;
  make_header(v, &header, kEchoLocalPort, kEchoPort, kOpRequest, 0, 0);
  send_packet(v, &header, NULL, 0, 0);
  VsockHeader reply;
  u32 got = 0;
  int ok = expect_packet(v, kEchoLocalPort, kEchoPort, &reply, NULL, 0, &got);
  vsock_line_begin();
  put_str("connect");
  put_field("port", kEchoPort);
  put_field("local-port", kEchoLocalPort);
  put_reply(ok, &reply);
  put_field("host-buf-alloc", ok ? reply.buf_alloc : 0);
  line_end();
  if (!ok || reply.op != kOpResponse) return;

  for (u32 i = 0; i < kEchoBytes; ++i) g_out[i] = (u8)(i * 11 + 5);
  make_header(v, &header, kEchoLocalPort, kEchoPort, kOpRw, kEchoBytes, 0);
  int sent = send_packet(v, &header, g_out, kEchoBytes, v->indirect);
  u32 packets = 0;
  int other = 0;
  u32 received = receive_data(v, kEchoLocalPort, kEchoPort, kEchoBytes, &packets, &reply, &other);
  vsock_line_begin();
  put_str("echo");
  put_field("port", kEchoPort);
  put_field("sent", sent ? kEchoBytes : 0);
  put_field("received", received);
  put_field("packets", packets);
  put_str(" fnv=");
  put_hex_padded(fnv1a(g_in, received));
  put_field("match", received == kEchoBytes && bytes_equal(g_in, g_out, kEchoBytes));
  put_field("indirect", (u64)v->indirect);
  if (other) {
    put_str(" other=");
    put_str(op_name(reply.op));
  }
  line_end();
  if (other) return;  // the connection is gone (RST) or closing: nothing more to say on it

  // Everything read was consumed: say so (§5.10.6.3), then close.
  make_header(v, &header, kEchoLocalPort, kEchoPort, kOpCreditUpdate, 0, received);
  send_packet(v, &header, NULL, 0, 0);
  close_connection(v, kEchoLocalPort, kEchoPort, received, kEchoPort);
}

// A port nobody listens on: RST.
static void test_refused(Vsock* v) {
  VsockHeader header;
  make_header(v, &header, kRefusedLocalPort, kRefusedPort, kOpRequest, 0, 0);
  send_packet(v, &header, NULL, 0, 0);
  VsockHeader reply;
  u32 got = 0;
  int ok = expect_packet(v, kRefusedLocalPort, kRefusedPort, &reply, NULL, 0, &got);
  vsock_line_begin();
  put_str("refused");
  put_field("port", kRefusedPort);
  put_field("local-port", kRefusedLocalPort);
  put_reply(ok, &reply);
  line_end();
}

// Host → guest: the host connects once it reads the "listen" line.
static void test_accept(Vsock* v) {
  vsock_line_begin();
  put_str("listen");
  put_field("port", kListenPort);
  line_end();
  VsockHeader request;
  u32 got = 0;
  int ok = 0;
  while (v->unexpected < kMaxUnexpected) {
    ok = receive_packet(v, &request, NULL, 0, &got);
    if (!ok) break;
    if (from_host_to(v, &request, kListenPort) && request.op == kOpRequest) break;
    report_unexpected(v, &request);
    ok = 0;
  }
  if (!ok) {
    vsock_line_begin();
    put_str("accept");
    put_field("port", kListenPort);
    put_str(" request=timeout");
    line_end();
    return;
  }
  // Answer first: the host's CONNECT waits (2 s at most) for this.
  const u32 host_port = request.src_port;
  VsockHeader header;
  make_header(v, &header, kListenPort, host_port, kOpResponse, 0, 0);
  int answered = send_packet(v, &header, NULL, 0, 0);
  vsock_line_begin();
  put_str("accept");
  put_field("port", kListenPort);
  put_field("from-cid", request.src_cid);
  put_field("from-port", host_port);
  put_field("host-buf-alloc", request.buf_alloc);
  put_field("answered", (u64)answered);
  line_end();

  u32 packets = 0;
  int other = 0;
  VsockHeader last;
  u32 received = receive_data(v, kListenPort, host_port, kAcceptBytes, &packets, &last, &other);
  vsock_line_begin();
  put_str("recv");
  put_field("port", kListenPort);
  put_field("received", received);
  put_field("packets", packets);
  put_str(" fnv=");
  put_hex_padded(fnv1a(g_in, received));
  if (other) {
    put_str(" other=");
    put_str(op_name(last.op));
  }
  line_end();
  if (other) return;

  for (u32 i = 0; i < received; ++i) g_out[i] = g_in[received - 1 - i];
  make_header(v, &header, kListenPort, host_port, kOpRw, received, received);
  int sent = send_packet(v, &header, g_out, received, 0);
  vsock_line_begin();
  put_str("reply");
  put_field("port", kListenPort);
  put_field("sent", sent ? received : 0);
  put_str(" fnv=");
  put_hex_padded(fnv1a(g_out, received));
  line_end();

  // The host shuts its sending side: SHUTDOWN(SEND) from the device.
  VsockHeader shutdown;
  do {
    ok = expect_packet(v, kListenPort, host_port, &shutdown, NULL, 0, &got);
  } while (ok && (shutdown.op == kOpCreditUpdate || shutdown.op == kOpCreditRequest));
  vsock_line_begin();
  put_str("peer-shutdown");
  put_field("port", kListenPort);
  put_reply(ok, &shutdown);
  put_field("flags", ok ? shutdown.flags : 0);
  line_end();
  if (!ok || shutdown.op != kOpShutdown) return;
  close_connection(v, kListenPort, host_port, received, kListenPort);
}

// Protocol violations. The wrong-source packet goes first: were it answered, its RST would
// arrive before the no-connection one (the device answers in order).
static void test_violation(Vsock* v) {
  static const u8 kBytes[4] = {'S', 'K', 'V', '1'};
  VsockHeader header;
  make_header(v, &header, kWrongSourceLocalPort, kViolationPort, kOpRw, sizeof(kBytes), 0);
  header.src_cid = v->cid + 1;
  send_packet(v, &header, kBytes, sizeof(kBytes), 0);
  make_header(v, &header, kNoConnectionLocalPort, kViolationPort, kOpRw, sizeof(kBytes), 0);
  send_packet(v, &header, kBytes, sizeof(kBytes), 0);

  VsockHeader reply;
  u32 got = 0;
  int ok = receive_packet(v, &reply, NULL, 0, &got);
  int wrong_source_answered = ok && from_host_to(v, &reply, kWrongSourceLocalPort);
  if (wrong_source_answered) {
    ok = receive_packet(v, &reply, NULL, 0, &got);
  }
  vsock_line_begin();
  put_str("violation wrong-source");
  put_field("local-port", kWrongSourceLocalPort);
  put_str(wrong_source_answered ? " reply=rst" : " reply=none");
  line_end();
  if (ok && !(from_host_to(v, &reply, kNoConnectionLocalPort) && reply.src_port == kViolationPort)) {
    report_unexpected(v, &reply);
    ok = expect_packet(v, kNoConnectionLocalPort, kViolationPort, &reply, NULL, 0, &got);
  }
  vsock_line_begin();
  put_str("violation no-connection");
  put_field("local-port", kNoConnectionLocalPort);
  put_reply(ok, &reply);
  line_end();

  // len announces payload the chain does not carry (and on a control packet).
  make_header(v, &header, kShortPayloadLocalPort, kViolationPort, kOpRequest, kShortPayloadClaimed, 0);
  send_packet(v, &header, NULL, 0, 0);
  ok = expect_packet(v, kShortPayloadLocalPort, kViolationPort, &reply, NULL, 0, &got);
  vsock_line_begin();
  put_str("violation short-payload");
  put_field("local-port", kShortPayloadLocalPort);
  put_reply(ok, &reply);
  line_end();
}

// ---- the device ------------------------------------------------------------------------------

static int setup_queue(Vsock* v, u32 index) {
  volatile Ring* ring = &g_rings[index];
  VdevQueue* queue = &v->queues[index];
  queue->desc = ring->desc;
  queue->avail = address_of(&ring->avail);
  queue->used = address_of(&ring->used);
  return vdev_setup_queue(&v->vdev, queue, (u16)index, kQueueSizeWanted, kRxPosted);
}

// §3.1.1 up to DRIVER_OK with the three queues. 0 after reporting why not.
static int initialise(Vsock* v) {
  VirtioDev* vdev = &v->vdev;
  if (!vdev_begin(vdev)) return 0;
  u64 offered = vdev_device_features(vdev);
  // No event index: this driver polls and notifies every time.
  int features_ok = vdev_accept_features(vdev, offered & (kVdevFeatureVersion1 | kFeatureIndirectDesc));
  vsock_line_begin();
  put_str("transport=");
  put_str(vdev->is_pci ? "pci" : "mmio");
  put_str(" device-features=");
  put_hex(offered);
  put_str(" driver-features=");
  put_hex(vdev->features);
  put_field("features-ok", (u64)features_ok);
  line_end();
  if (!features_ok) return 0;
  v->indirect = (vdev->features & kFeatureIndirectDesc) != 0;

  v->cid = vdev_config64(vdev, kConfigGuestCid);
  vsock_line_begin();
  put_str("config");
  put_field("guest-cid", v->cid);
  line_end();

  for (u32 q = 0; q < kQueues; ++q) {
    if (!setup_queue(v, q)) {
      vdev_fail(vdev);
      return 0;
    }
  }
  vdev_driver_ok(vdev);
  // §5.10.6.1: receive and event buffers before anything else.
  volatile Ring* rx = &g_rings[kQueueRx];
  u16 heads[kRxPosted];
  for (u32 i = 0; i < kRxPosted; ++i) {
    rx->desc[i].addr = address_of(g_rx[i]);
    rx->desc[i].len = kRxBufferBytes;
    rx->desc[i].flags = kVdevDescWrite;
    rx->desc[i].next = 0;
    heads[i] = (u16)i;
  }
  vdev_post(vdev, &v->queues[kQueueRx], heads, kRxPosted);
  volatile Ring* events = &g_rings[kQueueEvent];
  for (u32 i = 0; i < kEventPosted; ++i) {
    events->desc[i].addr = address_of(g_events[i]);
    events->desc[i].len = kEventBytes;
    events->desc[i].flags = kVdevDescWrite;
    events->desc[i].next = 0;
    heads[i] = (u16)i;
  }
  vdev_post(vdev, &v->queues[kQueueEvent], heads, kEventPosted);
  vsock_line_begin();
  put_str("queues");
  put_field("queue-size", v->queues[kQueueRx].size);
  put_field("rx-buffers", kRxPosted);
  put_field("event-buffers", kEventPosted);
  put_field("status", vdev_status(vdev));
  line_end();
  return 1;
}

static void drive(Vsock* v) {
  g_driven = 1;
  volatile u8* rings = (volatile u8*)g_rings;
  for (usize i = 0; i < sizeof(g_rings); ++i) rings[i] = 0;
  if (!initialise(v)) return;
  if (g_tests & kTestConnect) test_connect(v);
  if (g_tests & kTestRefused) test_refused(v);
  if (g_tests & kTestAccept) test_accept(v);
  if (g_tests & kTestViolation) test_violation(v);
  // Nothing should be left: no packet for any connection, no event (no snapshot was restored).
  u32 id = 0;
  u32 length = 0;
  u32 leftover = 0;
  while (vdev_take_used(&v->queues[kQueueRx], &id, &length)) ++leftover;
  u32 events = 0;
  while (vdev_take_used(&v->queues[kQueueEvent], &id, &length)) ++events;
  vsock_line_begin();
  put_str("done");
  put_field("unexpected", v->unexpected);
  put_field("leftover", leftover);
  put_field("events", events);
  put_field("reset-status", vdev_reset(&v->vdev));
  line_end();
}

// ---- entry points -------------------------------------------------------------------------

void vsock_configure(const char* cmdline) {
  g_tests = 0;
  g_driven = 0;
  const char* value;
  usize length;
  if (!cmdline_value(cmdline, "skiff.vsock", &value, &length)) return;
  static const CmdlineWord kWords[] = {{"1", 0},
                {"probe", 0},
                {"connect", kTestConnect},
                {"refused", kTestRefused},
                {"accept", kTestAccept},
                {"violation", kTestViolation},
                {"all", kTestConnect | kTestRefused | kTestAccept | kTestViolation}};
  g_tests = kTestEnabled | cmdline_word_bits(value, length, kWords, ARRAY_SIZE(kWords), "vsock");
}

void vsock_mmio_drive(u64 base, u32 poll_limit) {
  if (g_tests == 0 || g_driven) return;
  Vsock v;
  memset(&v, 0, sizeof(v));
  vdev_open_mmio(&v.vdev, "virtio-vsock", base, poll_limit);
  drive(&v);
}

void vsock_pci_drive(u32 slot, u32 poll_limit) {
  if (g_tests == 0 || g_driven) return;
  g_driven = 1;
  Vsock v;
  memset(&v, 0, sizeof(v));
  if (!vdev_open_pci(&v.vdev, "virtio-vsock", slot, kBarRelocation, kConfigLength, poll_limit)) return;
  drive(&v);
}
