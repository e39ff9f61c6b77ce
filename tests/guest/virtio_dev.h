// SPDX-License-Identifier: Apache-2.0
// One virtio device as a polling driver sees it, over either transport: virtio-mmio (§4.2)
// or modern virtio-pci (§4.1). Device drivers of the test guest (balloon.c, ...) open the
// device here and then speak in terms of status, features, configuration fields and queues,
// whatever the transport. Interrupts stay off: every driver polls its used rings.
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
#define kVdevMaxQueues 8u

typedef struct {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
} VdevDesc;

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
  u64 notify;           // virtio-pci: the queue's notification address
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
// Opens the virtio-pci function at `slot` of bus 0: reads its capabilities, places the BAR
// holding them (moving it to `relocation` when the VMM put it above 4 GiB) and turns on
// memory decode and bus mastering with INTx off. 0 after printing "error <name> ..." when a
// capability is missing or does not fit, or the device configuration is shorter than
// `device_config_min`.
int vdev_open_pci(VirtioDev* dev, const char* name, u32 slot, u64 relocation, u32 device_config_min,
                  u32 poll_limit);

u32 vdev_status(const VirtioDev* dev);
void vdev_set_status(const VirtioDev* dev, u32 status);
// §2.4.2: writes 0 and polls until the status reads back as 0; returns the last status read.
u32 vdev_reset(const VirtioDev* dev);
// §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, features offered & wanted, FEATURES_OK.
// Stores the offered set in *offered. 1 when the device kept FEATURES_OK; otherwise FAILED
// is set and 0 returned (nothing printed: the caller reports the features).
int vdev_negotiate(VirtioDev* dev, u64 wanted, u64* offered);
// Sets DRIVER_OK on top of what vdev_negotiate left.
void vdev_driver_ok(const VirtioDev* dev);
// Marks the device FAILED (after a queue could not be set up).
void vdev_fail(const VirtioDev* dev);

// The device-specific configuration (§4.1.4.6 / §4.2.2 offset 0x100), read and written with
// accesses of the field's own width (§4.1.3.1).
u64 vdev_config_address(const VirtioDev* dev, u32 offset);
u32 vdev_config32(const VirtioDev* dev, u32 offset);
void vdev_config_write32(const VirtioDev* dev, u32 offset, u32 value);

// Sets up and enables queue `index` with up to `wanted` entries (a power of two) in the
// memory `queue` points at. 0 after printing why when the queue does not exist, is already
// enabled, is smaller than `min_size` or its notification address is outside the capability.
int vdev_setup_queue(VirtioDev* dev, VdevQueue* queue, u16 index, u16 wanted, u16 min_size);
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
