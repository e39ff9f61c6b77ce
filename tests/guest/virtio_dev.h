// SPDX-License-Identifier: Apache-2.0
// One virtio device as a polling driver sees it, over either transport: virtio-mmio (§4.2)
// or modern virtio-pci (§4.1). The test guest's drivers (virtio_blk.c, virtio_net.c,
// balloon.c) and the ring-0 setup of its benchmarks (blk_bench.c, net_bench.c) open the
// device here and then speak in terms of status, features, configuration fields and queues,
// whatever the transport. Interrupts stay off: every driver polls its used rings. (virtio.c
// and virtio_pci.c drive the entropy device their own way: legacy checks, ISR, MSI-X.)
#pragma once

#include "guest.h"

// §2.1 device status bits.
#define kVdevStatusAcknowledge 1u
#define kVdevStatusDriver 2u
#define kVdevStatusDriverOk 4u
#define kVdevStatusFeaturesOk 8u
#define kVdevStatusFailed 128u
// §6.1 VIRTIO_F_VERSION_1: both transports here are the modern ones.
#define kVdevFeatureVersion1 (1ull << 32)
// Split virtqueue descriptor flags (§2.7.5) and the avail flag that asks for no interrupt.
#define kVdevDescNext 1u
#define kVdevDescWrite 2u
#define kVdevAvailNoInterrupt 1u
#define kVdevUsedNoNotify 1u  // §2.7.10: the device asks not to be notified
#define kVdevMaxQueues 8u
#define kVdevPciSlots 32u  // bus 0, function 0 of each slot

typedef struct {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
} VdevDesc;

// The driver and device areas of a split queue (§2.7.6, §2.7.8) as C types, for code that
// walks the rings itself (the benchmarks' ring-3 loops). ring[] has the queue's size entries;
// used_event / avail_event follow them.
typedef struct {
  u16 flags;
  u16 idx;
  u16 ring[];
} VdevAvail;

typedef struct {
  u32 id;
  u32 len;
} VdevUsedElement;

typedef struct {
  u16 flags;
  u16 idx;
  VdevUsedElement ring[];
} VdevUsed;

// One split queue (§2.7). The caller provides zeroed, identity-mapped memory for the three
// parts: desc (16-byte aligned, 16 bytes per entry), avail (2-byte aligned, 6 + 2 per entry:
// flags, idx, ring[], used_event) and used (4-byte aligned, 6 + 8 per entry: flags, idx,
// {id, len}[], avail_event).
typedef struct {
  volatile VdevDesc* desc;
  u64 avail;
  u64 used;
  u16 size;             // set by vdev_setup_queue: min(wanted, device maximum), a power of two
  u16 index;            // the device's queue number
  u16 next_avail;
  u16 last_used;
  u64 notify;           // virtio-pci: the queue's notification address (16-bit writes of
                        // `index`, §4.1.5.2); MMIO, so ring-3 code may write it too
} VdevQueue;

typedef struct {
  const char* name;  // prefix of error lines, e.g. "virtio-balloon"
  int is_pci;
  u64 base;            // virtio-mmio register block
  u64 common;          // virtio-pci regions (guest-physical, inside the placed BAR)
  u64 device_config;
  u64 notify;
  u32 notify_length;
  u32 notify_multiplier;
  u32 poll_limit;      // used-ring polls before a request is declared lost
  u64 features;        // negotiated
} VirtioDev;

// Opens the virtio-mmio device at `base`.
void vdev_open_mmio(VirtioDev* dev, const char* name, u64 base, u32 poll_limit);
// The first function 0 on bus 0 whose vendor/device dword (config offset 0, device << 16 |
// vendor) is `vendor_device`, or -1 when none of the kVdevPciSlots slots has it.
int vdev_pci_find(u32 vendor_device);
// 1 when the capabilities name the common, notify and device-specific regions (§4.1.4).
int vdev_pci_has_regions(const VirtioPciCaps* caps);
// Opens the virtio-pci function at `slot` of bus 0: reads its capabilities, places the BAR
// holding them (moving it to `relocation` when the VMM put it above 4 GiB) and turns on
// memory decode and bus mastering with INTx off. 0 after printing "error <name> ..." when a
// capability is missing or does not fit, or the device configuration is shorter than
// `device_config_min`.
int vdev_open_pci(VirtioDev* dev, const char* name, u32 slot, u64 relocation, u32 device_config_min,
                  u32 poll_limit);
// The same with the capabilities already read (virtio_pci_read_capabilities prints them).
int vdev_open_pci_caps(VirtioDev* dev, const char* name, u32 slot, const VirtioPciCaps* caps, u64 relocation,
                       u32 device_config_min, u32 poll_limit);

u32 vdev_status(const VirtioDev* dev);
void vdev_set_status(const VirtioDev* dev, u32 status);
// §2.4.2: writes 0 and polls until the status reads back as 0; returns the last status read.
u32 vdev_reset(const VirtioDev* dev);
// §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, features offered & wanted, FEATURES_OK.
// Stores the offered set in *offered. 1 when the device kept FEATURES_OK; otherwise FAILED
// is set and 0 returned (nothing printed: the caller reports the features), or, when the
// reset did not complete, 0 after "error <name> reset-status=<dec>" with *offered = 0.
int vdev_negotiate(VirtioDev* dev, u64 wanted, u64* offered);
// vdev_negotiate in steps, for drivers that choose their features from the offered set:
// §3.1.1 steps 1-3 (reset, ACKNOWLEDGE, DRIVER); 0 after "error <name> reset-status=<dec>".
int vdev_begin(VirtioDev* dev);
// Step 4: the 64 feature bits the device offers.
u64 vdev_device_features(const VirtioDev* dev);
// Steps 4-6 after vdev_begin: writes `features` (kept in dev->features), sets FEATURES_OK
// and reads it back; 1 when the device kept it, else FAILED is set and 0 returned.
int vdev_accept_features(VirtioDev* dev, u64 features);
// Sets DRIVER_OK on top of what vdev_negotiate left.
void vdev_driver_ok(const VirtioDev* dev);
// Marks the device FAILED (after a queue could not be set up).
void vdev_fail(const VirtioDev* dev);

// The device-specific configuration (§4.1.4.6 / §4.2.2 offset 0x100), read and written with
// accesses of the field's own width (§4.1.3.1).
u64 vdev_config_address(const VirtioDev* dev, u32 offset);
u32 vdev_config8(const VirtioDev* dev, u32 offset);
u32 vdev_config16(const VirtioDev* dev, u32 offset);
u32 vdev_config32(const VirtioDev* dev, u32 offset);
// A 64-bit field as two 32-bit reads, low half first (§4.1.3.1, §4.2.2.2).
u64 vdev_config64(const VirtioDev* dev, u32 offset);
void vdev_config_write32(const VirtioDev* dev, u32 offset, u32 value);
// config_generation (§2.5.1, §4.1.4.3, §4.2.2): a driver re-reads the fields while it changes.
u32 vdev_config_generation(const VirtioDev* dev);

// Sets up and enables queue `index` with up to `wanted` entries (a power of two) in the
// memory `queue` points at. 0 after printing why when the queue does not exist, is already
// enabled ("error <name> queue=<n> in-use=<dec> size-max=<dec>", also when it is smaller than
// `min_size`) or its notification address is outside the capability.
int vdev_setup_queue(VirtioDev* dev, VdevQueue* queue, u16 index, u16 wanted, u16 min_size);
// vdev_setup_queue in two steps, for drivers that report a queue's limits their own way:
// selects queue `index` and reads its maximum size and enabled state (0 after "error <name>
// num-queues=<dec>" when a virtio-pci device has no such queue) ...
int vdev_query_queue(const VirtioDev* dev, u16 index, u32* size_max, u32* in_use);
// ... then, with that queue still selected, sizes it min(wanted, size_max) (rounded down to a
// power of two), gives it `queue`'s memory (avail.flags = NO_INTERRUPT) and enables it. 0 after
// "error <name> queue-notify-off=<dec>" when its notification address is outside the capability.
int vdev_enable_queue(const VirtioDev* dev, VdevQueue* queue, u16 index, u32 size_max, u16 wanted);
// Publishes `count` chains (heads[]) and notifies the device.
void vdev_post(const VirtioDev* dev, VdevQueue* queue, const u16* heads, u32 count);
// Polls the used ring at most dev->poll_limit times; 1 with the next element, else 0.
int vdev_wait_used(const VirtioDev* dev, VdevQueue* queue, u32* id, u32* length);
// The same without waiting: 1 when an element was ready.
int vdev_take_used(VdevQueue* queue, u32* id, u32* length);

// ---- drivers built on this --------------------------------------------------------------------

// balloon.c: virtio-balloon (§5.5), only with skiff.virtio=1 and skiff.balloon=<MiB> (README.md,
// "virtio-balloon"); acts on the first balloon device only.
void balloon_configure(const char* cmdline);
void balloon_mmio_drive(u64 base, u32 poll_limit);
void balloon_pci_drive(u32 slot, u32 poll_limit);

// vsock.c: virtio-vsock (§5.10), only with skiff.virtio=1 and skiff.vsock=<tests> (README.md,
// "virtio-vsock"); acts on the first socket device only.
void vsock_configure(const char* cmdline);
void vsock_mmio_drive(u64 base, u32 poll_limit);
void vsock_pci_drive(u32 slot, u32 poll_limit);
