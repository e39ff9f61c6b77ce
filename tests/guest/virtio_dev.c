// SPDX-License-Identifier: Apache-2.0
// The transport half of the test guest's polling virtio drivers (virtio_dev.h).
#include "virtio_dev.h"

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
  kMmioConfigGeneration = 0x0fc,
  kMmioConfig = 0x100,
  // ---- virtio-pci (§4.1.4)
  kCfgVendorDevice = 0x00,
  kCapCommon = 1,
  kCapNotify = 2,
  kCapDevice = 4,
  kCfgCommand = 0x04,
  kCommandMemory = 1 << 1,
  kCommandBusMaster = 1 << 2,
  kCommandIntxDisable = 1 << 10,  // the drivers poll
  kCommonCfgLength = 0x38,
  kCommonDeviceFeatureSelect = 0x00,  // struct virtio_pci_common_cfg (§4.1.4.3)
  kCommonDeviceFeature = 0x04,
  kCommonDriverFeatureSelect = 0x08,
  kCommonDriverFeature = 0x0c,
  kCommonNumQueues = 0x12,
  kCommonDeviceStatus = 0x14,
  kCommonConfigGeneration = 0x15,
  kCommonQueueSelect = 0x16,
  kCommonQueueSize = 0x18,
  kCommonQueueEnable = 0x1c,
  kCommonQueueNotifyOff = 0x1e,
  kCommonQueueDesc = 0x20,
  kCommonQueueDriver = 0x28,
  kCommonQueueDevice = 0x30,
  kResetPolls = 1000,
  kSerialLsrPort = 0x3fd,  // a harmless port read: the pause between used-ring polls
};

static void barrier(void) { __asm__ volatile("" : : : "memory"); }

static void vdev_error(const VirtioDev* dev, const char* what, u64 value) {
  line_begin();
  put_str("error ");
  put_str(dev->name);
  put_char(' ');
  put_str(what);
  put_char('=');
  put_dec(value);
  line_end();
}

// ---- opening --------------------------------------------------------------------------------

void vdev_open_mmio(VirtioDev* dev, const char* name, u64 base, u32 poll_limit) {
  memset(dev, 0, sizeof(*dev));
  dev->name = name;
  dev->base = base;
  dev->poll_limit = poll_limit;
}

int vdev_pci_find(u32 vendor_device) {
  for (u32 slot = 0; slot < kVdevPciSlots; ++slot) {
    if (pci_config_read32(slot, kCfgVendorDevice) == vendor_device) return (int)slot;
  }
  return -1;
}

int vdev_pci_has_regions(const VirtioPciCaps* caps) {
  return caps->regions[kCapCommon].present && caps->regions[kCapNotify].present &&
         caps->regions[kCapDevice].present;
}

int vdev_open_pci(VirtioDev* dev, const char* name, u32 slot, u64 relocation, u32 device_config_min,
                  u32 poll_limit) {
  VirtioPciCaps caps;
  virtio_pci_read_capabilities(slot, &caps);
  return vdev_open_pci_caps(dev, name, slot, &caps, relocation, device_config_min, poll_limit);
}

int vdev_open_pci_caps(VirtioDev* dev, const char* name, u32 slot, const VirtioPciCaps* caps, u64 relocation,
                       u32 device_config_min, u32 poll_limit) {
  memset(dev, 0, sizeof(*dev));
  dev->name = name;
  dev->is_pci = 1;
  dev->poll_limit = poll_limit;
  const VirtioPciRegion* common = &caps->regions[kCapCommon];
  const VirtioPciRegion* notify = &caps->regions[kCapNotify];
  const VirtioPciRegion* device = &caps->regions[kCapDevice];
  if (!vdev_pci_has_regions(caps)) {
    line_begin();
    put_str("error ");
    put_str(name);
    put_str(" missing-cap");
    if (!common->present) put_str(" common");
    if (!notify->present) put_str(" notify");
    if (!device->present) put_str(" device");
    line_end();
    return 0;
  }
  // Decode off while the BAR is sized and moved (PCI 3.0 §6.2.5.1).
  u32 command = pci_config_read16(slot, kCfgCommand);
  pci_config_write16(slot, kCfgCommand, (u16)(command & ~(u32)(kCommandMemory | kCommandBusMaster)));
  u64 bar_size = 0;
  u32 bar = common->bar;
  u64 base = virtio_pci_place_bar(slot, bar, relocation, name, &bar_size);
  if (base == 0) return 0;
  if (!virtio_pci_region_fits(name, "common", common->bar, common->offset, common->length, bar, bar_size,
                              kCommonCfgLength) ||
      !virtio_pci_region_fits(name, "notify", notify->bar, notify->offset, notify->length, bar, bar_size, 2) ||
      !virtio_pci_region_fits(name, "device", device->bar, device->offset, device->length, bar, bar_size,
                              device_config_min)) {
    return 0;
  }
  pci_config_write16(slot, kCfgCommand, (u16)(command | kCommandMemory | kCommandBusMaster | kCommandIntxDisable));
  dev->common = base + common->offset;
  dev->device_config = base + device->offset;
  dev->notify = base + notify->offset;
  dev->notify_length = notify->length;
  dev->notify_multiplier = caps->notify_multiplier;
  return 1;
}

// ---- status and features --------------------------------------------------------------------

u32 vdev_status(const VirtioDev* dev) {
  return dev->is_pci ? read8(dev->common + kCommonDeviceStatus) : mmio_read32(dev->base + kMmioStatus);
}

void vdev_set_status(const VirtioDev* dev, u32 status) {
  if (dev->is_pci) {
    mmio_write8(dev->common + kCommonDeviceStatus, (u8)status);
  } else {
    mmio_write32(dev->base + kMmioStatus, status);
  }
}

u32 vdev_reset(const VirtioDev* dev) {
  vdev_set_status(dev, 0);
  u32 status = vdev_status(dev);
  for (u32 i = 0; i < kResetPolls && status != 0; ++i) status = vdev_status(dev);
  return status;
}

static u32 read_feature_word(const VirtioDev* dev, u32 select) {
  if (dev->is_pci) {
    mmio_write32(dev->common + kCommonDeviceFeatureSelect, select);
    return mmio_read32(dev->common + kCommonDeviceFeature);
  }
  mmio_write32(dev->base + kMmioDeviceFeaturesSel, select);
  return mmio_read32(dev->base + kMmioDeviceFeatures);
}

static void write_feature_word(const VirtioDev* dev, u32 select, u32 value) {
  if (dev->is_pci) {
    mmio_write32(dev->common + kCommonDriverFeatureSelect, select);
    mmio_write32(dev->common + kCommonDriverFeature, value);
  } else {
    mmio_write32(dev->base + kMmioDriverFeaturesSel, select);
    mmio_write32(dev->base + kMmioDriverFeatures, value);
  }
}

int vdev_begin(VirtioDev* dev) {
  u32 status = vdev_reset(dev);
  if (status != 0) {
    vdev_error(dev, "reset-status", status);
    return 0;
  }
  vdev_set_status(dev, kVdevStatusAcknowledge);
  vdev_set_status(dev, kVdevStatusAcknowledge | kVdevStatusDriver);
  return 1;
}

u64 vdev_device_features(const VirtioDev* dev) {
  return read_feature_word(dev, 0) | (u64)read_feature_word(dev, 1) << 32;
}

int vdev_accept_features(VirtioDev* dev, u64 features) {
  // What vdev_begin left: ACKNOWLEDGE | DRIVER.
  u32 status = kVdevStatusAcknowledge | kVdevStatusDriver;
  dev->features = features;
  write_feature_word(dev, 0, (u32)features);
  write_feature_word(dev, 1, (u32)(features >> 32));
  vdev_set_status(dev, status | kVdevStatusFeaturesOk);
  // §3.1.1 step 6: the device clears FEATURES_OK when it cannot work with this subset.
  if (!(vdev_status(dev) & kVdevStatusFeaturesOk)) {
    vdev_set_status(dev, status | kVdevStatusFailed);
    return 0;
  }
  return 1;
}

int vdev_negotiate(VirtioDev* dev, u64 wanted, u64* offered) {
  *offered = 0;
  if (!vdev_begin(dev)) return 0;
  *offered = vdev_device_features(dev);
  return vdev_accept_features(dev, *offered & wanted);
}

void vdev_driver_ok(const VirtioDev* dev) { vdev_set_status(dev, vdev_status(dev) | kVdevStatusDriverOk); }

void vdev_fail(const VirtioDev* dev) { vdev_set_status(dev, vdev_status(dev) | kVdevStatusFailed); }

// ---- configuration --------------------------------------------------------------------------

u64 vdev_config_address(const VirtioDev* dev, u32 offset) {
  return (dev->is_pci ? dev->device_config : dev->base + kMmioConfig) + offset;
}

u32 vdev_config8(const VirtioDev* dev, u32 offset) { return read8(vdev_config_address(dev, offset)); }

u32 vdev_config16(const VirtioDev* dev, u32 offset) { return read16(vdev_config_address(dev, offset)); }

u32 vdev_config32(const VirtioDev* dev, u32 offset) { return mmio_read32(vdev_config_address(dev, offset)); }

u64 vdev_config64(const VirtioDev* dev, u32 offset) {
  u64 low = vdev_config32(dev, offset);
  return low | (u64)vdev_config32(dev, offset + 4) << 32;
}

u32 vdev_config_generation(const VirtioDev* dev) {
  return dev->is_pci ? read8(dev->common + kCommonConfigGeneration)
                     : mmio_read32(dev->base + kMmioConfigGeneration);
}

void vdev_config_write32(const VirtioDev* dev, u32 offset, u32 value) {
  mmio_write32(vdev_config_address(dev, offset), value);
}

// ---- queues ---------------------------------------------------------------------------------

static void set_queue_address(const VirtioDev* dev, u32 offset, u64 address) {
  u64 at = dev->is_pci ? dev->common + offset : dev->base + offset;
  mmio_write32(at, (u32)address);
  mmio_write32(at + 4, (u32)(address >> 32));
}

int vdev_query_queue(const VirtioDev* dev, u16 index, u32* size_max, u32* in_use) {
  if (dev->is_pci) {
    u32 queues = read16(dev->common + kCommonNumQueues);
    if (queues <= index) {
      vdev_error(dev, "num-queues", queues);
      return 0;
    }
    mmio_write16(dev->common + kCommonQueueSelect, index);
    *size_max = read16(dev->common + kCommonQueueSize);
    *in_use = read16(dev->common + kCommonQueueEnable);
  } else {
    mmio_write32(dev->base + kMmioQueueSel, index);
    *size_max = mmio_read32(dev->base + kMmioQueueNumMax);
    *in_use = mmio_read32(dev->base + kMmioQueueReady);
  }
  return 1;
}

int vdev_enable_queue(const VirtioDev* dev, VdevQueue* queue, u16 index, u32 size_max, u16 wanted) {
  u32 size = wanted;
  while (size > size_max) size >>= 1;  // split queues: powers of two (§2.7)
  // §2.7.7: the driver polls; no interrupt wanted.
  ((volatile VdevAvail*)phys_addr(queue->avail))->flags = kVdevAvailNoInterrupt;
  if (dev->is_pci) {
    mmio_write16(dev->common + kCommonQueueSize, (u16)size);
    set_queue_address(dev, kCommonQueueDesc, (u64)(usize)queue->desc);
    set_queue_address(dev, kCommonQueueDriver, queue->avail);
    set_queue_address(dev, kCommonQueueDevice, queue->used);
    // §4.1.4.4: the queue's notification address, inside the notify capability.
    u32 notify_off = read16(dev->common + kCommonQueueNotifyOff);
    u64 offset = (u64)notify_off * dev->notify_multiplier;
    if (offset + 2 > dev->notify_length) {
      vdev_error(dev, "queue-notify-off", notify_off);
      return 0;
    }
    queue->notify = dev->notify + offset;
    mmio_write16(dev->common + kCommonQueueEnable, 1);
  } else {
    mmio_write32(dev->base + kMmioQueueNum, size);
    set_queue_address(dev, kMmioQueueDescLow, (u64)(usize)queue->desc);
    set_queue_address(dev, kMmioQueueDriverLow, queue->avail);
    set_queue_address(dev, kMmioQueueDeviceLow, queue->used);
    mmio_write32(dev->base + kMmioQueueReady, 1);
  }
  queue->index = index;
  queue->size = (u16)size;
  queue->next_avail = 0;
  queue->last_used = 0;
  return 1;
}

int vdev_setup_queue(VirtioDev* dev, VdevQueue* queue, u16 index, u16 wanted, u16 min_size) {
  u32 size_max = 0;
  u32 in_use = 0;
  if (!vdev_query_queue(dev, index, &size_max, &in_use)) return 0;
  if (in_use != 0 || size_max < min_size || size_max == 0) {
    line_begin();
    put_str("error ");
    put_str(dev->name);
    put_str(" queue=");
    put_dec(index);
    put_str(" in-use=");
    put_dec(in_use);
    put_str(" size-max=");
    put_dec(size_max);
    line_end();
    return 0;
  }
  return vdev_enable_queue(dev, queue, index, size_max, wanted);
}

void vdev_post(const VirtioDev* dev, VdevQueue* queue, const u16* heads, u32 count) {
  volatile VdevAvail* avail = (volatile VdevAvail*)phys_addr(queue->avail);
  u16 next = queue->next_avail;
  for (u32 i = 0; i < count; ++i) avail->ring[(u16)(next + i) % queue->size] = heads[i];
  // §2.7.13: descriptors and ring entries before the index that publishes them; x86 keeps
  // stores in order, only the compiler must not move them.
  barrier();
  avail->idx = (u16)(next + count);
  barrier();
  queue->next_avail = (u16)(next + count);
  if (dev->is_pci) {
    mmio_write16(queue->notify, queue->index);  // §4.1.5.2
  } else {
    mmio_write32(dev->base + kMmioQueueNotify, queue->index);
  }
}

int vdev_take_used(VdevQueue* queue, u32* id, u32* length) {
  volatile VdevUsed* used = (volatile VdevUsed*)phys_addr(queue->used);
  if (used->idx == queue->last_used) return 0;
  barrier();  // the element after the index that published it
  volatile VdevUsedElement* element = &used->ring[queue->last_used % queue->size];
  *id = element->id;
  *length = element->len;
  ++queue->last_used;
  return 1;
}

int vdev_wait_used(const VirtioDev* dev, VdevQueue* queue, u32* id, u32* length) {
  for (u32 poll = 0; poll < dev->poll_limit; ++poll) {
    if (vdev_take_used(queue, id, length)) return 1;
    (void)inb(kSerialLsrPort);
  }
  return 0;
}
