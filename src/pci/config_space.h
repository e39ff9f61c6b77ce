// SPDX-License-Identifier: Apache-2.0
// A reusable model of a PCI function's configuration space with a type 0 header (PCI Local
// Bus spec 3.0, chapter 6): every byte has a guest-writable mask and a write-1-to-clear
// mask, so read-only fields stay read-only and the BAR sizing protocol (write all ones, read
// back the size mask) falls out of the BARs' masks. Capabilities are added as byte strings
// with their own writable masks and linked into the list at 0x34 (section 6.7); the MSI-X
// capability (section 6.8.2) forwards its Message Control bits to an MsixTable.
//
// Not thread-safe: the owning device serialises access (PciRoot already serialises the
// guest's configuration accesses).
//
// BAR decoding: bar_address() is where a BAR decodes, and nullopt unless
//   - the Command register enables the BAR's space (I/O Space or Memory Space bit), and
//   - the address is not 0 (unassigned), and
//   - no half of the BAR holds the sizing pattern (all writable bits set: the guest is
//     between "write all ones" and "restore the address").
// Moves are therefore reported when the guest enables decoding, programs a new address while
// decoding is enabled, or disables decoding. Linux sizes and assigns BARs with decoding
// disabled (drivers/pci/probe.c __pci_read_base; setup-res.c for 64-bit BARs), so it causes
// no transient mappings.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "pci/msix_table.h"
#include "pci/pci_device.h"
#include "skiff/error.h"
#include "state/state_blob.h"

namespace skiff::pci {

// Type 0 header registers (PCI 3.0 section 6.1, figure 6-1).
inline constexpr uint16_t kRegVendorId = 0x00;
inline constexpr uint16_t kRegDeviceId = 0x02;
inline constexpr uint16_t kRegCommand = 0x04;
inline constexpr uint16_t kRegStatus = 0x06;
inline constexpr uint16_t kRegRevisionId = 0x08;
inline constexpr uint16_t kRegClassCode = 0x09;  // prog-if 0x09, subclass 0x0a, base 0x0b
inline constexpr uint16_t kRegCacheLineSize = 0x0c;
inline constexpr uint16_t kRegHeaderType = 0x0e;
inline constexpr uint16_t kRegBar0 = 0x10;
inline constexpr uint16_t kRegSubsystemVendorId = 0x2c;
inline constexpr uint16_t kRegSubsystemId = 0x2e;
inline constexpr uint16_t kRegExpansionRom = 0x30;
inline constexpr uint16_t kRegCapabilitiesPointer = 0x34;
inline constexpr uint16_t kRegInterruptLine = 0x3c;
inline constexpr uint16_t kRegInterruptPin = 0x3d;
inline constexpr uint16_t kFirstCapabilityOffset = 0x40;

// Command register bits (section 6.2.2).
inline constexpr uint16_t kCommandIoSpace = 1u << 0;
inline constexpr uint16_t kCommandMemorySpace = 1u << 1;
inline constexpr uint16_t kCommandBusMaster = 1u << 2;
inline constexpr uint16_t kCommandParityErrorResponse = 1u << 6;
inline constexpr uint16_t kCommandSerrEnable = 1u << 8;
inline constexpr uint16_t kCommandInterruptDisable = 1u << 10;

// Status register bits (section 6.2.3).
inline constexpr uint16_t kStatusInterrupt = 1u << 3;
inline constexpr uint16_t kStatusCapabilitiesList = 1u << 4;
// Master Data Parity Error, Signaled/Received Target Abort, Received Master Abort, Signaled
// System Error, Detected Parity Error: "write 1 to clear" bits.
inline constexpr uint16_t kStatusWriteOneToClear = 0xf900;

// Capability ids (PCI Code and ID Assignment spec; MSI-X: PCI 3.0 section 6.8.2).
inline constexpr uint8_t kCapabilityIdVendorSpecific = 0x09;
inline constexpr uint8_t kCapabilityIdMsix = 0x11;

// BAR sizes this model accepts (section 6.2.5.1: power-of-two sizes, naturally aligned; a
// memory BAR "should" be at least 4 KiB so BARs of different devices never share a page;
// I/O BARs may not exceed 256 bytes).
inline constexpr uint64_t kMinMemoryBarSize = 4096;
inline constexpr uint64_t kMinIoBarSize = 4;
inline constexpr uint64_t kMaxIoBarSize = 256;

// Identification fields of a type 0 header (section 6.2.1).
struct ConfigHeader {
  uint16_t vendor_id = 0xffff;
  uint16_t device_id = 0xffff;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
  uint8_t revision = 0;
  uint32_t class_code = 0;    // 24 bits: base class << 16 | subclass << 8 | prog-if
  uint8_t interrupt_pin = 0;  // 0: no INTx, 1-4: INTA#-INTD# (section 6.2.4)
};

class ConfigSpace {
 public:
  // `size` is kConfigSpaceSize or kExtendedConfigSpaceSize (other values use 256).
  explicit ConfigSpace(const ConfigHeader& header, uint16_t size = kConfigSpaceSize);

  uint16_t size() const { return static_cast<uint16_t>(bytes_.size()); }

  // --- Set-up by the device, before the guest runs ------------------------------------------
  // Declares a BAR. Fails on an index outside 0-5 (0-4 for 64-bit), a register already taken,
  // a size that is not a power of two or outside the limits above (32-bit memory: up to
  // 2 GiB), or prefetchable I/O.
  Result<void> add_bar(const BarInfo& bar);
  // Programs a BAR's address like firmware would (the VMM's initial assignment). Fails when no
  // BAR starts at `index` or the address is not aligned to the size or does not fit the BAR.
  Result<void> set_bar_address(uint8_t index, uint64_t address);
  // Appends a capability: `body` are the bytes after the ID and Next Pointer; `writable`
  // (empty, or as long as body) marks the guest-writable bits. Returns its offset (DWORD
  // aligned, from 0x40 on). Fails when it does not fit below 0x100.
  Result<uint8_t> add_capability(uint8_t id, std::span<const uint8_t> body,
                                 std::span<const uint8_t> writable = {});
  // Adds the MSI-X capability for `table` (section 6.8.2.1): Message Control (Table Size,
  // Function Mask, MSI-X Enable), Table Offset/BIR and PBA Offset/BIR. The table's BARs must
  // be memory BARs declared before, large enough for the table and PBA. Returns its offset.
  Result<uint8_t> add_msix_capability(std::shared_ptr<MsixTable> table);

  // --- Guest accesses -----------------------------------------------------------------------
  // `size` 1, 2 or 4 inside one dword and inside the space; other accesses read all ones and
  // are dropped.
  uint32_t read(uint16_t offset, uint8_t size) const;
  void write(uint16_t offset, uint8_t size, uint32_t value);

  // --- Device-side view ---------------------------------------------------------------------
  // Writes bytes without the guest masks (e.g. a device updating a capability field).
  // Out-of-range writes are dropped.
  void write_raw(uint16_t offset, std::span<const uint8_t> data);
  uint16_t command() const;
  uint16_t status() const;
  // Sets or clears Status bit 3 (Interrupt Status: the function's INTx is asserted).
  void set_interrupt_status(bool asserted);
  // INTx may be asserted: Interrupt Disable clear and MSI-X not enabled (section 6.8.2:
  // enabling MSI-X disables INTx).
  bool intx_allowed() const;
  bool bus_master_enabled() const { return (command() & kCommandBusMaster) != 0; }

  const std::vector<BarInfo>& bars() const { return bars_; }
  // The BAR starting at register `index`, or nullptr.
  const BarInfo* bar(uint8_t index) const;
  // The address programmed into a BAR, whatever the Command register says (0 if none).
  uint64_t bar_programmed_address(uint8_t index) const;
  // Where the BAR decodes (see the header comment), or nullopt.
  std::optional<uint64_t> bar_address(uint8_t index) const;

  const std::shared_ptr<MsixTable>& msix() const { return msix_; }

  // The device-state seam: kind "pci-config" version 1, the whole space as the guest sees
  // it. restore_state() on a space built the same way (same size, BARs and capabilities)
  // takes only the guest-writable bits from the blob, so identity and capability layout
  // stay as built whatever the blob says, then forwards the restored MSI-X Message
  // Control bits to the table. The MSI-X table's own state is saved by its owner.
  state::StateBlob save_state() const;
  Result<void> restore_state(const state::StateBlob& blob);
  std::optional<uint8_t> msix_capability_offset() const { return msix_offset_; }

 private:
  uint32_t read_le(uint16_t offset, uint8_t size) const;
  void set_le(uint16_t offset, uint8_t size, uint32_t value);
  void set_writable(uint16_t offset, uint8_t size, uint32_t mask);
  uint32_t bar_register_mask(const BarInfo& bar, bool high_half) const;
  bool bar_holds_sizing_pattern(const BarInfo& bar) const;
  void update_command_mask();

  std::vector<uint8_t> bytes_;
  std::vector<uint8_t> writable_;
  std::vector<uint8_t> write_one_to_clear_;
  std::vector<BarInfo> bars_;
  std::array<bool, kBarCount> bar_register_used_{};
  uint8_t last_capability_ = 0;  // offset of the last capability in the list, 0 if none
  uint16_t next_capability_ = kFirstCapabilityOffset;
  std::shared_ptr<MsixTable> msix_;
  std::optional<uint8_t> msix_offset_;
};

}  // namespace skiff::pci
