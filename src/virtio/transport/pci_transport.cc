// SPDX-License-Identifier: Apache-2.0
#include "virtio/transport/pci_transport.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {
namespace {

// The width of the common configuration field starting at `offset` (§4.1.4.3), or 0.
unsigned common_field_width(uint64_t offset) {
  switch (offset) {
    case kCommonDeviceFeatureSelect:
    case kCommonDeviceFeature:
    case kCommonDriverFeatureSelect:
    case kCommonDriverFeature:
      return 4;
    case kCommonConfigMsixVector:
    case kCommonNumQueues:
    case kCommonQueueSelect:
    case kCommonQueueSize:
    case kCommonQueueMsixVector:
    case kCommonQueueEnable:
    case kCommonQueueNotifyOff:
      return 2;
    case kCommonDeviceStatus:
    case kCommonConfigGeneration:
      return 1;
    case kCommonQueueDesc:
    case kCommonQueueDriver:
    case kCommonQueueDevice:
      return 8;
    default:
      return 0;
  }
}

// Which field an access of `size` bytes at `offset` addresses, following §4.1.3.1: each
// field with its natural width, and 64-bit fields also as independent 32-bit halves.
struct FieldAccess {
  uint64_t field = 0;
  bool high_half = false;  // the upper 32 bits of a 64-bit field
};

std::optional<FieldAccess> common_field_access(uint64_t offset, size_t size) {
  if (size == 4 && offset >= 4 && common_field_width(offset - 4) == 8) {
    return FieldAccess{offset - 4, true};
  }
  const unsigned width = common_field_width(offset);
  if (width == 0) return std::nullopt;
  if (width == size || (width == 8 && size == 4)) return FieldAccess{offset, false};
  return std::nullopt;
}

uint64_t load_le(std::span<const uint8_t> data) {
  uint64_t value = 0;
  for (size_t i = 0; i < data.size() && i < 8; ++i) value |= uint64_t{data[i]} << (8 * i);
  return value;
}

void store_le(uint64_t value, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size() && i < 8; ++i) {
    data[i] = static_cast<uint8_t>(value >> (8 * i));
  }
}

bool inside(uint64_t offset, size_t size, uint64_t start, uint64_t length) {
  return offset >= start && size <= length && offset - start <= length - size;
}

// The body of a struct virtio_pci_cap after cap_vndr and cap_next (§4.1.4), plus `extra`
// (notify_off_multiplier or pci_cfg_data) when given.
std::vector<uint8_t> virtio_cap_body(uint8_t cfg_type, uint32_t offset, uint32_t length,
                                     std::optional<uint32_t> extra) {
  const uint8_t cap_len = extra ? kVirtioPciNotifyCapLength : kVirtioPciCapLength;
  std::vector<uint8_t> body(cap_len - 2, 0);
  body[0] = cap_len;  // capability offset 2
  body[kVirtioPciCapCfgType - 2] = cfg_type;
  body[kVirtioPciCapBar - 2] = kVirtioPciBar;
  // id (offset 5) and padding stay 0: one structure of each type.
  store_le(offset, std::span(body).subspan(kVirtioPciCapOffset - 2, 4));
  store_le(length, std::span(body).subspan(kVirtioPciCapLengthField - 2, 4));
  if (extra) store_le(*extra, std::span(body).subspan(kVirtioPciCapExtra - 2, 4));
  return body;
}

}  // namespace

uint16_t virtio_pci_device_id(uint32_t device_type) {
  return static_cast<uint16_t>(kVirtioPciModernDeviceIdBase + device_type);
}

uint32_t virtio_pci_class_code(uint32_t device_type) {
  switch (device_type) {
    case kDeviceIdNet: return kPciClassNetworkEthernet;
    case kDeviceIdBlock: return kPciClassStorageOther;
    case kDeviceIdConsole: return kPciClassCommunicationOther;
    default: return kPciClassUnassigned;
  }
}

Result<std::shared_ptr<VirtioPciTransport>> VirtioPciTransport::create(
    std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
    std::shared_ptr<NotifyRegistrar> registrar, pci::MsiDeliver deliver,
    std::shared_ptr<IrqLine> intx, std::string label) {
  if (!device) return internal_error(fmt::format("{}: virtio-pci: no device", label));
  const size_t queues = device->queue_max_sizes().size();
  if (queues == 0 || queues > kVirtioPciMaxQueues) {
    return internal_error(fmt::format("{}: virtio-pci: {} queues, the notify area holds 1-{}",
                                      label, queues, kVirtioPciMaxQueues));
  }
  if (device->config_size() > kVirtioPciDeviceMaxLength) {
    return internal_error(fmt::format(
        "{}: virtio-pci: device configuration of {} bytes, the BAR region holds {}", label,
        device->config_size(), kVirtioPciDeviceMaxLength));
  }
  auto transport = std::shared_ptr<VirtioPciTransport>(new VirtioPciTransport(
      std::move(device), memory, std::move(registrar), std::move(intx), std::move(label)));
  if (auto built = transport->build_config_space(std::move(deliver)); !built) {
    return std::unexpected(built.error());
  }
  return transport;
}

VirtioPciTransport::VirtioPciTransport(std::shared_ptr<VirtioDevice> device,
                                       const GuestMemory& memory,
                                       std::shared_ptr<NotifyRegistrar> registrar,
                                       std::shared_ptr<IrqLine> intx, std::string label)
    : VirtioTransport(std::move(device), memory, std::move(registrar), std::move(label)),
      intx_(std::move(intx)),
      device_config_size_(this->device()->config_size()),
      config_(pci::ConfigHeader{
          .vendor_id = kVirtioPciVendorId,
          .device_id = virtio_pci_device_id(this->device()->device_type()),
          .subsystem_vendor_id = kVirtioPciVendorId,
          .subsystem_id = virtio_pci_device_id(this->device()->device_type()),
          .revision = kVirtioPciRevision,
          .class_code = virtio_pci_class_code(this->device()->device_type()),
          .interrupt_pin = static_cast<uint8_t>(intx_ ? 1 : 0),  // INTA#
      }) {
  queue_vectors_ = std::make_unique<std::atomic<uint16_t>[]>(queue_count());
  for (size_t i = 0; i < queue_count(); ++i) queue_vectors_[i].store(kVirtioMsiNoVector);
}

Result<void> VirtioPciTransport::build_config_space(pci::MsiDeliver deliver) {
  const auto fail = [&](const Error& e) {
    return internal_error(fmt::format("{}: virtio-pci config space: {}", label(), e.message()));
  };
  if (auto r = config_.add_bar(pci::BarInfo{.index = kVirtioPciBar,
                                            .size = kVirtioPciBarSize,
                                            .kind = pci::BarKind::kMemory64,
                                            .prefetchable = false});
      !r) {
    return fail(r.error());
  }
  const auto add = [&](std::vector<uint8_t> body, std::span<const uint8_t> writable = {})
      -> Result<uint8_t> {
    return config_.add_capability(pci::kCapabilityIdVendorSpecific, body, writable);
  };
  const auto notify_length =
      static_cast<uint32_t>(queue_count() * kVirtioPciNotifyOffMultiplier);
  std::vector<std::vector<uint8_t>> bodies;
  bodies.push_back(virtio_cap_body(kVirtioPciCapCommonCfg, kVirtioPciCommonOffset,
                                   kVirtioPciCommonLength, std::nullopt));
  bodies.push_back(virtio_cap_body(kVirtioPciCapNotifyCfg, kVirtioPciNotifyOffset, notify_length,
                                   kVirtioPciNotifyOffMultiplier));
  bodies.push_back(virtio_cap_body(kVirtioPciCapIsrCfg, kVirtioPciIsrOffset, kVirtioPciIsrLength,
                                   std::nullopt));
  if (device_config_size_ != 0) {
    bodies.push_back(virtio_cap_body(kVirtioPciCapDeviceCfg, kVirtioPciDeviceOffset,
                                     device_config_size_, std::nullopt));
  }
  for (auto& body : bodies) {
    if (auto r = add(std::move(body)); !r) return fail(r.error());
  }

  // §4.1.4.8: cap.bar, cap.offset, cap.length and pci_cfg_data are read-write for the
  // driver; the rest of the structure is read-only. The window starts closed (length 0).
  std::vector<uint8_t> cfg_body = virtio_cap_body(kVirtioPciCapPciCfg, 0, 0, 0);
  std::vector<uint8_t> cfg_writable(cfg_body.size(), 0);
  cfg_writable[kVirtioPciCapBar - 2] = 0xff;
  for (int i = 0; i < 4; ++i) {
    cfg_writable[kVirtioPciCapOffset - 2 + i] = 0xff;
    cfg_writable[kVirtioPciCapLengthField - 2 + i] = 0xff;
    cfg_writable[kVirtioPciCapExtra - 2 + i] = 0xff;
  }
  auto cfg_offset = add(std::move(cfg_body), cfg_writable);
  if (!cfg_offset) return fail(cfg_offset.error());
  pci_cfg_cap_offset_ = *cfg_offset;

  const auto vectors = static_cast<uint16_t>(
      std::min<size_t>(queue_count() + 1, kVirtioPciMaxVectors));
  auto table = pci::MsixTable::create(
      pci::MsixLayout{.vectors = vectors,
                      .table_bar = kVirtioPciBar,
                      .table_offset = static_cast<uint32_t>(kVirtioPciMsixTableOffset),
                      .pba_bar = kVirtioPciBar,
                      .pba_offset = static_cast<uint32_t>(kVirtioPciMsixPbaOffset)},
      std::move(deliver));
  if (!table) return fail(table.error());
  msix_ = *table;
  if (auto r = config_.add_msix_capability(msix_); !r) return fail(r.error());
  intx_allowed_.store(config_.intx_allowed());
  return {};
}

uint8_t VirtioPciTransport::interrupt_status() const {
  std::lock_guard lock(interrupt_mutex_);
  return isr_;
}

// ---- Configuration space ------------------------------------------------------------------------

bool VirtioPciTransport::touches_pci_cfg_data(uint16_t offset, uint8_t size) const {
  const uint16_t data = pci_cfg_cap_offset_ + kVirtioPciCapExtra;
  return offset < data + 4 && data < offset + size;
}

uint32_t VirtioPciTransport::config_read(uint16_t offset, uint8_t size) {
  std::lock_guard lock(mutex());
  if (touches_pci_cfg_data(offset, size)) pci_cfg_window_locked(/*is_write=*/false);
  uint32_t value = config_.read(offset, size);
  // §4.1.4.5.1: with MSI-X disabled, the Status register's Interrupt Status bit is the OR
  // of the ISR bits. Computed here because the ISR changes on device threads.
  if (offset <= pci::kRegStatus && pci::kRegStatus < offset + size && size <= 4) {
    const unsigned shift = 8 * (pci::kRegStatus - offset);
    bool pending = false;
    {
      std::lock_guard interrupt_lock(interrupt_mutex_);
      pending = isr_ != 0 && !msix_->enabled();
    }
    value &= ~(uint32_t{pci::kStatusInterrupt} << shift);
    if (pending) value |= uint32_t{pci::kStatusInterrupt} << shift;
  }
  return value;
}

void VirtioPciTransport::config_write(uint16_t offset, uint8_t size, uint32_t value) {
  std::lock_guard lock(mutex());
  config_.write(offset, size, value);
  if (touches_pci_cfg_data(offset, size)) pci_cfg_window_locked(/*is_write=*/true);
  // The Command register's Interrupt Disable and the MSI-X Enable bit decide whether INTx
  // may be asserted.
  refresh_intx_allowed();
}

void VirtioPciTransport::pci_cfg_window_locked(bool is_write) {
  const uint16_t cap = pci_cfg_cap_offset_;
  const uint32_t bar = config_.read(cap + kVirtioPciCapBar, 1);
  const uint32_t offset = config_.read(cap + kVirtioPciCapOffset, 4);
  const uint32_t length = config_.read(cap + kVirtioPciCapLengthField, 4);
  // §4.1.4.8.2: the driver sets a length of 1, 2 or 4, an offset that is a multiple of it,
  // and a range inside a BAR region of another virtio capability. Anything else is dropped.
  if (bar != kVirtioPciBar || (length != 1 && length != 2 && length != 4) || offset % length != 0 ||
      !inside(offset, length, 0, kVirtioPciBarSize)) {
    guest_log().warn("{}: PCI_CFG window {} of BAR {} offset {:#x} length {} ignored", label(),
                     is_write ? "write" : "read", bar, offset, length);
    return;
  }
  const uint16_t data_offset = cap + kVirtioPciCapExtra;
  std::array<uint8_t, 4> bytes{};
  if (is_write) {
    store_le(config_.read(data_offset, 4), bytes);
    bar_access(offset, {}, std::span<const uint8_t>(bytes.data(), length), /*locked=*/true);
  } else {
    bar_access(offset, std::span<uint8_t>(bytes.data(), length), {}, /*locked=*/true);
    config_.write_raw(data_offset, bytes);
  }
}

std::vector<pci::BarInfo> VirtioPciTransport::bars() const {
  std::lock_guard lock(mutex());
  return config_.bars();
}

std::optional<uint64_t> VirtioPciTransport::bar_address(uint8_t index) const {
  std::lock_guard lock(mutex());
  return config_.bar_address(index);
}

Result<void> VirtioPciTransport::set_bar_address(uint8_t index, uint64_t address) {
  std::lock_guard lock(mutex());
  return config_.set_bar_address(index, address);
}

void VirtioPciTransport::bar_moved(uint8_t index, std::optional<uint64_t> old_address,
                                   std::optional<uint64_t> new_address) {
  // The core registered the ioeventfds where notify_address_locked() said; it asks again.
  (void)old_address;
  (void)new_address;
  if (index != kVirtioPciBar) return;
  std::lock_guard lock(mutex());
  if (has_notifications_locked()) refresh_notifications_locked();
}

// ---- BAR 0 --------------------------------------------------------------------------------------

void VirtioPciTransport::bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (index != kVirtioPciBar || !inside(offset, data.size(), 0, kVirtioPciBarSize)) return;
  bar_access(offset, data, {}, /*locked=*/false);
}

void VirtioPciTransport::bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) {
  if (index != kVirtioPciBar || !inside(offset, data.size(), 0, kVirtioPciBarSize)) return;
  bar_access(offset, {}, data, /*locked=*/false);
}

void VirtioPciTransport::bar_access(uint64_t offset, std::span<uint8_t> read,
                                    std::span<const uint8_t> write, bool locked) {
  const bool is_read = !read.empty();
  const size_t size = is_read ? read.size() : write.size();
  if (is_read) std::memset(read.data(), 0, read.size());
  if (is_read ? msix_->bar_read(kVirtioPciBar, offset, read)
              : msix_->bar_write(kVirtioPciBar, offset, write)) {
    return;
  }
  if (inside(offset, size, kVirtioPciCommonOffset, kVirtioPciCommonLength)) {
    std::unique_lock<std::mutex> lock;
    if (!locked) lock = std::unique_lock(mutex());
    if (is_read) {
      common_read_locked(offset - kVirtioPciCommonOffset, read);
    } else {
      common_write_locked(offset - kVirtioPciCommonOffset, write);
    }
    return;
  }
  if (offset == kVirtioPciIsrOffset) {
    // §4.1.4.5: reading the ISR resets it to 0 and deasserts INTx. Writes have no effect.
    if (is_read) read[0] = read_isr_and_clear();
    return;
  }
  if (inside(offset, size, kVirtioPciDeviceOffset, kVirtioPciDeviceMaxLength)) {
    // Any width: the device knows its own fields, and read_config() reads bytes beyond
    // config_size() as 0.
    if (is_read) {
      device()->read_config(offset - kVirtioPciDeviceOffset, read);
    } else {
      device()->write_config(offset - kVirtioPciDeviceOffset, write);
    }
    return;
  }
  if (inside(offset, size, kVirtioPciNotifyOffset, kVirtioPciNotifyMaxLength)) {
    if (!is_read) {
      // §4.1.4.4: queue i's notification address is queue_notify_off * notify_off_multiplier.
      const uint64_t notify = offset - kVirtioPciNotifyOffset;
      if (notify % kVirtioPciNotifyOffMultiplier != 0) {
        guest_log().warn("{}: {}-byte notify write at notify offset {:#x} matches no queue", label(), size, notify);
      } else {
        notify_from_register(notify / kVirtioPciNotifyOffMultiplier);
      }
    }
    return;  // the notify area reads as 0
  }
  if (!is_read) {
    guest_log().warn("{}: {}-byte write at BAR offset {:#x} outside every structure ignored",
                     label(), size, offset);
  }
}

// ---- Common configuration (§4.1.4.3) -----------------------------------------------------------

void VirtioPciTransport::common_read_locked(uint64_t offset, std::span<uint8_t> data) {
  apply_deferred_needs_reset_locked();
  auto access = common_field_access(offset, data.size());
  if (!access) {
    // §4.1.3.1: each field with its natural width; the device ignores other accesses.
    guest_log().warn("{}: {}-byte read at common config offset {:#x} ignored", label(),
                     data.size(), offset);
    return;
  }
  Queue* queue = selected_queue_locked();
  uint64_t value = 0;
  switch (access->field) {
    case kCommonDeviceFeatureSelect: value = status_locked().device_features_select(); break;
    case kCommonDeviceFeature: value = status_locked().device_features_word(); break;
    case kCommonDriverFeatureSelect: value = status_locked().driver_features_select(); break;
    case kCommonDriverFeature: value = status_locked().driver_features_word(); break;
    case kCommonConfigMsixVector: value = config_vector_.load(); break;
    case kCommonNumQueues: value = queue_count(); break;
    case kCommonDeviceStatus: value = status_locked().status(); break;
    case kCommonConfigGeneration: value = config_generation() & 0xff; break;
    case kCommonQueueSelect: value = queue_select_locked(); break;
    // §4.1.4.3: queue_size 0 means the selected queue is unavailable.
    case kCommonQueueSize: value = queue ? queue->size() : 0; break;
    case kCommonQueueMsixVector:
      value = queue ? queue_vectors_[queue_select_locked()].load() : kVirtioMsiNoVector;
      break;
    case kCommonQueueEnable: value = queue && queue->ready() ? 1 : 0; break;
    case kCommonQueueNotifyOff: value = queue ? queue_select_locked() : 0; break;
    case kCommonQueueDesc: value = queue ? queue->desc_table_address() : 0; break;
    case kCommonQueueDriver: value = queue ? queue->avail_ring_address() : 0; break;
    case kCommonQueueDevice: value = queue ? queue->used_ring_address() : 0; break;
    default: break;
  }
  if (access->high_half) value >>= 32;
  store_le(value, data);
}

void VirtioPciTransport::common_write_locked(uint64_t offset, std::span<const uint8_t> data) {
  apply_deferred_needs_reset_locked();
  auto access = common_field_access(offset, data.size());
  if (!access) {
    guest_log().warn("{}: {}-byte write at common config offset {:#x} ignored", label(),
                     data.size(), offset);
    return;
  }
  const uint64_t value = load_le(data);
  Queue* queue = selected_queue_locked();
  // §4.1.4.3.2: the driver configures a queue before enabling it; once enabled its size and
  // ring addresses stay as they were activated.
  auto queue_writable = [&](const char* what) { return queue_writable_locked(what); };
  // 64-bit fields: the whole field, or one 32-bit half (§4.1.3.1).
  auto merge = [&](uint64_t old) -> uint64_t {
    if (data.size() == 8) return value;
    if (access->high_half) return (old & 0xffffffffull) | (value << 32);
    return (old & 0xffffffff00000000ull) | value;
  };
  // §4.1.5.1.2: a vector the table does not have is a mapping failure, reported by reading
  // back NO_VECTOR.
  auto checked_vector = [&](uint64_t vector) -> uint16_t {
    if (vector == kVirtioMsiNoVector || vector < msix_->vectors()) {
      return static_cast<uint16_t>(vector);
    }
    guest_log().warn("{}: MSI-X vector {} beyond the table's {} refused", label(), vector,
                     msix_->vectors());
    return kVirtioMsiNoVector;
  };
  switch (access->field) {
    case kCommonDeviceFeatureSelect:
      status_locked().set_device_features_select(static_cast<uint32_t>(value));
      return;
    case kCommonDriverFeatureSelect:
      status_locked().set_driver_features_select(static_cast<uint32_t>(value));
      return;
    case kCommonDriverFeature:
      if (!status_locked().write_driver_features_word(static_cast<uint32_t>(value))) {
        guest_log().warn("{}: driver_feature write after FEATURES_OK (or select {}) ignored",
                         label(), status_locked().driver_features_select());
      }
      return;
    case kCommonConfigMsixVector:
      config_vector_.store(checked_vector(value));
      return;
    case kCommonDeviceStatus:
      write_status_locked(static_cast<uint8_t>(value));
      return;
    case kCommonQueueSelect:
      set_queue_select_locked(static_cast<uint16_t>(value));
      return;
    case kCommonQueueSize:
      if (queue_writable("queue_size")) {
        if (value == 0 || value > queue->max_size()) {
          guest_log().warn("{}: queue {} size {} outside 1-{} ignored", label(), queue_select_locked(),
                           value, queue->max_size());
          return;
        }
        queue->set_size(static_cast<uint16_t>(value));
      }
      return;
    case kCommonQueueMsixVector:
      // Not frozen by queue_enable: Linux unmaps a queue's vector (writes NO_VECTOR) while
      // tearing it down, before the reset.
      if (!queue) {
        guest_log().warn("{}: queue_msix_vector write for queue {} that does not exist", label(),
                         queue_select_locked());
        return;
      }
      queue_vectors_[queue_select_locked()].store(checked_vector(value));
      return;
    case kCommonQueueEnable:
      if (!queue) return;
      // §4.1.4.3.2: "The driver MUST NOT write a 0 to queue_enable" (a reset disables).
      if (value != 1) {
        guest_log().warn("{}: queue_enable write of {} to queue {} ignored", label(), value,
                         queue_select_locked());
        return;
      }
      queue->set_ready(true);
      return;
    case kCommonQueueDesc:
      if (queue_writable("queue_desc")) {
        queue->set_desc_table_address(merge(queue->desc_table_address()));
      }
      return;
    case kCommonQueueDriver:
      if (queue_writable("queue_driver")) {
        queue->set_avail_ring_address(merge(queue->avail_ring_address()));
      }
      return;
    case kCommonQueueDevice:
      if (queue_writable("queue_device")) {
        queue->set_used_ring_address(merge(queue->used_ring_address()));
      }
      return;
    default:
      // device_feature, num_queues, config_generation, queue_notify_off (§4.1.4.3.2: the
      // driver MUST NOT write them).
      guest_log().warn("{}: write of {:#x} to read-only common config field {:#x} ignored",
                       label(), value, access->field);
      return;
  }
}

// ---- Transport core hooks -----------------------------------------------------------------

std::optional<NotifyAddress> VirtioPciTransport::notify_address_locked(uint16_t queue) const {
  // Only while BAR 0 decodes. Length 0: any write width matches (a 16-bit write per
  // §4.1.5.2); no datamatch, the address alone names the queue.
  const std::optional<uint64_t> bar = config_.bar_address(kVirtioPciBar);
  if (!bar) return std::nullopt;
  return NotifyAddress{.address = *bar + kVirtioPciNotifyOffset + uint64_t{queue} * kVirtioPciNotifyOffMultiplier,
                       .length = 0,
                       .datamatch = std::nullopt};
}

void VirtioPciTransport::reset_transport_locked() {
  // §4.1.5.1.2: "The device MUST have all queues and configuration change events unmapped
  // upon reset." The MSI-X table itself belongs to the PCI function and stays.
  config_vector_.store(kVirtioMsiNoVector);
  for (size_t i = 0; i < queue_count(); ++i) queue_vectors_[i].store(kVirtioMsiNoVector);
  std::lock_guard interrupt_lock(interrupt_mutex_);
  isr_ = 0;
  update_intx_locked_interrupt();
}

void VirtioPciTransport::save_transport_locked(state::StateBlob& blob) const {
  auto msix = msix_->save_state();
  std::vector<uint64_t> vectors;
  for (size_t i = 0; i < queue_count(); ++i) vectors.push_back(queue_vectors_[i].load());
  blob.put_blob("config_space", config_.save_state())
      .put_blob("msix", *msix)
      .put("config_vector", config_vector_.load())
      .put_u64s("queue_vectors", vectors)
      .put("isr", interrupt_status());
}

Result<void> VirtioPciTransport::restore_transport_locked(const state::StateBlob& blob) {
  auto config = blob.blob("config_space");
  if (!config) return std::unexpected(config.error());
  auto msix = blob.blob("msix");
  if (!msix) return std::unexpected(msix.error());
  auto config_vector = blob.get<uint16_t>("config_vector");
  if (!config_vector) return std::unexpected(config_vector.error());
  auto vectors = blob.u64s("queue_vectors", queue_count(), 0xffff);
  if (!vectors) return std::unexpected(vectors.error());
  auto isr = blob.get<uint8_t>("isr", kInterruptUsedBuffer | kInterruptConfigChange);
  if (!isr) return std::unexpected(isr.error());
  if (vectors->size() != queue_count()) {
    return config_error(fmt::format("state of {}: {} queue vectors for {} queues", label(), vectors->size(),
                                    queue_count()));
  }
  // §4.1.5.1.2: a vector the table does not have reads back as NO_VECTOR; a saved one
  // can only be in range.
  auto valid_vector = [&](uint64_t v) { return v == kVirtioMsiNoVector || v < msix_->vectors(); };
  if (!valid_vector(*config_vector)) return config_error(fmt::format("state of {}: config_vector {} beyond the MSI-X table", label(), *config_vector));
  for (uint64_t v : *vectors) {
    if (!valid_vector(v)) return config_error(fmt::format("state of {}: queue vector {} beyond the MSI-X table", label(), v));
  }
  // The table's entries first, then the Message Control bits the configuration space
  // forwards to it.
  if (auto r = msix_->restore_state(*msix); !r) return r;
  if (auto r = config_.restore_state(*config); !r) return r;
  config_vector_.store(*config_vector);
  for (size_t i = 0; i < queue_count(); ++i) queue_vectors_[i].store(static_cast<uint16_t>((*vectors)[i]));
  intx_allowed_.store(config_.intx_allowed());
  // INTx is a level: raise it again if the ISR says so (the shared line counts its inputs).
  std::lock_guard interrupt_lock(interrupt_mutex_);
  isr_ = *isr;
  update_intx_locked_interrupt();
  return {};
}

// ---- Interrupts (§4.1.5.3, §4.1.5.4) ---------------------------------------------------------

void VirtioPciTransport::deliver_used_queue(uint16_t queue_index) {
  if (msix_->enabled()) {
    const uint16_t vector = queue_vectors_[queue_index].load();
    if (vector == kVirtioMsiNoVector) return;  // unmapped: no notification
    // Delivered, or pending in the PBA until the guest unmasks it.
    if (msix_->signal(vector) != pci::MsixSignalResult::kDisabled) return;
    // MSI-X was disabled between the two calls: INTx it is.
  }
  set_isr_bits(kInterruptUsedBuffer);
}

void VirtioPciTransport::deliver_config_change() {
  // §4.1.4.5.1: the Device Configuration Interrupt bit is set whether or not MSI-X is used.
  set_isr_bits(kInterruptConfigChange);
  if (msix_->enabled()) {
    const uint16_t vector = config_vector_.load();
    if (vector != kVirtioMsiNoVector) msix_->signal(vector);
  }
}

void VirtioPciTransport::set_isr_bits(uint8_t bits) {
  std::lock_guard lock(interrupt_mutex_);
  isr_ |= bits;
  update_intx_locked_interrupt();
}

uint8_t VirtioPciTransport::read_isr_and_clear() {
  std::lock_guard lock(interrupt_mutex_);
  const uint8_t value = isr_;
  isr_ = 0;
  update_intx_locked_interrupt();
  return value;
}

void VirtioPciTransport::update_intx_locked_interrupt() {
  const bool level = isr_ != 0 && intx_allowed_.load();
  if (!intx_ || level == intx_level_) return;
  intx_level_ = level;
  intx_->set_level(level);
}

void VirtioPciTransport::refresh_intx_allowed() {
  intx_allowed_.store(config_.intx_allowed());
  std::lock_guard lock(interrupt_mutex_);
  update_intx_locked_interrupt();
}

}  // namespace skiff::virtio
