// SPDX-License-Identifier: Apache-2.0
// The MSI-X table and Pending Bit Array of one PCI function (PCI 3.0 section 6.8.2), living
// in the function's memory BARs. The Message Control bits (MSI-X Enable, Function Mask) live
// in the MSI-X capability of the configuration space, which forwards them here
// (ConfigSpace::add_msix_capability).
//
// Device code calls signal(vector). When MSI-X is enabled and the vector is unmasked, the
// table calls the delivery callback with the entry's address and data (the VMM turns it into
// KVM_SIGNAL_MSI); when the vector or the whole function is masked the vector's pending bit
// is set instead, and the message is sent when the guest unmasks it (section 6.8.2.9).
//
// The vector-changed hook runs whenever an entry's address, data or effective mask changes,
// so the VMM can keep a KVM GSI route (irqfd) per vector in step. "Effective mask" is: the
// entry's Mask bit, or the Function Mask, or MSI-X disabled.
//
// Thread safety: every method locks the table. The callbacks run with the lock held (so they
// see changes in order); they must not call back into the same MsixTable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "skiff/error.h"
#include "state/stateful.h"

namespace skiff::pci {

// PCI 3.0 section 6.8.2.3: Table Size is an 11-bit field holding N - 1.
inline constexpr uint16_t kMsixMaxVectors = 2048;
// Section 6.8.2: each table entry is 16 bytes; the PBA holds one bit per vector in QWORDs.
inline constexpr uint64_t kMsixEntrySize = 16;

using MsiDeliver = std::function<void(uint64_t address, uint32_t data)>;
using MsixVectorChanged =
    std::function<void(uint16_t vector, uint64_t address, uint32_t data, bool masked)>;

// Where the table and PBA live. Offsets are relative to the start of their BAR and must be
// QWORD aligned (section 6.8.2.4-5: the low 3 bits of the register hold the BIR).
struct MsixLayout {
  uint16_t vectors = 1;  // 1 - kMsixMaxVectors
  uint8_t table_bar = 0;
  uint32_t table_offset = 0;
  uint8_t pba_bar = 0;
  uint32_t pba_offset = 0;
};

enum class MsixSignalResult {
  kDelivered,      // the message was sent
  kPending,        // masked: the pending bit is set, sent on unmask
  kDisabled,       // MSI-X Enable is clear: the device should use INTx instead
  kInvalidVector,  // vector >= the table size: nothing happened
};

class MsixTable : public state::Stateful {
 public:
  struct Entry {
    uint64_t address = 0;
    uint32_t data = 0;
    bool masked = true;  // section 6.8.2.9: the Mask bit resets to 1
  };

  // Fails when the vector count is 0 or above kMsixMaxVectors, an offset is not QWORD
  // aligned, a BAR index is above 5, or the table and PBA overlap in the same BAR.
  static Result<std::shared_ptr<MsixTable>> create(const MsixLayout& layout, MsiDeliver deliver);

  const MsixLayout& layout() const { return layout_; }
  uint16_t vectors() const { return layout_.vectors; }
  uint64_t table_bytes() const { return uint64_t{layout_.vectors} * kMsixEntrySize; }
  // The PBA in whole QWORDs (section 6.8.2.10).
  uint64_t pba_bytes() const { return (uint64_t{layout_.vectors} + 63) / 64 * 8; }

  void set_vector_changed_hook(MsixVectorChanged hook);

  MsixSignalResult signal(uint16_t vector);

  // Message Control bits, written by the configuration space's MSI-X capability.
  void set_control(bool enabled, bool function_masked);
  bool enabled() const;
  bool function_masked() const;

  Entry entry(uint16_t vector) const;  // a default Entry for an out-of-range vector
  bool pending(uint16_t vector) const;

  // Accesses from the BAR owning the table or PBA. Return true when [offset, offset + size)
  // lies entirely inside the table or the PBA of `bar` (the access was handled here), false
  // when the device should handle it. Reads serve any size; writes to the table must be
  // aligned DWORDs or QWORDs (section 6.8.2: other accesses have undefined results, and are
  // dropped); the PBA is read-only.
  bool bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) const;
  bool bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data);

  // Function reset: every entry masked and zeroed, no pending bits, MSI-X disabled.
  void reset();

  // The device-state seam: kind "msix-table" version 1 with every entry, the pending bits
  // and the Message Control bits. restore_state() needs the same vector count, then runs
  // the vector-changed hook for every vector (so the VMM builds its routes) and sends
  // nothing: pending bits stay pending until the guest unmasks, as they were.
  Result<state::StateBlob> save_state() const override;
  Result<void> restore_state(const state::StateBlob& blob) override;

 private:
  MsixTable(const MsixLayout& layout, MsiDeliver deliver);

  bool effectively_masked(const Entry& entry) const;
  void notify_changed(uint16_t vector) const;
  // Sends every pending vector that is no longer masked, clearing its pending bit.
  void deliver_unmasked_pending();
  uint32_t table_dword(uint64_t offset) const;
  void write_table_dword(uint64_t offset, uint32_t value);
  void set_pending(uint16_t vector, bool pending);

  const MsixLayout layout_;
  const MsiDeliver deliver_;
  mutable std::mutex mutex_;
  MsixVectorChanged changed_;     // guarded by mutex_
  std::vector<Entry> entries_;    // guarded by mutex_
  std::vector<uint64_t> pba_;     // guarded by mutex_
  bool enabled_ = false;          // guarded by mutex_
  bool function_masked_ = false;  // guarded by mutex_
};

}  // namespace skiff::pci
