// SPDX-License-Identifier: Apache-2.0
#include "pci/msix_table.h"

#include <gtest/gtest.h>

#include <array>
#include <tuple>
#include <vector>

namespace skiff::pci {
namespace {

constexpr uint8_t kBar = 1;
constexpr uint32_t kTable = 0x1000;
constexpr uint32_t kPba = 0x3000;

struct Fixture {
  explicit Fixture(uint16_t vectors = 4) {
    auto created = MsixTable::create(
        MsixLayout{.vectors = vectors,
                   .table_bar = kBar,
                   .table_offset = kTable,
                   .pba_bar = kBar,
                   .pba_offset = kPba},
        [this](uint64_t address, uint32_t data) { delivered.emplace_back(address, data); });
    EXPECT_TRUE(created) << created.error().message();
    table = *created;
    table->set_vector_changed_hook(
        [this](uint16_t vector, uint64_t address, uint32_t data, bool masked) {
          changes.emplace_back(vector, address, data, masked);
        });
  }

  void write32(uint64_t offset, uint32_t value) {
    const std::array<uint8_t, 4> bytes = {
        static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
        static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
    EXPECT_TRUE(table->bar_write(kBar, offset, bytes));
  }
  uint32_t read32(uint64_t offset) const {
    std::array<uint8_t, 4> bytes{};
    EXPECT_TRUE(table->bar_read(kBar, offset, bytes));
    return bytes[0] | bytes[1] << 8 | bytes[2] << 16 | static_cast<uint32_t>(bytes[3]) << 24;
  }
  // Programs vector `v` with an address and data, leaving it masked or not.
  void program(uint16_t v, uint64_t address, uint32_t data, bool masked) {
    const uint64_t entry = kTable + v * kMsixEntrySize;
    write32(entry + 0, static_cast<uint32_t>(address));
    write32(entry + 4, static_cast<uint32_t>(address >> 32));
    write32(entry + 8, data);
    write32(entry + 12, masked ? 1 : 0);
  }

  std::shared_ptr<MsixTable> table;
  std::vector<std::pair<uint64_t, uint32_t>> delivered;
  std::vector<std::tuple<uint16_t, uint64_t, uint32_t, bool>> changes;
};

TEST(PciMsix, EntriesResetMaskedAndReadBack) {
  Fixture f;
  for (uint16_t v = 0; v < 4; ++v) {
    EXPECT_EQ(f.read32(kTable + v * 16 + 12), 1u) << "vector " << v;  // Mask bit set
    EXPECT_EQ(f.read32(kTable + v * 16), 0u);
  }
  f.program(2, 0xfee0'100c, 0x4041, false);
  EXPECT_EQ(f.read32(kTable + 0x20), 0xfee0'100cu);
  EXPECT_EQ(f.read32(kTable + 0x24), 0u);
  EXPECT_EQ(f.read32(kTable + 0x28), 0x4041u);
  EXPECT_EQ(f.read32(kTable + 0x2c), 0u);
  // Address bits 1:0 are zero, Vector Control bits 31:1 reserved (read 0).
  f.write32(kTable + 0x20, 0xfee0'0003);
  f.write32(kTable + 0x2c, 0xffff'fffe);
  EXPECT_EQ(f.read32(kTable + 0x20), 0xfee0'0000u);
  EXPECT_EQ(f.read32(kTable + 0x2c), 0u);
  // QWORD accesses cover two DWORDs.
  const std::array<uint8_t, 8> qword = {0x00, 0x20, 0xe0, 0xfe, 0x01, 0x00, 0x00, 0x00};
  EXPECT_TRUE(f.table->bar_write(kBar, kTable + 0x10, qword));
  EXPECT_EQ(f.table->entry(1).address, 0x1'fee0'2000u);
  std::array<uint8_t, 8> back{};
  EXPECT_TRUE(f.table->bar_read(kBar, kTable + 0x10, back));
  EXPECT_EQ(back, qword);
  // Reads of any size are served.
  std::array<uint8_t, 1> byte{};
  EXPECT_TRUE(f.table->bar_read(kBar, kTable + 0x22, byte));
  EXPECT_EQ(byte[0], 0xe0);
}

TEST(PciMsix, UnalignedOrNarrowWritesAreDropped) {
  Fixture f;
  const std::array<uint8_t, 2> word = {0x34, 0x12};
  EXPECT_TRUE(f.table->bar_write(kBar, kTable + 8, word));
  const std::array<uint8_t, 4> dword = {1, 2, 3, 4};
  EXPECT_TRUE(f.table->bar_write(kBar, kTable + 6, dword));
  const std::array<uint8_t, 8> qword{};
  EXPECT_TRUE(f.table->bar_write(kBar, kTable + 4, qword));  // QWORD not QWORD-aligned
  EXPECT_EQ(f.table->entry(0).data, 0u);
  EXPECT_EQ(f.table->entry(0).address, 0u);
  EXPECT_TRUE(f.table->entry(0).masked);
  EXPECT_TRUE(f.changes.empty());
}

TEST(PciMsix, SignalDeliversWhenEnabledAndUnmasked) {
  Fixture f;
  f.program(0, 0xfee0'0000, 0x30, false);
  EXPECT_EQ(f.table->signal(0), MsixSignalResult::kDisabled);  // MSI-X Enable clear
  EXPECT_FALSE(f.table->pending(0));
  f.table->set_control(true, false);
  EXPECT_EQ(f.table->signal(0), MsixSignalResult::kDelivered);
  ASSERT_EQ(f.delivered.size(), 1u);
  EXPECT_EQ(f.delivered[0], std::make_pair(uint64_t{0xfee0'0000}, uint32_t{0x30}));
}

TEST(PciMsix, MaskedVectorIsPendingAndDeliveredOnUnmask) {
  Fixture f;
  f.table->set_control(true, false);
  f.program(3, 0xfee0'1000, 0x41, true);
  EXPECT_EQ(f.table->signal(3), MsixSignalResult::kPending);
  EXPECT_TRUE(f.delivered.empty());
  EXPECT_TRUE(f.table->pending(3));
  EXPECT_EQ(f.read32(kPba), 1u << 3);
  f.write32(kTable + 3 * 16 + 12, 0);  // unmask
  ASSERT_EQ(f.delivered.size(), 1u);
  EXPECT_EQ(f.delivered[0], std::make_pair(uint64_t{0xfee0'1000}, uint32_t{0x41}));
  EXPECT_FALSE(f.table->pending(3));
  EXPECT_EQ(f.read32(kPba), 0u);
  // Unmasking again without a pending message sends nothing.
  f.write32(kTable + 3 * 16 + 12, 1);
  f.write32(kTable + 3 * 16 + 12, 0);
  EXPECT_EQ(f.delivered.size(), 1u);
}

TEST(PciMsix, FunctionMaskHoldsEveryVector) {
  Fixture f;
  f.program(0, 0xfee0'0000, 0x20, false);
  f.program(1, 0xfee0'0000, 0x21, false);
  f.program(2, 0xfee0'0000, 0x22, true);
  f.table->set_control(true, true);
  EXPECT_EQ(f.table->signal(0), MsixSignalResult::kPending);
  EXPECT_EQ(f.table->signal(2), MsixSignalResult::kPending);
  EXPECT_TRUE(f.delivered.empty());
  EXPECT_EQ(f.read32(kPba), 0b101u);
  f.table->set_control(true, false);  // clear Function Mask: vector 0 goes, 2 stays masked
  ASSERT_EQ(f.delivered.size(), 1u);
  EXPECT_EQ(f.delivered[0].second, 0x20u);
  EXPECT_TRUE(f.table->pending(2));
  EXPECT_FALSE(f.table->pending(0));
}

TEST(PciMsix, OutOfRangeVectorDoesNothing) {
  Fixture f;
  f.table->set_control(true, false);
  EXPECT_EQ(f.table->signal(4), MsixSignalResult::kInvalidVector);
  EXPECT_EQ(f.table->signal(0xffff), MsixSignalResult::kInvalidVector);
  EXPECT_FALSE(f.table->pending(4));
  EXPECT_TRUE(f.table->entry(4).masked);  // a default entry
  EXPECT_TRUE(f.delivered.empty());
}

TEST(PciMsix, PbaIsReadOnlyAndOutsideAccessesAreNotClaimed) {
  Fixture f;
  f.table->set_control(true, false);
  EXPECT_EQ(f.table->signal(1), MsixSignalResult::kPending);
  f.write32(kPba, 0);  // claimed but ignored
  EXPECT_TRUE(f.table->pending(1));
  std::array<uint8_t, 4> data{};
  EXPECT_FALSE(f.table->bar_read(kBar, 0, data));
  EXPECT_FALSE(f.table->bar_read(kBar + 1, kTable, data));
  EXPECT_FALSE(f.table->bar_read(kBar, kTable + 4 * 16, data));      // just past the table
  EXPECT_FALSE(f.table->bar_read(kBar, kTable + 4 * 16 - 2, data));  // straddles the end
  EXPECT_FALSE(f.table->bar_write(kBar, kPba + 8, data));            // past the 8-byte PBA
}

TEST(PciMsix, VectorChangedHookReportsEffectiveMask) {
  Fixture f(2);
  f.program(0, 0xfee0'0000, 0x55, false);
  ASSERT_FALSE(f.changes.empty());
  // MSI-X is disabled, so every change reports masked.
  EXPECT_EQ(f.changes.back(), std::make_tuple(uint16_t{0}, uint64_t{0xfee0'0000}, 0x55u, true));
  f.changes.clear();
  f.table->set_control(true, false);
  ASSERT_EQ(f.changes.size(), 2u);
  EXPECT_EQ(f.changes[0], std::make_tuple(uint16_t{0}, uint64_t{0xfee0'0000}, 0x55u, false));
  EXPECT_EQ(f.changes[1], std::make_tuple(uint16_t{1}, uint64_t{0}, 0u, true));
  f.changes.clear();
  f.write32(kTable + 8, 0x55);  // the same value: no change
  EXPECT_TRUE(f.changes.empty());
  f.write32(kTable + 12, 1);
  ASSERT_EQ(f.changes.size(), 1u);
  EXPECT_TRUE(std::get<3>(f.changes[0]));
}

TEST(PciMsix, ResetMasksEverything) {
  Fixture f;
  f.table->set_control(true, false);
  f.program(0, 0xfee0'0000, 1, true);
  EXPECT_EQ(f.table->signal(0), MsixSignalResult::kPending);
  f.table->reset();
  EXPECT_FALSE(f.table->enabled());
  EXPECT_FALSE(f.table->pending(0));
  EXPECT_EQ(f.table->entry(0).address, 0u);
  EXPECT_TRUE(f.table->entry(0).masked);
}

TEST(PciMsix, CreateValidatesTheLayout) {
  EXPECT_FALSE(MsixTable::create({.vectors = 0}, {}));
  EXPECT_FALSE(MsixTable::create({.vectors = kMsixMaxVectors + 1}, {}));
  EXPECT_TRUE(MsixTable::create({.vectors = kMsixMaxVectors, .pba_offset = 0x8000}, {}));
  EXPECT_FALSE(MsixTable::create({.vectors = 1, .table_offset = 4, .pba_offset = 0x100}, {}));
  EXPECT_FALSE(MsixTable::create({.vectors = 1, .table_bar = 6, .pba_offset = 0x100}, {}));
  // Table [0, 0x40) and PBA at 0x38 overlap in the same BAR; in another BAR they do not.
  auto overlap = MsixTable::create({.vectors = 4, .pba_offset = 0x38}, {});
  ASSERT_FALSE(overlap);
  EXPECT_NE(overlap.error().message().find("overlap"), std::string::npos);
  EXPECT_TRUE(MsixTable::create({.vectors = 4, .pba_bar = 1, .pba_offset = 0x38}, {}));
  EXPECT_TRUE(MsixTable::create({.vectors = 4, .pba_offset = 0x40}, {}));
}

TEST(PciMsix, LargeTablesUseSeveralPbaQwords) {
  Fixture f(130);
  EXPECT_EQ(f.table->pba_bytes(), 24u);
  f.table->set_control(true, false);
  EXPECT_EQ(f.table->signal(129), MsixSignalResult::kPending);
  std::array<uint8_t, 8> qword{};
  EXPECT_TRUE(f.table->bar_read(kBar, kPba + 16, qword));
  EXPECT_EQ(qword[0], 0b10);
}

}  // namespace
}  // namespace skiff::pci
