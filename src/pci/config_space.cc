// SPDX-License-Identifier: Apache-2.0
#include "pci/config_space.h"

#include <fmt/format.h>

#include <bit>

namespace skiff::pci {
namespace {

// BAR type bits (PCI 3.0 section 6.2.5.1, figures 6-5 and 6-6).
constexpr uint32_t kBarIoSpace = 1u << 0;
constexpr uint32_t kBarMemoryType64 = 2u << 1;
constexpr uint32_t kBarPrefetchable = 1u << 3;
constexpr uint32_t kBarMemoryAddressMask = ~uint32_t{0xf};
constexpr uint32_t kBarIoAddressMask = ~uint32_t{0x3};
// x86 port space is 64 KiB: the upper 16 bits of an I/O BAR are hardwired to zero, which
// section 6.2.5.1 allows for devices that decode only 16 bits of I/O address.
constexpr uint32_t kIoBarDecodeMask = 0xffff;
constexpr uint64_t kFourGiB = uint64_t{1} << 32;

// MSI-X capability layout (section 6.8.2.1) after the ID and Next Pointer.
constexpr uint16_t kMsixControl = 2;
constexpr uint16_t kMsixControlEnable = 1u << 15;        // section 6.8.2.3
constexpr uint16_t kMsixControlFunctionMask = 1u << 14;  // section 6.8.2.3

uint16_t bar_register(uint8_t index) { return static_cast<uint16_t>(kRegBar0 + 4 * index); }

}  // namespace

ConfigSpace::ConfigSpace(const ConfigHeader& header, uint16_t size) {
  const uint16_t bytes = size == kExtendedConfigSpaceSize ? size : kConfigSpaceSize;
  bytes_.assign(bytes, 0);
  writable_.assign(bytes, 0);
  write_one_to_clear_.assign(bytes, 0);

  set_le(kRegVendorId, 2, header.vendor_id);
  set_le(kRegDeviceId, 2, header.device_id);
  set_le(kRegRevisionId, 1, header.revision);
  set_le(kRegClassCode, 2, header.class_code & 0xffff);
  set_le(kRegClassCode + 2, 1, (header.class_code >> 16) & 0xff);
  // Header Type 0x00: a single-function device with a type 0 header (section 6.2.1), so
  // enumeration does not probe functions 1-7.
  set_le(kRegHeaderType, 1, 0);
  set_le(kRegSubsystemVendorId, 2, header.subsystem_vendor_id);
  set_le(kRegSubsystemId, 2, header.subsystem_id);
  set_le(kRegInterruptPin, 1, header.interrupt_pin <= 4 ? header.interrupt_pin : 0);

  // Section 6.2.4: Cache Line Size and Interrupt Line are read/write scratch registers for
  // software. Latency Timer, BIST, the Expansion ROM BAR (no ROM: reads 0, so sizing finds
  // nothing, section 6.2.5.2) and everything not set below stay read-only.
  set_writable(kRegCacheLineSize, 1, 0xff);
  set_writable(kRegInterruptLine, 1, 0xff);
  update_command_mask();
  for (uint16_t i = 0; i < 2; ++i) {
    write_one_to_clear_[kRegStatus + i] = static_cast<uint8_t>(kStatusWriteOneToClear >> (8 * i));
  }
}

void ConfigSpace::update_command_mask() {
  // Section 6.2.2: the I/O Space and Memory Space bits are hardwired to 0 in a function
  // without BARs of that kind; the other writable bits are those a virtual device honours
  // or can harmlessly store. Special Cycles, Memory Write and Invalidate, VGA Palette Snoop
  // and Fast Back-to-Back are read-only 0.
  uint32_t mask = kCommandBusMaster | kCommandParityErrorResponse | kCommandSerrEnable |
                  kCommandInterruptDisable;
  for (const auto& b : bars_) mask |= b.is_memory() ? kCommandMemorySpace : kCommandIoSpace;
  set_writable(kRegCommand, 2, mask);
}

uint32_t ConfigSpace::read_le(uint16_t offset, uint8_t size) const {
  uint32_t value = 0;
  for (uint8_t i = 0; i < size; ++i) value |= static_cast<uint32_t>(bytes_[offset + i]) << (8 * i);
  return value;
}

void ConfigSpace::set_le(uint16_t offset, uint8_t size, uint32_t value) {
  for (uint8_t i = 0; i < size; ++i) bytes_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

void ConfigSpace::set_writable(uint16_t offset, uint8_t size, uint32_t mask) {
  for (uint8_t i = 0; i < size; ++i) writable_[offset + i] = static_cast<uint8_t>(mask >> (8 * i));
}

uint32_t ConfigSpace::bar_register_mask(const BarInfo& b, bool high_half) const {
  const uint64_t address_bits = ~(b.size - 1);
  switch (b.kind) {
    case BarKind::kIo:
      return static_cast<uint32_t>(address_bits) & kBarIoAddressMask & kIoBarDecodeMask;
    case BarKind::kMemory32:
      return static_cast<uint32_t>(address_bits) & kBarMemoryAddressMask;
    case BarKind::kMemory64:
      return high_half ? static_cast<uint32_t>(address_bits >> 32)
                       : static_cast<uint32_t>(address_bits) & kBarMemoryAddressMask;
  }
  return 0;
}

Result<void> ConfigSpace::add_bar(const BarInfo& b) {
  const bool wide = b.kind == BarKind::kMemory64;
  const auto what = fmt::format("PCI BAR {}", b.index);
  if (b.index >= kBarCount || (wide && b.index + 1 >= kBarCount)) {
    return internal_error(
        fmt::format("{}: index out of range for a {}-bit BAR", what, wide ? 64 : 32));
  }
  if (bar_register_used_[b.index] || (wide && bar_register_used_[b.index + 1])) {
    return internal_error(fmt::format("{}: register already used by another BAR", what));
  }
  if (!std::has_single_bit(b.size)) {
    return internal_error(fmt::format("{}: size {:#x} is not a power of two", what, b.size));
  }
  if (b.kind == BarKind::kIo) {
    if (b.size < kMinIoBarSize || b.size > kMaxIoBarSize || b.prefetchable) {
      return internal_error(
          fmt::format("{}: I/O BARs are {}-{} bytes and never prefetchable (size {:#x})", what,
                      kMinIoBarSize, kMaxIoBarSize, b.size));
    }
  } else if (b.size < kMinMemoryBarSize || (!wide && b.size > kFourGiB / 2) ||
             b.size > (uint64_t{1} << 63)) {
    return internal_error(fmt::format("{}: memory BAR size {:#x} outside {:#x}-{:#x}", what, b.size,
                                      kMinMemoryBarSize,
                                      wide ? (uint64_t{1} << 63) : kFourGiB / 2));
  }

  uint32_t type_bits = 0;
  if (b.kind == BarKind::kIo) {
    type_bits = kBarIoSpace;
  } else {
    type_bits = (wide ? kBarMemoryType64 : 0) | (b.prefetchable ? kBarPrefetchable : 0);
  }
  set_le(bar_register(b.index), 4, type_bits);
  set_writable(bar_register(b.index), 4, bar_register_mask(b, false));
  bar_register_used_[b.index] = true;
  if (wide) {
    set_le(bar_register(b.index + 1), 4, 0);
    set_writable(bar_register(b.index + 1), 4, bar_register_mask(b, true));
    bar_register_used_[b.index + 1] = true;
  }
  bars_.push_back(b);
  update_command_mask();
  return {};
}

const BarInfo* ConfigSpace::bar(uint8_t index) const {
  for (const auto& b : bars_) {
    if (b.index == index) return &b;
  }
  return nullptr;
}

Result<void> ConfigSpace::set_bar_address(uint8_t index, uint64_t address) {
  const BarInfo* b = bar(index);
  if (!b) return internal_error(fmt::format("PCI BAR {}: not declared", index));
  const uint64_t limit = b->kind == BarKind::kIo         ? uint64_t{kIoBarDecodeMask} + 1
                         : b->kind == BarKind::kMemory32 ? kFourGiB
                                                         : 0;
  if (address % b->size != 0 || (limit != 0 && (address >= limit || b->size > limit - address))) {
    return internal_error(
        fmt::format("PCI BAR {}: address {:#x} is not aligned to its size {:#x} "
                    "or out of the BAR's range",
                    index, address, b->size));
  }
  const uint32_t type_bits = read_le(bar_register(index), 4) & ~bar_register_mask(*b, false);
  set_le(bar_register(index), 4, type_bits | static_cast<uint32_t>(address));
  if (b->kind == BarKind::kMemory64) {
    set_le(bar_register(index + 1), 4, static_cast<uint32_t>(address >> 32));
  }
  return {};
}

uint64_t ConfigSpace::bar_programmed_address(uint8_t index) const {
  const BarInfo* b = bar(index);
  if (!b) return 0;
  const uint32_t low = read_le(bar_register(index), 4);
  switch (b->kind) {
    case BarKind::kIo:
      return low & kBarIoAddressMask & kIoBarDecodeMask;
    case BarKind::kMemory32:
      return low & kBarMemoryAddressMask;
    case BarKind::kMemory64:
      return (uint64_t{read_le(bar_register(index + 1), 4)} << 32) | (low & kBarMemoryAddressMask);
  }
  return 0;
}

bool ConfigSpace::bar_holds_sizing_pattern(const BarInfo& b) const {
  const uint32_t low_mask = bar_register_mask(b, false);
  const uint32_t low = read_le(bar_register(b.index), 4) & low_mask;
  if (b.kind != BarKind::kMemory64) return low == low_mask;
  const uint32_t high_mask = bar_register_mask(b, true);
  const uint32_t high = read_le(bar_register(b.index + 1), 4) & high_mask;
  if (high_mask != 0 && high == high_mask) return true;
  // The low half sized while the high half is 0: an address at the very top of the 32-bit
  // space, where no BAR of ours is ever placed.
  return high == 0 && low_mask != 0 && low == low_mask;
}

std::optional<uint64_t> ConfigSpace::bar_address(uint8_t index) const {
  const BarInfo* b = bar(index);
  if (!b) return std::nullopt;
  const uint16_t decode = b->is_memory() ? kCommandMemorySpace : kCommandIoSpace;
  if ((command() & decode) == 0) return std::nullopt;
  const uint64_t address = bar_programmed_address(index);
  if (address == 0 || bar_holds_sizing_pattern(*b)) return std::nullopt;
  return address;
}

Result<uint8_t> ConfigSpace::add_capability(uint8_t id, std::span<const uint8_t> body,
                                            std::span<const uint8_t> writable) {
  if (!writable.empty() && writable.size() != body.size()) {
    return internal_error(fmt::format("PCI capability {:#x}: {} mask bytes for a {}-byte body", id,
                                      writable.size(), body.size()));
  }
  // Section 6.7: capabilities are DWORD aligned, inside the 192 bytes after the header.
  const uint16_t offset = static_cast<uint16_t>((next_capability_ + 3) & ~3u);
  if (offset + 2 + body.size() > kConfigSpaceSize) {
    return internal_error(
        fmt::format("PCI capability {:#x}: {} bytes do not fit at {:#x} (the list ends at 0x100)",
                    id, body.size() + 2, offset));
  }
  bytes_[offset] = id;
  bytes_[offset + 1] = 0;  // end of the list
  for (size_t i = 0; i < body.size(); ++i) {
    bytes_[offset + 2 + i] = body[i];
    writable_[offset + 2 + i] = writable.empty() ? 0 : writable[i];
  }
  if (last_capability_ == 0) {
    bytes_[kRegCapabilitiesPointer] = static_cast<uint8_t>(offset);
    set_le(kRegStatus, 2, status() | kStatusCapabilitiesList);
  } else {
    bytes_[last_capability_ + 1] = static_cast<uint8_t>(offset);
  }
  last_capability_ = static_cast<uint8_t>(offset);
  next_capability_ = static_cast<uint16_t>(offset + 2 + body.size());
  return static_cast<uint8_t>(offset);
}

Result<uint8_t> ConfigSpace::add_msix_capability(std::shared_ptr<MsixTable> table) {
  if (!table) return internal_error("PCI MSI-X capability: no table given");
  if (msix_) return internal_error("PCI MSI-X capability: already added");
  const MsixLayout& layout = table->layout();
  const auto check_region = [&](const char* what, uint8_t index, uint64_t offset,
                                uint64_t length) -> Result<void> {
    const BarInfo* b = bar(index);
    if (!b || !b->is_memory()) {
      return internal_error(
          fmt::format("PCI MSI-X {}: BAR {} is not a declared memory BAR", what, index));
    }
    if (offset > b->size || length > b->size - offset) {
      return internal_error(
          fmt::format("PCI MSI-X {}: [{:#x}, +{:#x}) exceeds BAR {} of {:#x} "
                      "bytes",
                      what, offset, length, index, b->size));
    }
    return {};
  };
  if (auto r = check_region("table", layout.table_bar, layout.table_offset, table->table_bytes());
      !r) {
    return std::unexpected(r.error());
  }
  if (auto r = check_region("PBA", layout.pba_bar, layout.pba_offset, table->pba_bytes()); !r) {
    return std::unexpected(r.error());
  }
  // Sections 6.8.2.3-5: Message Control (Table Size = N - 1, read-only), then the Table and
  // PBA Offset/BIR registers (read-only).
  const uint16_t control = static_cast<uint16_t>(layout.vectors - 1);
  const uint32_t table_reg = layout.table_offset | layout.table_bar;
  const uint32_t pba_reg = layout.pba_offset | layout.pba_bar;
  std::array<uint8_t, 10> body{};
  std::array<uint8_t, 10> writable{};
  body[0] = static_cast<uint8_t>(control);
  body[1] = static_cast<uint8_t>(control >> 8);
  for (int i = 0; i < 4; ++i) {
    body[2 + i] = static_cast<uint8_t>(table_reg >> (8 * i));
    body[6 + i] = static_cast<uint8_t>(pba_reg >> (8 * i));
  }
  writable[1] = static_cast<uint8_t>((kMsixControlEnable | kMsixControlFunctionMask) >> 8);
  auto offset = add_capability(kCapabilityIdMsix, body, writable);
  if (!offset) return offset;
  msix_ = std::move(table);
  msix_offset_ = *offset;
  return offset;
}

uint32_t ConfigSpace::read(uint16_t offset, uint8_t size) const {
  if ((size != 1 && size != 2 && size != 4) || offset % 4 + size > 4 ||
      offset + size > bytes_.size()) {
    return 0xffffffff;
  }
  return read_le(offset, size);
}

void ConfigSpace::write(uint16_t offset, uint8_t size, uint32_t value) {
  if ((size != 1 && size != 2 && size != 4) || offset % 4 + size > 4 ||
      offset + size > bytes_.size()) {
    return;
  }
  for (uint8_t i = 0; i < size; ++i) {
    const size_t at = offset + i;
    const auto incoming = static_cast<uint8_t>(value >> (8 * i));
    uint8_t next = static_cast<uint8_t>((bytes_[at] & ~writable_[at]) | (incoming & writable_[at]));
    next = static_cast<uint8_t>(next & ~(incoming & write_one_to_clear_[at]));
    bytes_[at] = next;
  }
  if (msix_offset_) {
    const uint16_t control = *msix_offset_ + kMsixControl;
    if (offset < control + 2 && control < offset + size) {
      const uint32_t bits = read_le(control, 2);
      msix_->set_control((bits & kMsixControlEnable) != 0, (bits & kMsixControlFunctionMask) != 0);
    }
  }
}

void ConfigSpace::write_raw(uint16_t offset, std::span<const uint8_t> data) {
  if (offset > bytes_.size() || data.size() > bytes_.size() - offset) return;
  for (size_t i = 0; i < data.size(); ++i) bytes_[offset + i] = data[i];
}

uint16_t ConfigSpace::command() const { return static_cast<uint16_t>(read_le(kRegCommand, 2)); }

uint16_t ConfigSpace::status() const { return static_cast<uint16_t>(read_le(kRegStatus, 2)); }

void ConfigSpace::set_interrupt_status(bool asserted) {
  const uint16_t s = status();
  set_le(kRegStatus, 2, asserted ? (s | kStatusInterrupt) : (s & ~kStatusInterrupt));
}

bool ConfigSpace::intx_allowed() const {
  if ((command() & kCommandInterruptDisable) != 0) return false;
  if (msix_offset_ && (read_le(*msix_offset_ + kMsixControl, 2) & kMsixControlEnable) != 0) {
    return false;
  }
  return true;
}

state::StateBlob ConfigSpace::save_state() const {
  state::StateBlob blob("pci-config", 1);
  blob.put_bytes("bytes", bytes_);
  return blob;
}

Result<void> ConfigSpace::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect("pci-config", 1); !r) return r;
  auto saved = blob.bytes_exact("bytes", bytes_.size());
  if (!saved) return std::unexpected(saved.error());
  for (size_t at = 0; at < bytes_.size(); ++at) {
    bytes_[at] = static_cast<uint8_t>((bytes_[at] & ~writable_[at]) | ((*saved)[at] & writable_[at]));
  }
  if (msix_ && msix_offset_) {
    const uint32_t control = read_le(*msix_offset_ + kMsixControl, 2);
    msix_->set_control((control & kMsixControlEnable) != 0, (control & kMsixControlFunctionMask) != 0);
  }
  return {};
}

}  // namespace skiff::pci
