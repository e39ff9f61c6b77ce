// SPDX-License-Identifier: Apache-2.0
#include "pci/pci_root.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "arch/x86_64/layout.h"
#include "bus/bus.h"
#include "unit/pci/fake_pci_device.h"

namespace skiff::pci {
namespace {

using testing::FakePciDevice;
using testing::kFakeDeviceId;
using testing::kFakeVendorId;

constexpr uint32_t kHostBridgeIds = uint32_t{kHostBridgeDeviceId} << 16 | kHostBridgeVendorId;
constexpr uint32_t kFakeIds = uint32_t{kFakeDeviceId} << 16 | kFakeVendorId;

uint32_t config_address(uint8_t bus, uint8_t slot, uint8_t function, uint8_t reg) {
  return 0x8000'0000u | uint32_t{bus} << 16 | uint32_t{slot} << 11 | uint32_t{function} << 8 |
         (reg & 0xfcu);
}

// Port-level helpers on a PciConfigIo whose offset 0 is port 0xcf8.
void out(PciConfigIo& io, uint64_t port_offset, uint32_t value, size_t size) {
  std::array<uint8_t, 4> bytes = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                                  static_cast<uint8_t>(value >> 16),
                                  static_cast<uint8_t>(value >> 24)};
  io.write(port_offset, std::span<const uint8_t>(bytes.data(), size));
}
uint32_t in(PciConfigIo& io, uint64_t port_offset, size_t size) {
  std::array<uint8_t, 4> bytes{};
  io.read(port_offset, std::span<uint8_t>(bytes.data(), size));
  uint32_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= uint32_t{bytes[i]} << (8 * i);
  return value;
}
// A configuration read through mechanism #1: address to 0xcf8, data from 0xcfc + (reg & 3).
uint32_t cf8_read(PciConfigIo& io, uint8_t bus, uint8_t slot, uint8_t function, uint8_t reg,
                  size_t size) {
  out(io, 0, config_address(bus, slot, function, reg), 4);
  return in(io, 4 + (reg & 3), size);
}
void cf8_write(PciConfigIo& io, uint8_t slot, uint8_t reg, uint32_t value, size_t size) {
  out(io, 0, config_address(0, slot, 0, reg), 4);
  out(io, 4 + (reg & 3), value, size);
}

uint64_t ecam_offset(uint8_t bus, uint8_t slot, uint8_t function, uint16_t reg) {
  return uint64_t{bus} << 20 | uint64_t{slot} << 15 | uint64_t{function} << 12 | reg;
}
uint32_t ecam_read(PciConfigEcam& ecam, uint64_t offset, size_t size) {
  std::array<uint8_t, 8> bytes{};
  ecam.read(offset, std::span<uint8_t>(bytes.data(), size));
  uint32_t value = 0;
  for (size_t i = 0; i < size && i < 4; ++i) value |= uint32_t{bytes[i]} << (8 * i);
  return value;
}
void ecam_write(PciConfigEcam& ecam, uint64_t offset, uint32_t value, size_t size) {
  std::array<uint8_t, 8> bytes{};
  for (size_t i = 0; i < 4; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
  ecam.write(offset, std::span<const uint8_t>(bytes.data(), size));
}

TEST(PciRoot, HostBridgeSitsAtSlotZero) {
  auto root = std::make_shared<PciRoot>();
  EXPECT_EQ(root->config_read(0, 0, 0, kRegVendorId, 4), kHostBridgeIds);
  EXPECT_EQ(root->config_read(0, 0, 0, kRegRevisionId, 4) >> 8, kHostBridgeClassCode);
  EXPECT_EQ(root->config_read(0, 0, 0, kRegHeaderType, 1), 0u);
  EXPECT_EQ(root->config_read(0, 0, 0, kRegBar0, 4), 0u);
  ASSERT_NE(root->device(0), nullptr);
  EXPECT_EQ(root->device(32), nullptr);
}

TEST(PciRoot, AddDeviceFillsSlotsOneToThirtyOne) {
  PciRoot root;
  EXPECT_FALSE(root.add_device(nullptr));
  for (uint8_t expected = 1; expected < kSlotsPerBus; ++expected) {
    auto slot = root.add_device(std::make_shared<FakePciDevice>());
    ASSERT_TRUE(slot);
    EXPECT_EQ(*slot, expected);
  }
  auto full = root.add_device(std::make_shared<FakePciDevice>());
  ASSERT_FALSE(full);
  EXPECT_NE(full.error().message().find("no free slot"), std::string::npos);
}

TEST(PciConfigIo, AddressRegisterLatchesOnlyDwordWrites) {
  PciConfigIo io(std::make_shared<PciRoot>());
  out(io, 0, 0xffff'ffff, 4);
  EXPECT_EQ(in(io, 0, 4), 0x80ff'fffcu);  // reserved bits 30:24 and bits 1:0 read 0
  out(io, 0, 0x8000'0800, 4);
  out(io, 0, 0x12, 1);  // byte and word writes pass through as ordinary I/O
  out(io, 2, 0x3456, 2);
  out(io, 3, 0x00, 1);
  EXPECT_EQ(io.address(), 0x8000'0800u);
  EXPECT_EQ(in(io, 0, 1), 0xffu);  // not CONFIG_ADDRESS: nothing answers
  EXPECT_EQ(in(io, 1, 2), 0xffffu);
  EXPECT_EQ(in(io, 0, 4), 0x8000'0800u);
}

TEST(PciConfigIo, EnableBitGatesTheDataPort) {
  auto root = std::make_shared<PciRoot>();
  PciConfigIo io(root);
  out(io, 0, config_address(0, 0, 0, 0) & 0x7fff'ffff, 4);
  EXPECT_EQ(in(io, 4, 4), 0xffff'ffffu);
  out(io, 0, config_address(0, 0, 0, kRegInterruptLine) & 0x7fff'ffff, 4);
  out(io, 4, 0x0b, 1);  // dropped
  EXPECT_EQ(root->config_read(0, 0, 0, kRegInterruptLine, 1), 0u);
  out(io, 0, config_address(0, 0, 0, 0), 4);
  EXPECT_EQ(in(io, 4, 4), kHostBridgeIds);
}

TEST(PciConfigIo, ByteWordAndDwordAccessesAtEveryOffset) {
  auto root = std::make_shared<PciRoot>();
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>()));
  PciConfigIo io(root);
  for (uint8_t slot : {0, 1}) {
    for (uint16_t dword = 0; dword < 0x40; dword += 4) {
      const uint32_t whole = root->config_read(0, slot, 0, dword, 4);
      EXPECT_EQ(cf8_read(io, 0, slot, 0, static_cast<uint8_t>(dword), 4), whole);
      for (uint8_t byte = 0; byte < 4; ++byte) {
        const auto reg = static_cast<uint8_t>(dword + byte);
        EXPECT_EQ(cf8_read(io, 0, slot, 0, reg, 1), (whole >> (8 * byte)) & 0xff)
            << "slot " << int{slot} << " reg " << int{reg};
        if (byte <= 2) {
          EXPECT_EQ(cf8_read(io, 0, slot, 0, reg, 2), (whole >> (8 * byte)) & 0xffff)
              << "slot " << int{slot} << " reg " << int{reg};
        }
      }
      // A word at 0xcff or a dword at 0xcfd would cross 0xcff: all ones.
      out(io, 0, config_address(0, slot, 0, static_cast<uint8_t>(dword)), 4);
      EXPECT_EQ(in(io, 5, 4), 0xffff'ffffu);
      EXPECT_EQ(in(io, 7, 2), 0xffffu);
    }
  }
  EXPECT_EQ(cf8_read(io, 0, 1, 0, kRegVendorId, 4), kFakeIds);
}

TEST(PciConfigIo, WritesReachTheRegisterAtTheDataPortOffset) {
  auto root = std::make_shared<PciRoot>();
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>()));
  PciConfigIo io(root);
  cf8_write(io, 1, kRegInterruptLine, 0x0a, 1);  // 0xcfc
  cf8_write(io, 1, kRegCacheLineSize, 0x10, 1);
  EXPECT_EQ(root->config_read(0, 1, 0, kRegInterruptLine, 4), 0x0000'010au);
  EXPECT_EQ(root->config_read(0, 1, 0, kRegCacheLineSize, 1), 0x10u);
  cf8_write(io, 1, kRegCommand, kCommandBusMaster, 2);  // 0xcfc, word
  cf8_write(io, 1, kRegStatus, 0xffff, 2);              // 0xcfe, word: RW1C, none set
  cf8_write(io, 1, kRegVendorId + 1, 0x00, 1);          // 0xcfd: read-only
  EXPECT_EQ(root->config_read(0, 1, 0, kRegCommand, 4), uint32_t{kCommandBusMaster});
  EXPECT_EQ(root->config_read(0, 1, 0, kRegVendorId, 4), kFakeIds);
}

TEST(PciConfigIo, AbsentFunctionsReadAllOnes) {
  auto root = std::make_shared<PciRoot>();
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>()));
  PciConfigIo io(root);
  EXPECT_EQ(cf8_read(io, 0, 5, 0, 0, 4), 0xffff'ffffu);  // empty slot
  EXPECT_EQ(cf8_read(io, 0, 1, 1, 0, 4), 0xffff'ffffu);  // function 1
  EXPECT_EQ(cf8_read(io, 1, 0, 0, 0, 4), 0xffff'ffffu);  // bus 1
  EXPECT_EQ(cf8_read(io, 255, 31, 7, 0xfc, 2), 0xffffu);
  EXPECT_EQ(cf8_read(io, 0, 5, 0, 0x3d, 1), 0xffu);
  cf8_write(io, 5, kRegCommand, 0xffff, 2);  // dropped, no crash
}

TEST(PciEcam, DecodesBusDeviceFunctionAndRegister) {
  auto root = std::make_shared<PciRoot>();
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>()));
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>(std::vector<BarInfo>{}, std::nullopt,
                                                               kExtendedConfigSpaceSize)));
  PciConfigEcam ecam(root);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 0, 0, 0), 4), kHostBridgeIds);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 1, 0, 0), 4), kFakeIds);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 1, 0, 2), 2), kFakeDeviceId);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 1, 0, 0x3d), 1), 1u);  // INTA#
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 1, 1, 0), 4), 0xffff'ffffu);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(1, 1, 0, 0), 4), 0xffff'ffffu);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(255, 31, 7, 0xffc), 4), 0xffff'ffffu);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 3, 0, 0), 4), 0xffff'ffffu);
  // Extended configuration space: only functions that have it.
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 1, 0, 0x100), 4), 0xffff'ffffu);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 2, 0, 0x100), 4), 0u);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 2, 0, 0xffc), 4), 0u);
  EXPECT_EQ(ecam_read(ecam, uint64_t{1} << 28, 4), 0xffff'ffffu);  // past the window
}

TEST(PciEcam, MalformedAccessesAreHarmless) {
  auto root = std::make_shared<PciRoot>();
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>()));
  PciConfigEcam ecam(root);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 1, 0, 3), 2), 0xffffu);  // crosses a dword
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 1, 0, 2), 4), 0xffff'ffffu);
  std::array<uint8_t, 8> qword{};
  ecam.read(ecam_offset(0, 1, 0, 0), qword);
  EXPECT_EQ(qword, (std::array<uint8_t, 8>{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
  std::array<uint8_t, 3> three{};
  ecam.read(ecam_offset(0, 1, 0, 0), three);
  EXPECT_EQ(three, (std::array<uint8_t, 3>{0xff, 0xff, 0xff}));
  ecam_write(ecam, ecam_offset(0, 1, 0, kRegInterruptLine - 1), 0xffff, 2);
  ecam.write(ecam_offset(0, 1, 0, kRegInterruptLine), qword);
  ecam_write(ecam, ecam_offset(0, 1, 0, 0x200), 0xffff'ffff, 4);  // beyond 256 bytes
  EXPECT_EQ(root->config_read(0, 1, 0, kRegInterruptLine, 1), 0u);
}

TEST(PciEcam, ReachesTheSameSpaceAsPortIo) {
  auto root = std::make_shared<PciRoot>();
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>()));
  PciConfigEcam ecam(root);
  PciConfigIo io(root);
  ecam_write(ecam, ecam_offset(0, 1, 0, kRegInterruptLine), 0x0b, 1);
  EXPECT_EQ(cf8_read(io, 0, 1, 0, kRegInterruptLine, 1), 0x0bu);
  cf8_write(io, 1, kRegCacheLineSize, 0x40, 1);
  EXPECT_EQ(ecam_read(ecam, ecam_offset(0, 1, 0, kRegCacheLineSize), 1), 0x40u);
}

TEST(PciBarMove, ReportedWhenDecodingStartsMovesAndStops) {
  auto root = std::make_shared<PciRoot>();
  auto device = std::make_shared<FakePciDevice>(std::vector<BarInfo>{
      {.index = 0, .size = 0x4000, .kind = BarKind::kMemory32},
      {.index = 1, .size = 0x20, .kind = BarKind::kIo},
      {.index = 2, .size = 0x1'0000, .kind = BarKind::kMemory64, .prefetchable = true}});
  ASSERT_TRUE(device->config.set_bar_address(0, 0xc000'0000));
  ASSERT_TRUE(device->config.set_bar_address(1, 0xc000));
  ASSERT_TRUE(device->config.set_bar_address(2, 0x1'4000'0000));
  auto slot = root->add_device(device);
  ASSERT_TRUE(slot);
  std::vector<BarMove> moves;
  root->set_bar_move_listener([&](const BarMove& move) { moves.push_back(move); });
  PciConfigIo io(root);

  // Enabling memory decode maps both memory BARs; the I/O BAR waits for I/O decode.
  cf8_write(io, *slot, kRegCommand, kCommandMemorySpace, 2);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_EQ(moves[0].slot, *slot);
  EXPECT_EQ(moves[0].bar.index, 0);
  EXPECT_EQ(moves[0].bar.size, 0x4000u);
  EXPECT_FALSE(moves[0].old_address);
  EXPECT_EQ(moves[0].new_address, 0xc000'0000u);
  EXPECT_EQ(moves[1].bar.index, 2);
  EXPECT_EQ(moves[1].bar.kind, BarKind::kMemory64);
  EXPECT_EQ(moves[1].new_address, 0x1'4000'0000u);
  ASSERT_EQ(device->moves.size(), 2u);  // the device heard the same
  EXPECT_EQ(device->moves[1].index, 2);
  moves.clear();

  cf8_write(io, *slot, kRegCommand, kCommandMemorySpace | kCommandIoSpace, 2);
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].bar.kind, BarKind::kIo);
  EXPECT_EQ(moves[0].new_address, 0xc000u);
  moves.clear();

  // Reprogramming a BAR while decoding moves it in one step.
  cf8_write(io, *slot, kRegBar0, 0xc001'0000, 4);
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].old_address, 0xc000'0000u);
  EXPECT_EQ(moves[0].new_address, 0xc001'0000u);
  moves.clear();

  // The high half of a 64-bit BAR moves it too.
  cf8_write(io, *slot, kRegBar0 + 12, 0x2, 4);
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].old_address, 0x1'4000'0000u);
  EXPECT_EQ(moves[0].new_address, 0x2'4000'0000u);
  moves.clear();

  // Sizing while decoding unmaps the BAR until the address is restored.
  cf8_write(io, *slot, kRegBar0, 0xffff'ffff, 4);
  EXPECT_EQ(cf8_read(io, 0, *slot, 0, kRegBar0, 4), 0xffff'c000u);
  cf8_write(io, *slot, kRegBar0, 0xc001'0000, 4);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_FALSE(moves[0].new_address);
  EXPECT_EQ(moves[1].new_address, 0xc001'0000u);
  moves.clear();

  // Writes that change nothing report nothing; disabling decode unmaps everything.
  cf8_write(io, *slot, kRegInterruptLine, 5, 1);
  cf8_write(io, *slot, kRegBar0, 0xc001'0000, 4);
  EXPECT_TRUE(moves.empty());
  cf8_write(io, *slot, kRegCommand, 0, 2);
  ASSERT_EQ(moves.size(), 3u);
  for (const auto& move : moves) EXPECT_FALSE(move.new_address);
  moves.clear();

  // With decoding off, sizing and programming report nothing (what Linux does).
  cf8_write(io, *slot, kRegBar0, 0xffff'ffff, 4);
  cf8_write(io, *slot, kRegBar0, 0xc002'0000, 4);
  EXPECT_TRUE(moves.empty());
}

TEST(PciBarRegion, ForwardsBarAccessesToTheDevice) {
  auto device = std::make_shared<FakePciDevice>(
      std::vector<BarInfo>{{.index = 0, .size = 0x4000, .kind = BarKind::kMemory32}},
      MsixLayout{.vectors = 2,
                 .table_bar = 0,
                 .table_offset = 0x1000,
                 .pba_bar = 0,
                 .pba_offset = 0x2000});
  Bus mmio("mmio");
  ASSERT_TRUE(mmio.insert(std::make_shared<PciBarRegion>(device, 0), 0xc000'0000, 0x4000, "bar0"));
  const std::array<uint8_t, 4> value = {0x11, 0x22, 0x33, 0x44};
  ASSERT_TRUE(mmio.write(0xc000'0010, value));
  EXPECT_EQ(device->memory[0][0x10], 0x11);
  // The MSI-X table inside the BAR is served by the table.
  ASSERT_TRUE(mmio.write(0xc000'1008, value));
  EXPECT_EQ(device->msix->entry(0).data, 0x4433'2211u);
  std::array<uint8_t, 4> control{};
  ASSERT_TRUE(mmio.read(0xc000'101c, control));
  EXPECT_EQ(control[0], 1);  // vector 1 masked
}

// Enumerates bus 0 like a guest: CONFIG_ADDRESS/CONFIG_DATA through a port I/O Bus, and the
// same through the ECAM window on an MMIO Bus.
TEST(PciEnumeration, GuestScanThroughTheBuses) {
  auto root = std::make_shared<PciRoot>();
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>()));
  ASSERT_TRUE(root->add_device(std::make_shared<FakePciDevice>()));
  Bus pio("pio");
  ASSERT_TRUE(pio.insert(std::make_shared<PciConfigIo>(root), x86::kPciConfigAddressPort,
                         kPciConfigIoSize, "pci-config"));
  Bus mmio("mmio");
  ASSERT_TRUE(mmio.insert(std::make_shared<PciConfigEcam>(root), x86::kPciEcamAddr,
                          x86::kPciEcamSize, "pci-ecam"));
  ASSERT_EQ(x86::kPciConfigDataPort, x86::kPciConfigAddressPort + 4);
  ASSERT_EQ(x86::kPciEcamSize, 256 * kEcamBytesPerBus);

  std::vector<uint16_t> vendors;
  std::vector<uint16_t> ecam_vendors;
  for (uint8_t slot = 0; slot < kSlotsPerBus; ++slot) {
    const uint32_t address = config_address(0, slot, 0, 0);
    const std::array<uint8_t, 4> address_bytes = {
        static_cast<uint8_t>(address), static_cast<uint8_t>(address >> 8),
        static_cast<uint8_t>(address >> 16), static_cast<uint8_t>(address >> 24)};
    ASSERT_TRUE(pio.write(x86::kPciConfigAddressPort, address_bytes));
    std::array<uint8_t, 2> vendor{};
    ASSERT_TRUE(pio.read(x86::kPciConfigDataPort, vendor));
    vendors.push_back(static_cast<uint16_t>(vendor[0] | vendor[1] << 8));
    ASSERT_TRUE(mmio.read(x86::kPciEcamAddr + ecam_offset(0, slot, 0, 0), vendor));
    ecam_vendors.push_back(static_cast<uint16_t>(vendor[0] | vendor[1] << 8));
  }
  std::vector<uint16_t> expected(kSlotsPerBus, 0xffff);
  expected[0] = kHostBridgeVendorId;
  expected[1] = kFakeVendorId;
  expected[2] = kFakeVendorId;
  EXPECT_EQ(vendors, expected);
  EXPECT_EQ(ecam_vendors, expected);

  // A word read at 0xcfe returns the device id half of the dword.
  std::array<uint8_t, 4> address_bytes = {0x00, 0x08, 0x00, 0x80};  // 00:01.0, reg 0
  ASSERT_TRUE(pio.write(x86::kPciConfigAddressPort, address_bytes));
  std::array<uint8_t, 2> device_id{};
  ASSERT_TRUE(pio.read(x86::kPciConfigDataPort + 2, device_id));
  EXPECT_EQ(device_id[0] | device_id[1] << 8, kFakeDeviceId);
}

}  // namespace
}  // namespace skiff::pci
