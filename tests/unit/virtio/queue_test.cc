// SPDX-License-Identifier: Apache-2.0
#include "virtio/core/queue.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "virtio/core/virtio_constants.h"
#include "unit/virtio/virtqueue_fake.h"

namespace skiff::virtio {
namespace {

using testing::FakeDescriptor;
using testing::FakeUsedElement;
using testing::kFakeDefaultFeatures;
using testing::VirtqueueFake;

constexpr uint64_t kEventIdxFeatures = kFakeDefaultFeatures | feature_mask(kFeatureRingEventIdx);

std::vector<uint8_t> bytes(std::string_view text) { return {text.begin(), text.end()}; }

// Pops one chain that must be malformed, checks its error mentions `what`, returns it.
void expect_malformed(VirtqueueFake& fake, const std::string& what) {
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_TRUE(chain->malformed());
  EXPECT_NE(chain->error().find(what), std::string::npos) << chain->error();
  EXPECT_TRUE(chain->readable().empty());
  EXPECT_TRUE(chain->writable().empty());
  EXPECT_EQ(chain->readable_len(), 0u);
  EXPECT_EQ(chain->writable_len(), 0u);
  uint16_t head = chain->head_index();
  uint16_t used_before = fake.used_idx();
  fake.queue().add_used(std::move(*chain), 100);
  // Still returned to the guest, with length 0.
  EXPECT_EQ(fake.used_idx(), static_cast<uint16_t>(used_before + 1));
  EXPECT_EQ(fake.used_elem(used_before), (FakeUsedElement{head, 0}));
}

// ---- Configuration and activation -----------------------------------------------------------

TEST(VirtqueueConfig, FakeLayoutActivates) {
  VirtqueueFake fake(16);
  EXPECT_TRUE(fake.queue().active());
  EXPECT_FALSE(fake.queue().event_idx());
  EXPECT_TRUE(fake.queue().indirect_descriptors());
  EXPECT_FALSE(fake.queue().pop().has_value());
}

TEST(VirtqueueConfig, SizeMustBeNonZeroPowerOfTwoWithinMax) {
  VirtqueueFake fake(16, kFakeDefaultFeatures, 1 << 20, /*activate_now=*/false);
  for (uint16_t bad : {0, 3, 12, 32}) {
    fake.queue().set_size(bad);
    auto result = fake.activate();
    ASSERT_FALSE(result) << bad;
    EXPECT_NE(result.error().message().find(std::to_string(bad)), std::string::npos);
    EXPECT_FALSE(fake.queue().active());
  }
  fake.queue().set_size(8);
  EXPECT_TRUE(fake.activate());
}

TEST(VirtqueueConfig, MisalignedRingsAreNamed) {
  VirtqueueFake fake(16, kFakeDefaultFeatures, 1 << 20, false);
  Queue& queue = fake.queue();
  queue.set_desc_table_address(fake.desc_table() + 8);
  auto result = queue.validate(fake.memory());
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("descriptor table at 0x100008"), std::string::npos)
      << result.error().message();
  EXPECT_NE(result.error().message().find("16-byte aligned"), std::string::npos);

  queue.set_desc_table_address(fake.desc_table());
  queue.set_avail_ring_address(fake.avail_ring() + 1);
  result = queue.validate(fake.memory());
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("available ring at 0x110001"), std::string::npos)
      << result.error().message();

  queue.set_avail_ring_address(fake.avail_ring() + 2);  // 2-byte alignment is enough
  queue.set_used_ring_address(fake.used_ring() + 2);
  result = queue.validate(fake.memory());
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("used ring at 0x120002"), std::string::npos)
      << result.error().message();
  EXPECT_NE(result.error().message().find("4-byte aligned"), std::string::npos);

  queue.set_used_ring_address(fake.used_ring() + 4);
  EXPECT_TRUE(queue.validate(fake.memory()));
}

TEST(VirtqueueConfig, RingsOutsideRamOrWrappingAreRejected) {
  VirtqueueFake fake(16, kFakeDefaultFeatures, 1 << 20, false);
  Queue& queue = fake.queue();
  queue.set_desc_table_address(0x1000);  // below RAM
  auto result = queue.validate(fake.memory());
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("descriptor table at 0x1000"), std::string::npos);
  EXPECT_NE(result.error().message().find("not inside guest RAM"), std::string::npos);

  // The last 0xf0 bytes of RAM: 256-byte table does not fit.
  queue.set_desc_table_address(fake.ram_end() - 0xf0);
  EXPECT_FALSE(queue.validate(fake.memory()));

  queue.set_desc_table_address(fake.desc_table());
  queue.set_used_ring_address(std::numeric_limits<uint64_t>::max() - 3);  // aligned to 4
  result = queue.validate(fake.memory());
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("used ring"), std::string::npos);
  EXPECT_NE(result.error().message().find("wraps"), std::string::npos) << result.error().message();

  queue.set_used_ring_address(fake.used_ring());
  queue.set_avail_ring_address(fake.ram_end() - 2);
  result = queue.validate(fake.memory());
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("available ring"), std::string::npos);
}

TEST(VirtqueueConfig, PackedRingIsRefused) {
  VirtqueueFake fake(16, kFakeDefaultFeatures | feature_mask(kFeatureRingPacked), 1 << 20, false);
  EXPECT_FALSE(fake.activate());
}

TEST(VirtqueueConfig, ResetReturnsToPowerOnState) {
  VirtqueueFake fake(16);
  fake.chain().readable("x").add();
  fake.queue().reset();
  EXPECT_FALSE(fake.queue().active());
  EXPECT_FALSE(fake.queue().ready());
  EXPECT_EQ(fake.queue().size(), 16);
  EXPECT_EQ(fake.queue().desc_table_address(), 0u);
  EXPECT_FALSE(fake.queue().pop().has_value());
}

// ---- Normal chains ----------------------------------------------------------------------------

TEST(VirtqueuePop, EmptyRingAndInactiveQueueReturnNothing) {
  VirtqueueFake fake(16);
  EXPECT_FALSE(fake.queue().has_available());
  EXPECT_FALSE(fake.queue().pop().has_value());
  Queue inactive(16);
  EXPECT_FALSE(inactive.pop().has_value());
  EXPECT_FALSE(inactive.needs_notification());
}

TEST(VirtqueuePop, ReadableAndWritableChain) {
  VirtqueueFake fake(16);
  auto sent = fake.chain().readable("head").readable("er").writable(8).writable(4).add();
  ASSERT_TRUE(fake.queue().has_available());
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_FALSE(chain->malformed());
  EXPECT_TRUE(chain->pending());
  EXPECT_EQ(chain->head_index(), sent.head);
  ASSERT_EQ(chain->readable().size(), 2u);
  ASSERT_EQ(chain->writable().size(), 2u);
  EXPECT_EQ(chain->readable()[0], sent.readable[0]);
  EXPECT_EQ(chain->writable()[1], sent.writable[1]);
  EXPECT_EQ(chain->readable_len(), 6u);
  EXPECT_EQ(chain->writable_len(), 12u);
  EXPECT_EQ(chain->read_all(1024), bytes("header"));
  EXPECT_EQ(chain->read_all(3), bytes("hea"));

  // write_at spans both writable buffers and stops at their end.
  auto payload = bytes("0123456789abcdef");
  EXPECT_EQ(chain->write_at(2, payload), 10u);
  EXPECT_EQ(fake.read(sent.writable[0].addr, 8), bytes(std::string("\0\0" "012345", 8)));
  EXPECT_EQ(fake.read(sent.writable[1].addr, 4), bytes("6789"));
  EXPECT_EQ(chain->write_at(12, payload), 0u);

  fake.queue().add_used(std::move(*chain), 12);
  EXPECT_FALSE(chain->pending());
  EXPECT_EQ(fake.used_idx(), 1);
  EXPECT_EQ(fake.used_elem(0), (FakeUsedElement{sent.head, 12}));
  EXPECT_FALSE(fake.queue().pop().has_value());
  EXPECT_EQ(fake.queue().stats().chains_popped, 1u);
  EXPECT_EQ(fake.queue().stats().malformed_chains, 0u);
}

TEST(VirtqueuePop, ReadAtOffsetsAcrossBuffers) {
  VirtqueueFake fake(16);
  fake.chain().readable("abc").readable("defg").readable("h").add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  std::vector<uint8_t> out(4);
  EXPECT_EQ(chain->read_at(2, out), 4u);
  EXPECT_EQ(out, bytes("cdef"));
  EXPECT_EQ(chain->read_at(6, out), 2u);  // stops at the end
  EXPECT_EQ(out[0], 'g');
  EXPECT_EQ(out[1], 'h');
  EXPECT_EQ(chain->read_at(8, out), 0u);
  EXPECT_EQ(chain->read_at(std::numeric_limits<uint64_t>::max(), out), 0u);
  EXPECT_EQ(chain->write_at(0, out), 0u);  // no writable buffers
  fake.queue().add_used(std::move(*chain), 0);
}

TEST(VirtqueuePop, UsedRingOrderFollowsAddUsed) {
  VirtqueueFake fake(16);
  std::vector<uint16_t> heads;
  for (int i = 0; i < 3; ++i) heads.push_back(fake.chain().readable("r").writable(16).add().head);
  std::vector<DescriptorChain> chains;
  while (auto chain = fake.queue().pop()) chains.push_back(std::move(*chain));
  ASSERT_EQ(chains.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(chains[i].head_index(), heads[i]);
  // Completed out of order: the used ring records completion order.
  fake.queue().add_used(std::move(chains[2]), 3);
  fake.queue().add_used(std::move(chains[0]), 1);
  fake.queue().add_used(std::move(chains[1]), 2);
  auto used = fake.take_used();
  ASSERT_EQ(used.size(), 3u);
  EXPECT_EQ(used[0], (FakeUsedElement{heads[2], 3}));
  EXPECT_EQ(used[1], (FakeUsedElement{heads[0], 1}));
  EXPECT_EQ(used[2], (FakeUsedElement{heads[1], 2}));
}

TEST(VirtqueuePop, WrittenLengthIsClampedToWritableBuffers) {
  VirtqueueFake fake(16);
  auto sent = fake.chain().readable("r").writable(10).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  fake.queue().add_used(std::move(*chain), 4096);
  EXPECT_EQ(fake.used_elem(0), (FakeUsedElement{sent.head, 10}));
}

TEST(VirtqueuePop, AvailIndexWrapsAtFfff) {
  VirtqueueFake fake(4);
  // 65536 + 5 round trips walk both free-running indexes across 0xffff -> 0.
  uint64_t data = fake.put(bytes("x"));
  for (uint32_t i = 0; i < 65541; ++i) {
    auto sent = fake.chain().readable_at(data, 1).add();
    auto chain = fake.queue().pop();
    ASSERT_TRUE(chain) << i;
    ASSERT_FALSE(chain->malformed()) << i;
    ASSERT_EQ(chain->head_index(), sent.head);
    fake.queue().add_used(std::move(*chain), 0);
  }
  EXPECT_EQ(fake.queue().next_avail(), 5);
  EXPECT_EQ(fake.used_idx(), 5);
  EXPECT_FALSE(fake.queue().broken());
}

TEST(VirtqueuePop, FullRingIsNotAJump) {
  VirtqueueFake fake(8);
  for (int i = 0; i < 8; ++i) fake.chain().readable("x").add();
  int popped = 0;
  while (auto chain = fake.queue().pop()) {
    fake.queue().add_used(std::move(*chain), 0);
    ++popped;
  }
  EXPECT_EQ(popped, 8);
  EXPECT_FALSE(fake.queue().broken());
}

// ---- Indirect descriptors ------------------------------------------------------------------------

TEST(VirtqueueIndirect, IndirectTableChain) {
  VirtqueueFake fake(16);
  auto sent = fake.chain().readable("in").readable("direct").writable(32).indirect().add();
  EXPECT_EQ(fake.descriptor(sent.head).flags, kDescFlagIndirect);
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  ASSERT_FALSE(chain->malformed()) << chain->error();
  EXPECT_EQ(chain->head_index(), sent.head);
  EXPECT_EQ(chain->read_all(100), bytes("indirect"));
  EXPECT_EQ(chain->writable_len(), 32u);
  EXPECT_EQ(chain->writable()[0], sent.writable[0]);
  fake.queue().add_used(std::move(*chain), 32);
  EXPECT_EQ(fake.used_elem(0), (FakeUsedElement{sent.head, 32}));
}

TEST(VirtqueueIndirect, DirectDescriptorsFollowedByIndirect) {
  // §2.7.5.3.2: the device MUST handle normal descriptors followed by one indirect one.
  VirtqueueFake fake(16);
  uint64_t data = fake.put(bytes("tail"));
  uint64_t table = fake.alloc(2 * kDescriptorSize);
  uint64_t status = fake.alloc(1);
  fake.put_obj(table, FakeDescriptor{data, 4, kDescFlagNext, 1});
  fake.put_obj(table + 16, FakeDescriptor{status, 1, kDescFlagWrite, 0});
  // The WRITE flag on the pointer to the table is ignored (§2.7.5.3.2).
  fake.chain().readable("head-").raw(table, 32, kDescFlagIndirect | kDescFlagWrite).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  ASSERT_FALSE(chain->malformed()) << chain->error();
  EXPECT_EQ(chain->read_all(100), bytes("head-tail"));
  EXPECT_EQ(chain->writable_len(), 1u);
  fake.queue().add_used(std::move(*chain), 1);
}

TEST(VirtqueueIndirect, WithoutNegotiatedFeatureIsMalformed) {
  VirtqueueFake fake(16, feature_mask(kFeatureVersion1));
  fake.chain().readable("x").indirect().add();
  expect_malformed(fake, "VIRTIO_F_INDIRECT_DESC");
}

TEST(VirtqueueIndirect, NestedIndirectIsMalformed) {
  VirtqueueFake fake(16);
  uint64_t inner = fake.alloc(16);
  fake.put_obj(inner, FakeDescriptor{fake.put(bytes("x")), 1, 0, 0});
  uint64_t outer = fake.alloc(16);
  fake.put_obj(outer, FakeDescriptor{inner, 16, kDescFlagIndirect, 0});
  fake.chain().raw(outer, 16, kDescFlagIndirect).add();
  expect_malformed(fake, "inside an indirect table");
}

TEST(VirtqueueIndirect, IndirectWithNextIsMalformed) {
  VirtqueueFake fake(16);
  uint64_t table = fake.alloc(16);
  fake.put_obj(table, FakeDescriptor{fake.put(bytes("x")), 1, 0, 0});
  // The builder sets NEXT on every descriptor but the last.
  fake.chain().raw(table, 16, kDescFlagIndirect).readable("y").add();
  expect_malformed(fake, "NEXT");
}

TEST(VirtqueueIndirect, TableLengthMustBeNonZeroMultipleOf16) {
  VirtqueueFake fake(16);
  uint64_t table = fake.alloc(64);
  fake.put_obj(table, FakeDescriptor{fake.put(bytes("x")), 1, 0, 0});
  fake.chain().raw(table, 24, kDescFlagIndirect).add();
  expect_malformed(fake, "multiple of 16");
  fake.chain().raw(table, 0, kDescFlagIndirect).add();
  expect_malformed(fake, "multiple of 16");
}

TEST(VirtqueueIndirect, TableLargerThanQueueSizeIsMalformed) {
  VirtqueueFake fake(4);
  uint64_t table = fake.alloc(5 * 16);
  for (int i = 0; i < 5; ++i) fake.put_obj(table + 16 * i, FakeDescriptor{fake.put(bytes("x")), 1, 0, 0});
  fake.chain().raw(table, 5 * 16, kDescFlagIndirect).add();
  expect_malformed(fake, "longer than the queue size");
  // Three direct descriptors plus a table of two: five buffers in a queue of four.
  fake.chain().readable("a").readable("b").readable("c").raw(table, 2 * 16, kDescFlagIndirect).add();
  expect_malformed(fake, "longer than the queue size");
  // Exactly the queue size is fine.
  fake.chain().raw(table, 4 * 16, kDescFlagIndirect).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  EXPECT_FALSE(chain->malformed()) << chain->error();
}

TEST(VirtqueueIndirect, TableOutsideRamIsMalformed) {
  VirtqueueFake fake(16);
  fake.chain().raw(0x1000, 32, kDescFlagIndirect).add();
  expect_malformed(fake, "indirect table [0x1000");
  fake.chain().raw(fake.ram_end() - 16, 32, kDescFlagIndirect).add();
  expect_malformed(fake, "not inside guest RAM");
  fake.chain().raw(std::numeric_limits<uint64_t>::max() - 15, 32, kDescFlagIndirect).add();
  expect_malformed(fake, "not inside guest RAM");
}

TEST(VirtqueueIndirect, UnalignedTableAddressIsAccepted) {
  // The spec sets no alignment for indirect tables (only for the rings, §2.7.1).
  VirtqueueFake fake(16);
  uint64_t table = fake.alloc(40) + 3;
  fake.put_obj(table, FakeDescriptor{fake.put(bytes("ok")), 2, 0, 0});
  fake.chain().raw(table, 16, kDescFlagIndirect).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  ASSERT_FALSE(chain->malformed()) << chain->error();
  EXPECT_EQ(chain->read_all(10), bytes("ok"));
}

TEST(VirtqueueIndirect, NextOutsideTableIsMalformed) {
  VirtqueueFake fake(16);
  uint64_t table = fake.alloc(32);
  fake.put_obj(table, FakeDescriptor{fake.put(bytes("x")), 1, kDescFlagNext, 2});
  fake.put_obj(table + 16, FakeDescriptor{fake.put(bytes("y")), 1, 0, 0});
  fake.chain().raw(table, 32, kDescFlagIndirect).add();
  expect_malformed(fake, "outside the indirect table");
}

TEST(VirtqueueIndirect, LoopInsideTableIsMalformed) {
  VirtqueueFake fake(16);
  uint64_t table = fake.alloc(32);
  uint64_t data = fake.put(bytes("x"));
  fake.put_obj(table, FakeDescriptor{data, 1, kDescFlagNext, 1});
  fake.put_obj(table + 16, FakeDescriptor{data, 1, kDescFlagNext, 0});
  fake.chain().raw(table, 32, kDescFlagIndirect).add();
  expect_malformed(fake, "longer than the queue size");
}

// ---- Malformed chains --------------------------------------------------------------------------

TEST(VirtqueueMalformed, BufferOutsideRam) {
  VirtqueueFake fake(16);
  fake.chain().readable_at(0x1000, 16).add();  // below RAM
  expect_malformed(fake, "readable buffer [0x1000");
  fake.chain().readable("ok").writable_at(fake.ram_end() - 8, 16).add();  // crosses the end
  expect_malformed(fake, "writable buffer");
  fake.chain().writable_at(fake.ram_end(), 1).add();
  expect_malformed(fake, "not inside guest RAM");
  // The last byte of RAM is fine.
  fake.chain().writable_at(fake.ram_end() - 1, 1).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  EXPECT_FALSE(chain->malformed());
}

TEST(VirtqueueMalformed, AddressPlusLengthOverflowsAtTopOfAddressSpace) {
  VirtqueueFake fake(16);
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  fake.chain().readable_at(kMax - 0xf, 0x20).add();
  expect_malformed(fake, "not inside guest RAM");
  fake.chain().writable_at(kMax, 0xffffffff).add();
  expect_malformed(fake, "not inside guest RAM");
  EXPECT_EQ(fake.queue().stats().malformed_chains, 2u);
}

TEST(VirtqueueMalformed, ZeroLengthDescriptorsAreAcceptedAndNotListed) {
  VirtqueueFake fake(16);
  // A zero-length descriptor's address is never dereferenced, so even a wild one is fine.
  fake.chain().readable_at(0xdead0000dead, 0).readable("data").writable_at(0, 0).writable(4).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  ASSERT_FALSE(chain->malformed()) << chain->error();
  EXPECT_EQ(chain->readable().size(), 1u);
  EXPECT_EQ(chain->writable().size(), 1u);
  EXPECT_EQ(chain->read_all(100), bytes("data"));
  fake.queue().add_used(std::move(*chain), 4);

  fake.chain().readable_at(0, 0).add();  // nothing but a zero-length descriptor
  chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  EXPECT_FALSE(chain->malformed());
  EXPECT_TRUE(chain->readable().empty());
  EXPECT_TRUE(chain->read_all(100).empty());
}

TEST(VirtqueueMalformed, OverlappingDescriptorsAreAllowed) {
  // Not forbidden by §2.7.5: a driver may describe the same memory twice, even as readable
  // and writable. Copies go through GuestMemory, so the device just sees the bytes.
  VirtqueueFake fake(16);
  uint64_t shared = fake.put(bytes("abcdefgh"));
  fake.chain().readable_at(shared, 8).readable_at(shared + 4, 4).writable_at(shared, 8).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  ASSERT_FALSE(chain->malformed()) << chain->error();
  EXPECT_EQ(chain->read_all(100), bytes("abcdefghefgh"));
  EXPECT_EQ(chain->write_at(0, bytes("XY")), 2u);
  EXPECT_EQ(chain->read_all(2), bytes("XY"));
  fake.queue().add_used(std::move(*chain), 2);
}

TEST(VirtqueueMalformed, LoopThroughNextTerminates) {
  VirtqueueFake fake(16);
  uint64_t data = fake.put(bytes("loop"));
  fake.set_descriptor(0, {data, 4, kDescFlagNext, 1});
  fake.set_descriptor(1, {data, 4, kDescFlagNext, 0});
  fake.push_avail(0);
  expect_malformed(fake, "longer than the queue size");
  fake.set_descriptor(5, {data, 4, kDescFlagNext, 5});  // a descriptor pointing at itself
  fake.push_avail(5);
  expect_malformed(fake, "longer than the queue size");
}

TEST(VirtqueueMalformed, ChainOfExactlyQueueSizeIsFine) {
  VirtqueueFake fake(4);
  fake.chain().readable("1").readable("2").readable("3").writable(1).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  EXPECT_FALSE(chain->malformed()) << chain->error();
}

TEST(VirtqueueMalformed, HeadIndexOutOfRangeIsReturnedAsGiven) {
  VirtqueueFake fake(16);
  fake.push_avail(16);
  expect_malformed(fake, "head index 16");
  fake.push_avail(0xffff);
  expect_malformed(fake, "head index 65535");
  EXPECT_FALSE(fake.queue().broken());
}

TEST(VirtqueueMalformed, NextIndexOutOfRange) {
  VirtqueueFake fake(16);
  fake.set_descriptor(3, {fake.put(bytes("x")), 1, kDescFlagNext, 16});
  fake.push_avail(3);
  expect_malformed(fake, "next index 16");
}

TEST(VirtqueueMalformed, WritableBeforeReadable) {
  VirtqueueFake fake(16);
  fake.chain().readable("ok").writable(4).readable("late").add();
  expect_malformed(fake, "follows a device-writable");
  // Also inside an indirect table.
  fake.chain().writable(4).readable("late").indirect().add();
  expect_malformed(fake, "follows a device-writable");
}

TEST(VirtqueueMalformed, ChainLongerThan4GiB) {
  // §2.7.5.2 caps a chain at 2^32 bytes; overlapping 2 MiB buffers get there cheaply.
  constexpr uint32_t kBuffer = 2 << 20;
  VirtqueueFake fake(4096, kFakeDefaultFeatures, 4 << 20);
  uint64_t buffer = VirtqueueFake::kRamBase + (2 << 20);
  auto builder = fake.chain();
  for (int i = 0; i < 2049; ++i) builder.readable_at(buffer, kBuffer);
  builder.add();
  expect_malformed(fake, "2^32 bytes");
  // 2048 of them are exactly 2^32 bytes: allowed.
  auto exact = fake.chain();
  for (int i = 0; i < 2048; ++i) exact.readable_at(buffer, kBuffer);
  exact.add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  EXPECT_FALSE(chain->malformed()) << chain->error();
  EXPECT_EQ(chain->readable_len(), uint64_t{1} << 32);
  EXPECT_EQ(chain->read_all(16).size(), 16u);
}

TEST(VirtqueueMalformed, ManyMalformedChainsAreAllReturned) {
  VirtqueueFake fake(64);
  for (int i = 0; i < 50; ++i) fake.chain().readable_at(0x10, 1).add();
  int popped = 0;
  while (auto chain = fake.queue().pop()) {
    EXPECT_TRUE(chain->malformed());
    ++popped;  // dropped without add_used: returned by the destructor
  }
  EXPECT_EQ(popped, 50);
  EXPECT_EQ(fake.used_idx(), 50);
  EXPECT_EQ(fake.queue().stats().malformed_chains, 50u);
  EXPECT_EQ(fake.queue().stats().dropped_chains, 0u);  // not a device bug
}

// ---- Avail index jumps (fatal) ------------------------------------------------------------------

TEST(VirtqueueFatal, AvailIndexJumpBreaksTheQueue) {
  VirtqueueFake fake(16);
  int handler_calls = 0;
  std::string handler_message;
  fake.queue().set_fatal_error_handler([&](const Error& error) {
    ++handler_calls;
    handler_message = error.message();
  });
  fake.set_avail_idx(17);
  EXPECT_FALSE(fake.queue().pop().has_value());
  EXPECT_TRUE(fake.queue().broken());
  EXPECT_EQ(handler_calls, 1);
  EXPECT_NE(handler_message.find("available idx 17"), std::string::npos) << handler_message;
  EXPECT_EQ(fake.queue().fatal_error(), handler_message);
  // Nothing is served from then on, and the handler is not called again.
  fake.set_avail_idx(1);
  EXPECT_FALSE(fake.queue().has_available());
  EXPECT_FALSE(fake.queue().pop().has_value());
  EXPECT_EQ(handler_calls, 1);
  EXPECT_EQ(fake.used_idx(), 0);

  // A reset and re-activation recovers.
  fake.queue().reset();
  fake.queue().set_size(16);
  fake.queue().set_desc_table_address(fake.desc_table());
  fake.queue().set_avail_ring_address(fake.avail_ring());
  fake.queue().set_used_ring_address(fake.used_ring());
  fake.set_avail_idx(0);
  ASSERT_TRUE(fake.activate());
  EXPECT_FALSE(fake.queue().broken());
  fake.chain().readable("x").add();
  EXPECT_TRUE(fake.queue().pop().has_value());
}

TEST(VirtqueueFatal, AvailIndexMovingBackwardsBreaksTheQueue) {
  VirtqueueFake fake(16);
  fake.chain().readable("x").add();
  fake.chain().readable("y").add();
  ASSERT_TRUE(fake.queue().pop());
  ASSERT_TRUE(fake.queue().pop());
  fake.set_avail_idx(1);  // "unexposing" a buffer (§2.7.6.1): a jump of 65535
  EXPECT_FALSE(fake.queue().pop().has_value());
  EXPECT_TRUE(fake.queue().broken());
}

TEST(VirtqueueFatal, ChainsHeldAcrossFatalErrorAreStillReturned) {
  VirtqueueFake fake(16);
  auto sent = fake.chain().readable("x").writable(4).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  fake.set_avail_idx(100);
  EXPECT_FALSE(fake.queue().pop());
  fake.queue().add_used(std::move(*chain), 4);
  EXPECT_EQ(fake.used_elem(0), (FakeUsedElement{sent.head, 4}));
}

// ---- Returning chains --------------------------------------------------------------------------

TEST(VirtqueueReturn, DroppedChainIsReturnedWithLengthZero) {
  VirtqueueFake fake(16);
  auto sent = fake.chain().readable("x").writable(4).add();
  {
    auto chain = fake.queue().pop();
    ASSERT_TRUE(chain);
  }
  EXPECT_EQ(fake.used_idx(), 1);
  EXPECT_EQ(fake.used_elem(0), (FakeUsedElement{sent.head, 0}));
  EXPECT_EQ(fake.queue().stats().dropped_chains, 1u);
  // A second drop is counted too (only the log line is once).
  fake.chain().readable("y").add();
  { auto chain = fake.queue().pop(); }
  EXPECT_EQ(fake.queue().stats().dropped_chains, 2u);
  EXPECT_EQ(fake.used_idx(), 2);
}

TEST(VirtqueueReturn, MovedChainIsReturnedOnce) {
  VirtqueueFake fake(16);
  fake.chain().readable("x").add();
  fake.chain().readable("y").add();
  auto first = fake.queue().pop();
  ASSERT_TRUE(first);
  DescriptorChain moved = std::move(*first);
  EXPECT_FALSE(first->pending());
  DescriptorChain assigned;
  assigned = std::move(moved);
  EXPECT_TRUE(assigned.pending());
  // Move-assigning over a pending chain returns the overwritten one.
  auto second = fake.queue().pop();
  ASSERT_TRUE(second);
  assigned = std::move(*second);
  EXPECT_EQ(fake.used_idx(), 1);
  fake.queue().add_used(std::move(assigned), 0);
  fake.queue().add_used(std::move(moved), 0);   // already moved from: nothing
  fake.queue().add_used(DescriptorChain(), 0);  // empty: nothing
  EXPECT_EQ(fake.used_idx(), 2);
}

TEST(VirtqueueReturn, ChainFromEarlierActivationIsInert) {
  VirtqueueFake fake(16);
  fake.chain().readable("x").add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  fake.queue().reset();
  fake.queue().set_desc_table_address(fake.desc_table());
  fake.queue().set_avail_ring_address(fake.avail_ring());
  fake.queue().set_used_ring_address(fake.used_ring());
  fake.set_avail_idx(0);
  ASSERT_TRUE(fake.activate());
  fake.queue().add_used(std::move(*chain), 0);
  EXPECT_EQ(fake.used_idx(), 0);
  EXPECT_EQ(fake.queue().next_used(), 0);
}

TEST(VirtqueueReturn, ChainOfAnotherQueueGoesBackToItsOwnQueue) {
  VirtqueueFake a(16);
  VirtqueueFake b(16);
  a.chain().readable("x").add();
  auto chain = a.queue().pop();
  ASSERT_TRUE(chain);
  b.queue().add_used(std::move(*chain), 1);
  EXPECT_EQ(b.used_idx(), 0);
  EXPECT_EQ(a.used_idx(), 1);
  EXPECT_EQ(a.used_elem(0).len, 0u);
}

// ---- Notifications -----------------------------------------------------------------------------

TEST(VirtqueueNotify, NoInterruptFlagWithoutEventIdx) {
  VirtqueueFake fake(16);
  EXPECT_FALSE(fake.queue().needs_notification());  // nothing published yet
  fake.chain().readable("x").add();
  fake.queue().add_used(std::move(*fake.queue().pop()), 0);
  EXPECT_TRUE(fake.queue().needs_notification());
  EXPECT_FALSE(fake.queue().needs_notification());  // nothing new since
  fake.set_avail_flags(kAvailFlagNoInterrupt);
  fake.chain().readable("y").add();
  fake.queue().add_used(std::move(*fake.queue().pop()), 0);
  EXPECT_FALSE(fake.queue().needs_notification());
  EXPECT_EQ(fake.queue().stats().used_notifications, 1u);
  EXPECT_EQ(fake.queue().stats().suppressed_notifications, 1u);
}

TEST(VirtqueueNotify, EventIdxUsedEvent) {
  VirtqueueFake fake(16, kEventIdxFeatures);
  ASSERT_TRUE(fake.queue().event_idx());
  fake.set_avail_flags(kAvailFlagNoInterrupt);  // ignored with EVENT_IDX (§2.7.7.2)
  fake.set_used_event(1);                       // notify once used idx reaches 2
  for (int i = 0; i < 3; ++i) fake.chain().readable("x").add();
  auto complete_one = [&] { fake.queue().add_used(std::move(*fake.queue().pop()), 0); };
  complete_one();  // used idx 1
  EXPECT_FALSE(fake.queue().needs_notification());
  complete_one();  // used idx 2: wrote entry 1 == used_event
  EXPECT_TRUE(fake.queue().needs_notification());
  complete_one();  // used idx 3: already past
  EXPECT_FALSE(fake.queue().needs_notification());
}

TEST(VirtqueueNotify, EventIdxBatchCrossingUsedEvent) {
  VirtqueueFake fake(16, kEventIdxFeatures);
  fake.set_used_event(0);
  for (int i = 0; i < 4; ++i) fake.chain().readable("x").add();
  while (auto chain = fake.queue().pop()) fake.queue().add_used(std::move(*chain), 0);
  EXPECT_TRUE(fake.queue().needs_notification());  // 0 lies in [0, 4)
}

TEST(VirtqueueNotify, EventIdxWrapsAroundAtFfff) {
  VirtqueueFake fake(8, kEventIdxFeatures);
  fake.set_used_event(0xfff0);  // out of the way while we advance
  // Advance the used idx to 0xfffe.
  uint64_t data = fake.put(bytes("x"));
  for (uint32_t i = 0; i < 0xfffe; ++i) {
    fake.chain().readable_at(data, 1).add();
    fake.queue().add_used(std::move(*fake.queue().pop()), 0);
  }
  fake.queue().needs_notification();  // consume the range so far
  ASSERT_EQ(fake.queue().next_used(), 0xfffe);
  // used_event 0xffff: notify when entry 0xffff is written, i.e. idx goes 0xffff -> 0.
  fake.set_used_event(0xffff);
  fake.chain().readable("x").add();
  fake.queue().add_used(std::move(*fake.queue().pop()), 0);  // idx 0xffff
  EXPECT_FALSE(fake.queue().needs_notification());
  fake.chain().readable("x").add();
  fake.queue().add_used(std::move(*fake.queue().pop()), 0);  // idx 0 (wrapped)
  EXPECT_EQ(fake.used_idx(), 0);
  EXPECT_TRUE(fake.queue().needs_notification());
  // A batch across the wrap: idx 0 -> 3 with used_event 0xffff (already passed): none.
  for (int i = 0; i < 3; ++i) {
    fake.chain().readable("x").add();
    fake.queue().add_used(std::move(*fake.queue().pop()), 0);
  }
  EXPECT_FALSE(fake.queue().needs_notification());
  // used_event 4, idx 3 -> 6: crossed after the wrap.
  fake.set_used_event(4);
  for (int i = 0; i < 3; ++i) {
    fake.chain().readable("x").add();
    fake.queue().add_used(std::move(*fake.queue().pop()), 0);
  }
  EXPECT_TRUE(fake.queue().needs_notification());
}

TEST(VirtqueueNotify, DeviceSuppressionWithoutEventIdx) {
  VirtqueueFake fake(16);
  EXPECT_EQ(fake.used_flags(), 0);
  fake.queue().set_notification(false);
  EXPECT_EQ(fake.used_flags(), kUsedFlagNoNotify);
  fake.queue().set_notification(true);
  EXPECT_EQ(fake.used_flags(), 0);
}

TEST(VirtqueueNotify, DeviceSuppressionWithEventIdx) {
  VirtqueueFake fake(16, kEventIdxFeatures);
  fake.set_avail_event(0x1234);
  fake.chain().readable("x").add();
  fake.chain().readable("y").add();
  fake.queue().set_notification(false);
  fake.queue().add_used(std::move(*fake.queue().pop()), 0);
  EXPECT_EQ(fake.used_flags(), 0);          // §2.7.10.2: flags stay 0 with EVENT_IDX
  EXPECT_EQ(fake.avail_event(), 0x1234);    // untouched while disabled
  fake.queue().set_notification(true);
  EXPECT_EQ(fake.avail_event(), 1);         // the next index the device will consume
  fake.queue().add_used(std::move(*fake.queue().pop()), 0);
  // An empty pop asks for a notification for the next buffer.
  EXPECT_FALSE(fake.queue().pop());
  EXPECT_EQ(fake.avail_event(), 2);
}

TEST(VirtqueueNotify, EmptyPopWhileDisabledLeavesAvailEvent) {
  VirtqueueFake fake(16, kEventIdxFeatures);
  fake.queue().set_notification(false);
  fake.set_avail_event(7);
  EXPECT_FALSE(fake.queue().pop());
  EXPECT_EQ(fake.avail_event(), 7);
}

// ---- The rate limiter for guest-caused log lines -----------------------------------------------

TEST(VirtqueueLog, RateLimitedLogSuppressesBursts) {
  RateLimitedLog log(2, std::chrono::hours(1));
  for (int i = 0; i < 5; ++i) log.warn("test line {}", i);
  EXPECT_EQ(log.suppressed_total(), 3u);
}

}  // namespace
}  // namespace skiff::virtio
