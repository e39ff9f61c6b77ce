// SPDX-License-Identifier: Apache-2.0
// virtio-mmio (virtio 1.2 §4.2, register layout version 2) from the guest's side: the
// devices the command line names with Linux's `virtio_mmio.device=<size>@<base>:<irq>`
// tokens are counted; with `skiff.virtio=1` each is probed (magic, version, ids) and an
// entropy device (virtio-rng, id 4) is taken through the whole driver life cycle once:
// initialisation (§3.1.1, §4.2.3), one round of two requests on its requestq, and reset.
//
// Everything runs at ring 0 with interrupts off: the guest polls the used ring and reads
// InterruptStatus instead of taking the interrupt. The whole path is a few thousand
// instructions plus one bounded poll, cheap enough for the emulated ring 0 of the
// development machines' /dev/kvm (README.md, "Cost at emulated ring 0").
//
// The requestq and its request round (virtq_*) are shared with virtio_pci.c.
#include "guest.h"
#include "virtio_dev.h"

// ---- virtio-mmio registers (§4.2.2, "MMIO Device Register Layout"): 32-bit accesses only
enum {
  kRegMagicValue = 0x000,
  kRegVersion = 0x004,
  kRegDeviceId = 0x008,
  kRegVendorId = 0x00c,
  kRegDeviceFeatures = 0x010,
  kRegDeviceFeaturesSel = 0x014,
  kRegDriverFeatures = 0x020,
  kRegDriverFeaturesSel = 0x024,
  kRegQueueSel = 0x030,
  kRegQueueNumMax = 0x034,
  kRegQueueNum = 0x038,
  kRegQueueReady = 0x044,
  kRegQueueNotify = 0x050,
  kRegInterruptStatus = 0x060,
  kRegInterruptAck = 0x064,
  kRegStatus = 0x070,
  kRegQueueDescLow = 0x080,
  kRegQueueDescHigh = 0x084,
  kRegQueueDriverLow = 0x090,
  kRegQueueDriverHigh = 0x094,
  kRegQueueDeviceLow = 0x0a0,
  kRegQueueDeviceHigh = 0x0a4,
  kRegConfig = 0x100,  // the smallest block that holds every register
};

enum {
  kMmioMagic = 0x74726976,  // "virt"
  kMmioVersionModern = 2,
  kDeviceIdNet = 1,      // §5.1, driven by virtio_net.c
  kDeviceIdBalloon = 5,  // §5.5, driven by balloon.c
  kDeviceIdVsock = 19,   // §5.10, driven by vsock.c
  kDeviceIdBlock = 2,    // §5.2, driven by virtio_blk.c
  kDeviceIdEntropy = 4,  // §5.4
  // §2.1 device status bits
  kStatusAcknowledge = 1,
  kStatusDriver = 2,
  kStatusDriverOk = 4,
  kStatusFeaturesOk = 8,
  kStatusFailed = 128,
  // §2.7.5 descriptor flags
  kDescFlagNext = 1,
  kDescFlagWrite = 2,
  kMaxDevices = 16,
  kResetPolls = 1000,        // reads of Status after writing 0 (§2.4.2)
  kIsrPolls = 1000,          // reads of InterruptStatus once the buffers are used
  kInterruptUsedBuffer = 1,  // §4.2.2 InterruptStatus bit 0
  kSerialLsrPort = 0x3fd,
  kQueueSizeWanted = kVirtqSizeWanted,
  kRequestBytes = 128,       // chain (a) 64 bytes + chain (b) 16 + 48 bytes
};

static const u64 kFeatureVersion1 = 1ull << 32;  // §6.1 VIRTIO_F_VERSION_1

// How long the driver waits for the used ring, in polls of used->idx. Each poll is a
// handful of instructions plus one port read (a VM exit, as in smp.c's AP wait), so the
// default is ~1.2M ring-0 instructions if the device never answers; skiff's device
// answers within microseconds, i.e. after a few polls. Under QEMU's TCG a poll takes
// ~70 ns, so 200000 polls last ~15 ms, less than QEMU's main loop (which fills the
// buffers) may wait for a CPU on a loaded host: skiff.virtio-polls raises the limit.
static const u64 kDefaultUsedPolls = 200000;
static const u64 kMaxUsedPolls = 0xffffffffull;

typedef struct {
  u64 base;
  u64 size;
  u64 irq;
} MmioDevice;

// ---- the requestq, in the image's .bss (identity-mapped: address = guest-physical) --------

typedef struct {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
} VirtqDesc;

typedef struct {
  u16 flags;
  u16 idx;
  u16 ring[kQueueSizeWanted];
  u16 used_event;
} VirtqAvail;

typedef struct {
  u32 id;
  u32 len;
} VirtqUsedElem;

typedef struct {
  u16 flags;
  u16 idx;
  VirtqUsedElem ring[kQueueSizeWanted];
  u16 avail_event;
} VirtqUsed;

// §2.7 alignment: descriptor table 16, available ring 2, used ring 4. The page alignment
// keeps the whole queue inside one page.
typedef struct {
  VirtqDesc desc[kQueueSizeWanted] __attribute__((aligned(16)));
  VirtqAvail avail __attribute__((aligned(2)));
  VirtqUsed used __attribute__((aligned(4)));
  u8 buffers[kRequestBytes] __attribute__((aligned(8)));
} RequestQueue;

_Static_assert(sizeof(RequestQueue) <= 4096, "the requestq must fit in its page");
_Static_assert(sizeof(RequestQueue) % 8 == 0, "zeroed as 64-bit words");

static volatile RequestQueue g_queue __attribute__((aligned(4096)));

static void compiler_barrier(void) { __asm__ volatile("" : : : "memory"); }

static u64 address_of(const volatile void* p) { return (u64)(usize)p; }

// ---- command line -------------------------------------------------------------------------

static usize find_char(const char* text, usize length, char c) {
  usize i = 0;
  while (i < length && text[i] != c) ++i;
  return i;
}

// A size as Linux's memparse() takes it for this token: a number with an optional K, M or
// G suffix (plain, as QEMU's microvm writes "512", or e.g. "4K").
static int parse_size(const char* text, usize length, u64* out) {
  u32 shift = 0;
  if (length > 1) {
    char suffix = text[length - 1];
    if (suffix == 'K' || suffix == 'k') shift = 10;
    if (suffix == 'M' || suffix == 'm') shift = 20;
    if (suffix == 'G' || suffix == 'g') shift = 30;
    if (shift != 0) --length;
  }
  u64 value;
  if (!parse_u64(text, length, &value) || value > kIdentityMapLimit) return 0;
  *out = value << shift;
  return 1;
}

// `<size>@<base>:<irq>` with an optional trailing `:<id>` (Linux's platform device id,
// ignored).
static int parse_device(const char* text, usize length, MmioDevice* device) {
  usize at = find_char(text, length, '@');
  if (at == length || !parse_size(text, at, &device->size)) return 0;
  const char* rest = text + at + 1;
  usize rest_length = length - at - 1;
  usize colon = find_char(rest, rest_length, ':');
  if (colon == rest_length || !parse_u64(rest, colon, &device->base)) return 0;
  const char* irq = rest + colon + 1;
  usize irq_length = rest_length - colon - 1;
  irq_length = find_char(irq, irq_length, ':');
  return parse_u64(irq, irq_length, &device->irq);
}

static void index_error(const char* what, u32 index) {
  line_begin();
  put_str("error ");
  put_str(what);
  put_str(" index=");
  put_dec(index);
  line_end();
}

// Fills `devices` in command-line order; malformed or unusable tokens get an error line
// and are left out.
static u32 parse_devices(const char* cmdline, MmioDevice* devices) {
  u32 count = 0;
  u32 index = 0;
  usize position = 0;
  const char* token;
  usize length;
  while (cmdline_next_token(cmdline, &position, &token, &length)) {
    const char* value;
    usize value_length;
    if (!token_has_key(token, length, "virtio_mmio.device", &value, &value_length)) continue;
    MmioDevice device;
    if (!parse_device(value, value_length, &device)) {
      index_error("virtio-mmio-token", index);
    } else if (device.size < kRegConfig || device.base % 4 != 0 ||
               !phys_range_mapped(device.base, device.size)) {
      line_begin();
      put_str("error virtio-mmio-range base=");
      put_hex(device.base);
      put_str(" size=");
      put_hex(device.size);
      line_end();
    } else if (count == kMaxDevices) {
      index_error("virtio-mmio-too-many", index);
    } else {
      devices[count++] = device;
    }
    ++index;
  }
  return count;
}

// ---- the entropy device -------------------------------------------------------------------

static u32 reg_read(u64 base, u32 offset) { return mmio_read32(base + offset); }
static void reg_write(u64 base, u32 offset, u32 value) { mmio_write32(base + offset, value); }

static void rng_line_begin(void) {
  line_begin();
  put_str("virtio-rng ");
}

static void rng_error(const char* what, u64 value) {
  line_begin();
  put_str("error virtio-rng ");
  put_str(what);
  put_char('=');
  put_dec(value);
  line_end();
}

// §2.4.2: a reset is complete when Status reads back as 0.
static u32 reset_device(u64 base) {
  reg_write(base, kRegStatus, 0);
  u32 status = reg_read(base, kRegStatus);
  for (u32 i = 0; i < kResetPolls && status != 0; ++i) status = reg_read(base, kRegStatus);
  return status;
}

static void set_queue_address(u64 base, u32 low_register, u64 address) {
  reg_write(base, low_register, (u32)address);
  reg_write(base, low_register + 4, (u32)(address >> 32));
}

static void clear_queue_memory(void) {
  volatile u64* words = (volatile u64*)&g_queue;
  for (usize i = 0; i < sizeof(g_queue) / 8; ++i) words[i] = 0;
}

static void set_desc(u16 index, u64 offset, u32 length, u16 flags, u16 next) {
  g_queue.desc[index].addr = address_of(g_queue.buffers) + offset;
  g_queue.desc[index].len = length;
  g_queue.desc[index].flags = flags;
  g_queue.desc[index].next = next;
}

// ---- the request round, shared with virtio_pci.c ---------------------------------------------

void virtq_clear(void) { clear_queue_memory(); }
u64 virtq_desc_address(void) { return address_of(g_queue.desc); }
u64 virtq_avail_address(void) { return address_of(&g_queue.avail); }
u64 virtq_used_address(void) { return address_of(&g_queue.used); }

void virtq_post_requests(void) {
  // (a) one device-writable 64-byte buffer; (b) a chain of 16 + 48 writable bytes.
  set_desc(0, 0, 64, kDescFlagWrite, 0);
  set_desc(1, 64, 16, kDescFlagWrite | kDescFlagNext, 2);
  set_desc(2, 80, 48, kDescFlagWrite, 0);
  g_queue.avail.ring[0] = 0;
  g_queue.avail.ring[1] = 1;
  // §2.7.13: the ring entries and descriptors before the index that publishes them. x86
  // keeps stores in order; only the compiler must not reorder.
  compiler_barrier();
  g_queue.avail.idx = 2;
  compiler_barrier();
}

void virtq_wait_used(u32 poll_limit, u16 queue_size, const char* error_prefix, VirtqRound* round) {
  u16 used = g_queue.used.idx;
  for (u32 poll = 0; poll < poll_limit && used < 2; ++poll) {
    (void)inb(kSerialLsrPort);
    used = g_queue.used.idx;
  }
  compiler_barrier();

  // Lengths by chain (head descriptor 0 or 1), whatever order the device used them in.
  round->used = used;
  round->lengths[0] = 0;
  round->lengths[1] = 0;
  u16 returned = used < queue_size ? used : queue_size;
  for (u16 i = 0; i < returned; ++i) {
    u32 id = g_queue.used.ring[i].id;
    if (id < 2) {
      round->lengths[id] = g_queue.used.ring[i].len;
    } else {
      line_begin();
      put_str("error ");
      put_str(error_prefix);
      put_str(" used-id=");
      put_dec(id);
      line_end();
    }
  }
  u64 bits = 0;
  const volatile u64* words = (const volatile u64*)g_queue.buffers;
  for (u32 i = 0; i < kRequestBytes / 8; ++i) bits |= words[i];
  round->nonzero = bits != 0;
}

// Initialises the device (§3.1.1 through §4.2.3.2) up to DRIVER_OK. Returns 0 after
// reporting why it gave up (FAILED is then set, except when the reset did not complete).
static int initialise_entropy_device(u64 base, u16* queue_size) {
  u32 status = reset_device(base);
  if (status != 0) {
    rng_error("reset-status", status);
    return 0;
  }
  status = kStatusAcknowledge;
  reg_write(base, kRegStatus, status);
  status |= kStatusDriver;
  reg_write(base, kRegStatus, status);

  reg_write(base, kRegDeviceFeaturesSel, 0);
  u64 features = reg_read(base, kRegDeviceFeatures);
  reg_write(base, kRegDeviceFeaturesSel, 1);
  features |= (u64)reg_read(base, kRegDeviceFeatures) << 32;
  // The driver understands nothing but the modern interface itself: no indirect
  // descriptors, no event index, no device-specific bits.
  u64 accepted = features & kFeatureVersion1;
  reg_write(base, kRegDriverFeaturesSel, 0);
  reg_write(base, kRegDriverFeatures, (u32)accepted);
  reg_write(base, kRegDriverFeaturesSel, 1);
  reg_write(base, kRegDriverFeatures, (u32)(accepted >> 32));
  status |= kStatusFeaturesOk;
  reg_write(base, kRegStatus, status);
  // §3.1.1 step 6: FEATURES_OK must still be set, or the device refused the subset.
  int features_ok = (reg_read(base, kRegStatus) & kStatusFeaturesOk) != 0;
  rng_line_begin();
  put_str("device-features=");
  put_hex(features);
  put_str(" features-ok=");
  put_dec((u64)features_ok);
  line_end();
  if (!features_ok) {
    reg_write(base, kRegStatus, (status & ~(u32)kStatusFeaturesOk) | kStatusFailed);
    return 0;
  }

  // §4.2.3.2: select the queue, check it is not in use, size it, give it its rings.
  reg_write(base, kRegQueueSel, 0);
  u32 ready = reg_read(base, kRegQueueReady);
  u32 num_max = reg_read(base, kRegQueueNumMax);
  if (ready != 0 || num_max < 4) {
    if (ready != 0) rng_error("queue-ready", ready);
    if (num_max < 4) rng_error("queue-num-max", num_max);  // two chains take 3 descriptors
    reg_write(base, kRegStatus, status | kStatusFailed);
    return 0;
  }
  // Split queues have power-of-two sizes (§2.7).
  u32 size = kQueueSizeWanted;
  while (size > num_max) size >>= 1;
  *queue_size = (u16)size;
  virtq_clear();
  reg_write(base, kRegQueueNum, size);
  set_queue_address(base, kRegQueueDescLow, virtq_desc_address());
  set_queue_address(base, kRegQueueDriverLow, virtq_avail_address());
  set_queue_address(base, kRegQueueDeviceLow, virtq_used_address());
  reg_write(base, kRegQueueReady, 1);

  status |= kStatusDriverOk;
  reg_write(base, kRegStatus, status);
  status = reg_read(base, kRegStatus);
  rng_line_begin();
  put_str("queue-num-max=");
  put_dec(num_max);
  put_str(" queue-num=");
  put_dec(size);
  put_str(" status=");
  put_dec(status);
  line_end();
  return 1;
}

static void drive_entropy_device(u64 base, u32 poll_limit) {
  u16 queue_size = 0;
  if (!initialise_entropy_device(base, &queue_size)) return;

  virtq_post_requests();
  reg_write(base, kRegQueueNotify, 0);
  VirtqRound round;
  virtq_wait_used(poll_limit, queue_size, "virtio-rng", &round);
  u16 used = round.used;

  // The device publishes used->idx before it raises the interrupt; a device thread
  // preempted in between must not read as "no interrupt", so give it a few reads.
  u32 isr = reg_read(base, kRegInterruptStatus);
  for (u32 i = 0; i < kIsrPolls && used >= 2 && !(isr & kInterruptUsedBuffer); ++i) {
    isr = reg_read(base, kRegInterruptStatus);
  }
  rng_line_begin();
  put_str("used=");
  put_dec(used);
  put_str(" len0=");
  put_dec(round.lengths[0]);
  put_str(" len1=");
  put_dec(round.lengths[1]);
  put_str(" nonzero=");
  put_dec((u64)round.nonzero);
  put_str(" isr=");
  put_dec(isr);
  line_end();

  reg_write(base, kRegInterruptAck, isr);
  rng_line_begin();
  put_str("isr-after-ack=");
  put_dec(reg_read(base, kRegInterruptStatus));
  line_end();

  // The device must stop writing into the queue before the image reuses that memory.
  u32 status = reset_device(base);
  rng_line_begin();
  put_str("reset-status=");
  put_dec(status);
  line_end();
}

static void probe_device(const MmioDevice* device, u32 poll_limit) {
  u64 base = device->base;
  u32 magic = reg_read(base, kRegMagicValue);
  if (magic != kMmioMagic) {
    line_begin();
    put_str("error virtio-mmio-magic base=");
    put_hex(base);
    put_str(" value=");
    put_hex(magic);
    line_end();
    return;
  }
  u32 version = reg_read(base, kRegVersion);
  if (version != kMmioVersionModern) {
    // Version 1 is the legacy layout (§4.2.4), which this driver does not speak.
    line_begin();
    put_str("error virtio-mmio-version base=");
    put_hex(base);
    put_str(" value=");
    put_dec(version);
    line_end();
    return;
  }
  u32 id = reg_read(base, kRegDeviceId);
  line_begin();
  put_str("virtio-mmio base=");
  put_hex(base);
  put_str(" irq=");
  put_dec(device->irq);
  put_str(" id=");
  put_dec(id);
  put_str(" vendor=");
  put_hex(reg_read(base, kRegVendorId));
  line_end();
  if (id == kDeviceIdEntropy) drive_entropy_device(base, poll_limit);
  if (id == kDeviceIdBlock) virtio_blk_mmio_drive(base, poll_limit);
  if (id == kDeviceIdNet) virtio_net_mmio_drive(base, poll_limit);
  if (id == kDeviceIdBalloon) balloon_mmio_drive(base, poll_limit);
  if (id == kDeviceIdVsock) vsock_mmio_drive(base, poll_limit);
}

u32 virtio_mmio_report(const char* cmdline) {
  MmioDevice devices[kMaxDevices];
  u32 count = parse_devices(cmdline, devices);
  line_begin();
  put_str("virtio-mmio-devices=");
  put_dec(count);
  line_end();

  const char* value;
  usize value_length;
  u64 enabled = 0;
  if (cmdline_value(cmdline, "skiff.virtio", &value, &value_length) &&
      (!parse_u64(value, value_length, &enabled) || enabled > 1)) {
    line_begin();
    put_str("error bad-virtio-flag");
    line_end();
    enabled = 0;
  }
  if (!enabled) return 0;
  u64 poll_limit = kDefaultUsedPolls;
  if (cmdline_value(cmdline, "skiff.virtio-polls", &value, &value_length) &&
      (!parse_u64(value, value_length, &poll_limit) || poll_limit == 0 ||
       poll_limit > kMaxUsedPolls)) {
    line_begin();
    put_str("error bad-virtio-polls");
    line_end();
    poll_limit = kDefaultUsedPolls;
  }
  virtio_blk_configure(cmdline);
  virtio_net_configure(cmdline);
  balloon_configure(cmdline);
  vsock_configure(cmdline);
  for (u32 i = 0; i < count; ++i) probe_device(&devices[i], (u32)poll_limit);
  return (u32)poll_limit;
}
