// SPDX-License-Identifier: Apache-2.0
#include "pci/msix_table.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "pci/pci_device.h"

namespace skiff::pci {
namespace {

// Table entry layout (PCI 3.0 section 6.8.2, figure 6-11): DWORDs at these offsets.
constexpr uint64_t kEntryAddressLow = 0x0;   // 6.8.2.6
constexpr uint64_t kEntryAddressHigh = 0x4;  // 6.8.2.7
constexpr uint64_t kEntryData = 0x8;         // 6.8.2.8
constexpr uint64_t kEntryControl = 0xc;      // 6.8.2.9
constexpr uint32_t kVectorControlMask = 1u << 0;
// Section 6.8.2.6: Message Address bits 1:0 are always zero (DWORD-aligned address).
constexpr uint32_t kAddressLowWritable = ~uint32_t{3};

bool inside(uint64_t start, uint64_t length, uint64_t offset, uint64_t size) {
  return offset >= start && size <= length && offset - start <= length - size;
}

}  // namespace

Result<std::shared_ptr<MsixTable>> MsixTable::create(const MsixLayout& layout, MsiDeliver deliver) {
  if (layout.vectors == 0 || layout.vectors > kMsixMaxVectors) {
    return internal_error(fmt::format("MSI-X: {} vectors requested, the table holds 1-{}",
                                      layout.vectors, kMsixMaxVectors));
  }
  if (layout.table_bar >= kBarCount || layout.pba_bar >= kBarCount) {
    return internal_error(
        fmt::format("MSI-X: BAR index {} / {} is not 0-5", layout.table_bar, layout.pba_bar));
  }
  // Sections 6.8.2.4-5: the offsets' low 3 bits are taken by the BIR field.
  if (layout.table_offset % 8 != 0 || layout.pba_offset % 8 != 0) {
    return internal_error(
        fmt::format("MSI-X: table offset {:#x} or PBA offset {:#x} is not QWORD "
                    "aligned",
                    layout.table_offset, layout.pba_offset));
  }
  auto table = std::shared_ptr<MsixTable>(new MsixTable(layout, std::move(deliver)));
  if (layout.table_bar == layout.pba_bar) {
    const uint64_t table_end = uint64_t{layout.table_offset} + table->table_bytes();
    const uint64_t pba_end = uint64_t{layout.pba_offset} + table->pba_bytes();
    if (layout.table_offset < pba_end && layout.pba_offset < table_end) {
      return internal_error(fmt::format(
          "MSI-X: table [{:#x}, {:#x}) and PBA [{:#x}, {:#x}) overlap in BAR {}",
          layout.table_offset, table_end, layout.pba_offset, pba_end, layout.table_bar));
    }
  }
  return table;
}

MsixTable::MsixTable(const MsixLayout& layout, MsiDeliver deliver)
    : layout_(layout),
      deliver_(std::move(deliver)),
      entries_(layout.vectors),
      pba_((uint64_t{layout.vectors} + 63) / 64, 0) {}

void MsixTable::set_vector_changed_hook(MsixVectorChanged hook) {
  std::lock_guard lock(mutex_);
  changed_ = std::move(hook);
}

bool MsixTable::effectively_masked(const Entry& entry) const {
  return entry.masked || function_masked_ || !enabled_;
}

void MsixTable::notify_changed(uint16_t vector) const {
  if (!changed_) return;
  const Entry& e = entries_[vector];
  changed_(vector, e.address, e.data, effectively_masked(e));
}

void MsixTable::set_pending(uint16_t vector, bool pending) {
  const uint64_t bit = uint64_t{1} << (vector % 64);
  if (pending) {
    pba_[vector / 64] |= bit;
  } else {
    pba_[vector / 64] &= ~bit;
  }
}

MsixSignalResult MsixTable::signal(uint16_t vector) {
  std::lock_guard lock(mutex_);
  if (vector >= layout_.vectors) return MsixSignalResult::kInvalidVector;
  if (!enabled_) return MsixSignalResult::kDisabled;
  const Entry& e = entries_[vector];
  // Section 6.8.2.9: a masked vector may not send a message; the function sets the
  // vector's Pending bit and sends it once the vector is unmasked.
  if (e.masked || function_masked_) {
    set_pending(vector, true);
    return MsixSignalResult::kPending;
  }
  if (deliver_) deliver_(e.address, e.data);
  return MsixSignalResult::kDelivered;
}

void MsixTable::deliver_unmasked_pending() {
  if (!enabled_ || function_masked_) return;
  for (uint16_t vector = 0; vector < layout_.vectors; ++vector) {
    if ((pba_[vector / 64] >> (vector % 64) & 1) == 0 || entries_[vector].masked) continue;
    set_pending(vector, false);
    if (deliver_) deliver_(entries_[vector].address, entries_[vector].data);
  }
}

void MsixTable::set_control(bool enabled, bool function_masked) {
  std::lock_guard lock(mutex_);
  if (enabled == enabled_ && function_masked == function_masked_) return;
  enabled_ = enabled;
  function_masked_ = function_masked;
  // The effective mask of every vector may have changed.
  for (uint16_t vector = 0; vector < layout_.vectors; ++vector) notify_changed(vector);
  deliver_unmasked_pending();
}

bool MsixTable::enabled() const {
  std::lock_guard lock(mutex_);
  return enabled_;
}

bool MsixTable::function_masked() const {
  std::lock_guard lock(mutex_);
  return function_masked_;
}

MsixTable::Entry MsixTable::entry(uint16_t vector) const {
  std::lock_guard lock(mutex_);
  if (vector >= layout_.vectors) return Entry{};
  return entries_[vector];
}

bool MsixTable::pending(uint16_t vector) const {
  std::lock_guard lock(mutex_);
  if (vector >= layout_.vectors) return false;
  return (pba_[vector / 64] >> (vector % 64) & 1) != 0;
}

uint32_t MsixTable::table_dword(uint64_t offset) const {
  const Entry& e = entries_[offset / kMsixEntrySize];
  switch (offset % kMsixEntrySize) {
    case kEntryAddressLow:
      return static_cast<uint32_t>(e.address);
    case kEntryAddressHigh:
      return static_cast<uint32_t>(e.address >> 32);
    case kEntryData:
      return e.data;
    default:  // kEntryControl; bits 31:1 are reserved and read 0
      return e.masked ? kVectorControlMask : 0;
  }
}

void MsixTable::write_table_dword(uint64_t offset, uint32_t value) {
  const auto vector = static_cast<uint16_t>(offset / kMsixEntrySize);
  Entry& e = entries_[vector];
  const Entry before = e;
  switch (offset % kMsixEntrySize) {
    case kEntryAddressLow:
      e.address = (e.address & ~uint64_t{0xffffffff}) | (value & kAddressLowWritable);
      break;
    case kEntryAddressHigh:
      e.address = (e.address & 0xffffffff) | (uint64_t{value} << 32);
      break;
    case kEntryData:
      e.data = value;
      break;
    default:
      e.masked = (value & kVectorControlMask) != 0;
      break;
  }
  if (e.address == before.address && e.data == before.data && e.masked == before.masked) return;
  notify_changed(vector);
  if (before.masked && !e.masked) deliver_unmasked_pending();
}

bool MsixTable::bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) const {
  const bool in_table =
      bar == layout_.table_bar && inside(layout_.table_offset, table_bytes(), offset, data.size());
  const bool in_pba =
      bar == layout_.pba_bar && inside(layout_.pba_offset, pba_bytes(), offset, data.size());
  if (!in_table && !in_pba) return false;
  std::lock_guard lock(mutex_);
  // Reads have no side effects, so any size is served byte by byte.
  for (size_t i = 0; i < data.size(); ++i) {
    if (in_table) {
      const uint64_t at = offset - layout_.table_offset + i;
      data[i] = static_cast<uint8_t>(table_dword(at & ~uint64_t{3}) >> (8 * (at % 4)));
    } else {
      const uint64_t at = offset - layout_.pba_offset + i;
      data[i] = static_cast<uint8_t>(pba_[at / 8] >> (8 * (at % 8)));
    }
  }
  return true;
}

bool MsixTable::bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) {
  if (bar == layout_.pba_bar && inside(layout_.pba_offset, pba_bytes(), offset, data.size())) {
    // Section 6.8.2.10: Pending Bits are read-only.
    spdlog::debug("MSI-X: guest write to the read-only PBA at {:#x} dropped", offset);
    return true;
  }
  if (bar != layout_.table_bar ||
      !inside(layout_.table_offset, table_bytes(), offset, data.size())) {
    return false;
  }
  const uint64_t at = offset - layout_.table_offset;
  // Section 6.8.2: software must use aligned full DWORD or QWORD accesses.
  if ((data.size() != 4 && data.size() != 8) || at % data.size() != 0) {
    spdlog::debug(
        "MSI-X: guest {}-byte write at table offset {:#x} is not an aligned DWORD or "
        "QWORD; dropped",
        data.size(), at);
    return true;
  }
  std::lock_guard lock(mutex_);
  for (size_t dword = 0; dword < data.size() / 4; ++dword) {
    const uint32_t value = static_cast<uint32_t>(data[dword * 4]) |
                           static_cast<uint32_t>(data[dword * 4 + 1]) << 8 |
                           static_cast<uint32_t>(data[dword * 4 + 2]) << 16 |
                           static_cast<uint32_t>(data[dword * 4 + 3]) << 24;
    write_table_dword(at + dword * 4, value);
  }
  return true;
}

void MsixTable::reset() {
  std::lock_guard lock(mutex_);
  enabled_ = false;
  function_masked_ = false;
  for (auto& e : entries_) e = Entry{};
  for (auto& word : pba_) word = 0;
  for (uint16_t vector = 0; vector < layout_.vectors; ++vector) notify_changed(vector);
}

Result<state::StateBlob> MsixTable::save_state() const {
  std::lock_guard lock(mutex_);
  std::vector<uint64_t> addresses;
  std::vector<uint64_t> data;
  std::vector<uint64_t> masked;
  for (const Entry& e : entries_) {
    addresses.push_back(e.address);
    data.push_back(e.data);
    masked.push_back(e.masked ? 1 : 0);
  }
  state::StateBlob blob("msix-table", 1);
  blob.put("vectors", layout_.vectors)
      .put_u64s("address", addresses)
      .put_u64s("data", data)
      .put_u64s("masked", masked)
      .put_u64s("pending", pba_)
      .put_bool("enabled", enabled_)
      .put_bool("function_masked", function_masked_);
  return blob;
}

Result<void> MsixTable::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect("msix-table", 1); !r) return r;
  auto vectors = blob.get<uint16_t>("vectors", kMsixMaxVectors);
  if (!vectors) return std::unexpected(vectors.error());
  if (*vectors != layout_.vectors) {
    return config_error(fmt::format("state of msix-table: {} vectors where this function has {}", *vectors,
                                    layout_.vectors));
  }
  auto addresses = blob.u64s("address", layout_.vectors);
  auto data = blob.u64s("data", layout_.vectors, 0xffffffff);
  auto masked = blob.u64s("masked", layout_.vectors, 1);
  auto pending = blob.u64s("pending", pba_.size());
  auto enabled = blob.boolean("enabled");
  auto function_masked = blob.boolean("function_masked");
  for (const auto* r : {&addresses, &data, &masked, &pending}) {
    if (!*r) return std::unexpected(r->error());
  }
  if (!enabled) return std::unexpected(enabled.error());
  if (!function_masked) return std::unexpected(function_masked.error());
  if (addresses->size() != layout_.vectors || data->size() != layout_.vectors || masked->size() != layout_.vectors ||
      pending->size() != pba_.size()) {
    return config_error("state of msix-table: entry lists do not match the table size");
  }
  // Bits beyond the last vector in the PBA's last QWORD are reserved (section 6.8.2.10).
  if (layout_.vectors % 64 != 0 && (pending->back() >> (layout_.vectors % 64)) != 0) {
    return config_error("state of msix-table: pending bits set beyond the last vector");
  }
  std::lock_guard lock(mutex_);
  for (uint16_t v = 0; v < layout_.vectors; ++v) {
    entries_[v] = Entry{.address = (*addresses)[v], .data = static_cast<uint32_t>((*data)[v]), .masked = (*masked)[v] != 0};
  }
  pba_ = *pending;
  enabled_ = *enabled;
  function_masked_ = *function_masked;
  for (uint16_t vector = 0; vector < layout_.vectors; ++vector) notify_changed(vector);
  return {};
}

}  // namespace skiff::pci
