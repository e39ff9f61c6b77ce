// SPDX-License-Identifier: Apache-2.0
// Queue::save_state() / restore_state() and undo_pop(): a queue restored over a copy of the
// guest memory continues exactly where the saved one stopped.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "state/state_blob.h"
#include "unit/virtio/virtqueue_fake.h"
#include "virtio/core/queue.h"
#include "virtio/core/virtio_constants.h"

namespace skiff::virtio {
namespace {

using testing::FakeChain;
using testing::kFakeDefaultFeatures;
using testing::VirtqueueFake;

constexpr uint64_t kEventIdxFeatures = kFakeDefaultFeatures | feature_mask(kFeatureRingEventIdx);

// save → encode → decode, as a snapshot file carries it.
state::StateBlob round_trip(const state::StateBlob& blob) {
  auto decoded = state::StateBlob::decode(blob.encode());
  EXPECT_TRUE(decoded) << (decoded ? "" : decoded.error().message());
  return decoded ? *decoded : state::StateBlob("broken", 1);
}

// The blob with one field replaced or removed, through its CBOR form (StateBlob has no
// field removal: a state file is the only place a field goes missing).
state::StateBlob edited(const state::StateBlob& blob, const std::string& field, const nlohmann::json* value) {
  nlohmann::json doc = nlohmann::json::from_cbor(blob.encode());
  if (value == nullptr) {
    doc["fields"].erase(field);
  } else {
    doc["fields"][field] = *value;
  }
  auto decoded = state::StateBlob::decode(nlohmann::json::to_cbor(doc));
  EXPECT_TRUE(decoded) << (decoded ? "" : decoded.error().message());
  return decoded ? *decoded : state::StateBlob("broken", 1);
}
state::StateBlob with_field(const state::StateBlob& blob, const std::string& field, nlohmann::json value) {
  return edited(blob, field, &value);
}
state::StateBlob without_field(const state::StateBlob& blob, const std::string& field) {
  return edited(blob, field, nullptr);
}

struct Popped {
  uint16_t head = 0;
  std::vector<GuestBuffer> readable;
  std::vector<GuestBuffer> writable;
  bool operator==(const Popped&) const = default;
};

// Pops, writes `fill` into the writable buffers, uses the chain with `len` and returns what
// was popped plus whether the driver wanted an interrupt.
std::pair<Popped, bool> serve_one(Queue& queue, uint8_t fill, uint32_t len) {
  auto chain = queue.pop();
  EXPECT_TRUE(chain.has_value());
  if (!chain) return {};
  Popped popped{chain->head_index(),
                {chain->readable().begin(), chain->readable().end()},
                {chain->writable().begin(), chain->writable().end()}};
  std::vector<uint8_t> data(chain->writable_len(), fill);
  chain->write_at(0, data);
  queue.add_used(std::move(*chain), len);
  return {popped, queue.needs_notification()};
}

class QueueStateTest : public ::testing::TestWithParam<bool> {
 protected:
  uint64_t features() const { return GetParam() ? kEventIdxFeatures : kFakeDefaultFeatures; }
};

TEST_P(QueueStateTest, RestoredQueueContinuesWhereTheSavedOneStopped) {
  VirtqueueFake original(16, features());
  ASSERT_EQ(original.queue().event_idx(), GetParam());
  // Two chains served, one more popped and given back, three more available.
  original.chain().readable("first").writable(32).add();
  original.chain().readable("second").writable(8).writable(8).add();
  for (uint8_t i = 0; i < 2; ++i) serve_one(original.queue(), 0xa0 + i, 16);
  original.chain().writable(64).indirect().add();
  original.chain().readable("fourth").add();
  original.chain().readable("fifth").writable(4).add();
  auto held = original.queue().pop();
  ASSERT_TRUE(held);
  ASSERT_TRUE(original.queue().undo_pop(*held));
  // The driver moves used_event / asks for no interrupts; the device turns its
  // notifications off, as a device does while it drains.
  if (GetParam()) {
    original.set_used_event(3);
  } else {
    original.set_avail_flags(kAvailFlagNoInterrupt);
  }
  original.queue().set_notification(false);

  const state::StateBlob saved = original.queue().save_state();
  EXPECT_EQ(saved.kind(), "virtqueue");
  EXPECT_EQ(saved.version(), 1u);

  VirtqueueFake restored(VirtqueueFake::CopyOf{original});
  auto ok = restored.restore(round_trip(saved));
  ASSERT_TRUE(ok) << ok.error().message();
  Queue& copy = restored.queue();
  EXPECT_TRUE(copy.active());
  EXPECT_EQ(copy.event_idx(), GetParam());
  EXPECT_TRUE(copy.indirect_descriptors());
  EXPECT_EQ(copy.next_avail(), 2);
  EXPECT_EQ(copy.next_used(), 2);
  EXPECT_EQ(copy.signalled_used(), original.queue().signalled_used());
  EXPECT_FALSE(copy.notification_enabled());
  EXPECT_EQ(copy.stats().chains_popped, 2u);
  EXPECT_EQ(copy.stats().used_notifications, original.queue().stats().used_notifications);
  EXPECT_EQ(copy.stats().suppressed_notifications, original.queue().stats().suppressed_notifications);
  // Restoring wrote nothing to guest memory.
  EXPECT_EQ(restored.ram(), original.ram());
  // Saving the restored queue gives the same blob.
  EXPECT_EQ(copy.save_state(), saved);

  // Both serve the rest identically: same heads and buffers, same used ring, same answers
  // about interrupts (the driver's used_event / flags are in the copied memory).
  for (uint8_t i = 0; i < 3; ++i) {
    auto a = serve_one(original.queue(), 0xb0 + i, 5);
    auto b = serve_one(copy, 0xb0 + i, 5);
    EXPECT_EQ(a, b) << "chain " << int{i};
  }
  EXPECT_FALSE(original.queue().pop().has_value());
  EXPECT_FALSE(copy.pop().has_value());
  original.queue().set_notification(true);
  copy.set_notification(true);
  EXPECT_EQ(restored.ram(), original.ram());
  EXPECT_EQ(restored.take_used(), original.take_used());
  EXPECT_EQ(copy.save_state(), original.queue().save_state());

  // A chain added now is found by both, and the interrupt decision still matches.
  if (GetParam()) {
    original.set_used_event(5);
    restored.set_used_event(5);
  } else {
    original.set_avail_flags(0);
    restored.set_avail_flags(0);
  }
  original.chain().writable(16).add();
  restored.chain().writable(16).add();
  auto a = serve_one(original.queue(), 1, 16);
  auto b = serve_one(copy, 1, 16);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(a.second) << "the driver asked for this interrupt";
  EXPECT_EQ(restored.ram(), original.ram());
}

TEST_P(QueueStateTest, UnsignalledUsedBuffersStayPendingAcrossRestore) {
  VirtqueueFake original(16, features());
  original.chain().writable(8).add();
  auto chain = original.queue().pop();
  ASSERT_TRUE(chain);
  // Used, but needs_notification() not asked yet (a device paused right after add_used()).
  original.queue().add_used(std::move(*chain), 8);

  VirtqueueFake restored(VirtqueueFake::CopyOf{original});
  ASSERT_TRUE(restored.restore(round_trip(original.queue().save_state())));
  EXPECT_TRUE(restored.queue().needs_notification());
  EXPECT_TRUE(original.queue().needs_notification());
  EXPECT_FALSE(restored.queue().needs_notification()) << "asked once only";
}

INSTANTIATE_TEST_SUITE_P(EventIdx, QueueStateTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param_info) { return param_info.param ? "On" : "Off"; });

TEST(QueueState, InactiveQueueKeepsTheDriversConfiguration) {
  VirtqueueFake original(16, kFakeDefaultFeatures, 1 << 20, /*activate_now=*/false);
  original.queue().set_size(8);
  VirtqueueFake restored(VirtqueueFake::CopyOf{original});
  ASSERT_TRUE(restored.restore(round_trip(original.queue().save_state())));
  const Queue& copy = restored.queue();
  EXPECT_FALSE(copy.active());
  EXPECT_TRUE(copy.ready());
  EXPECT_EQ(copy.size(), 8);
  EXPECT_EQ(copy.desc_table_address(), original.desc_table());
  EXPECT_EQ(copy.avail_ring_address(), original.avail_ring());
  EXPECT_EQ(copy.used_ring_address(), original.used_ring());
  // The driver sets DRIVER_OK later: activate() works as usual.
  ASSERT_TRUE(restored.activate());
  EXPECT_TRUE(copy.active());
}

TEST(QueueState, BrokenQueueStaysBrokenWithoutCallingTheHandler) {
  VirtqueueFake original(16);
  original.set_avail_idx(100);  // more than the queue size ahead
  EXPECT_FALSE(original.queue().pop().has_value());
  ASSERT_TRUE(original.queue().broken());

  VirtqueueFake restored(VirtqueueFake::CopyOf{original});
  int handler_calls = 0;
  restored.queue().set_fatal_error_handler([&](const Error&) { ++handler_calls; });
  ASSERT_TRUE(restored.restore(round_trip(original.queue().save_state())));
  EXPECT_TRUE(restored.queue().broken());
  EXPECT_EQ(restored.queue().fatal_error(), original.queue().fatal_error());
  EXPECT_FALSE(restored.queue().pop().has_value());
  EXPECT_EQ(handler_calls, 0);
}

TEST(QueueState, MalformedAndDroppedCountersAreCarried) {
  VirtqueueFake original(16);
  original.chain().writable_at(0xfffffffffffff000ull, 64).add();  // outside RAM
  original.chain().writable(8).add();
  { auto bad = original.queue().pop(); }
  { auto dropped = original.queue().pop(); }  // dropped without add_used: a device bug
  VirtqueueFake restored(VirtqueueFake::CopyOf{original});
  ASSERT_TRUE(restored.restore(round_trip(original.queue().save_state())));
  EXPECT_EQ(restored.queue().stats().malformed_chains, 1u);
  EXPECT_EQ(restored.queue().stats().dropped_chains, 1u);
  EXPECT_EQ(restored.queue().stats().chains_popped, 2u);
}

// ---- Refused blobs: each leaves the queue inactive. ------------------------------------------

class QueueStateRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    original_.chain().writable(8).add();
    serve_one(original_.queue(), 1, 8);
    saved_ = original_.queue().save_state();
  }
  // Restores `blob` into a fresh copy; expects an error mentioning `what`.
  void expect_refused(const state::StateBlob& blob, const std::string& what) {
    VirtqueueFake restored(VirtqueueFake::CopyOf{original_});
    auto result = restored.restore(blob);
    ASSERT_FALSE(result) << "accepted: " << blob.describe();
    EXPECT_NE(result.error().message().find(what), std::string::npos) << result.error().message();
    EXPECT_FALSE(restored.queue().active());
    EXPECT_FALSE(restored.queue().pop().has_value());
    EXPECT_EQ(restored.ram(), original_.ram()) << "a refused restore wrote guest memory";
  }

  VirtqueueFake original_{16, kEventIdxFeatures};
  state::StateBlob saved_{"unset", 1};
};

TEST_F(QueueStateRefusal, WrongKind) {
  expect_refused(state::StateBlob("virtio-rng", 1), "state of virtio-rng where virtqueue was expected");
}

TEST_F(QueueStateRefusal, NewerVersion) {
  nlohmann::json doc = nlohmann::json::from_cbor(saved_.encode());
  doc["version"] = 2;
  auto blob = state::StateBlob::decode(nlohmann::json::to_cbor(doc));
  ASSERT_TRUE(blob);
  expect_refused(*blob, "version 2");
}

TEST_F(QueueStateRefusal, MaxSizeMismatch) { expect_refused(with_field(saved_, "max_size", 32), "max_size 32"); }

TEST_F(QueueStateRefusal, SizeNotAPowerOfTwoOrTooLarge) {
  expect_refused(with_field(saved_, "size", 12), "queue size 12 is not a power of two");
  expect_refused(with_field(saved_, "size", 0), "queue size 0");
  expect_refused(with_field(saved_, "size", 32), "larger than the device's maximum");
  expect_refused(with_field(saved_, "size", 70000), "\"size\"");  // not a 16-bit value
}

TEST_F(QueueStateRefusal, RingOutsideRam) {
  expect_refused(with_field(saved_, "used_ring_address", original_.ram_end()), "used ring");
  expect_refused(with_field(saved_, "desc_table_address", 0xfffffffffffffff0ull), "descriptor table");
  expect_refused(with_field(saved_, "avail_ring_address", original_.ram_end() - 2), "available ring");
  expect_refused(with_field(saved_, "avail_ring_address", original_.avail_ring() + 1), "aligned");
}

TEST_F(QueueStateRefusal, MissingOrMistypedField) {
  for (const char* field : {"max_size", "size", "desc_table_address", "avail_ring_address", "used_ring_address",
                            "ready", "active", "event_idx", "indirect", "next_avail", "next_used", "signalled_used",
                            "notification_enabled", "broken", "fatal_error", "chains_popped", "malformed_chains",
                            "dropped_chains", "used_notifications", "suppressed_notifications"}) {
    SCOPED_TRACE(field);
    expect_refused(without_field(saved_, field), std::string("\"") + field + "\" is missing");
  }
  expect_refused(with_field(saved_, "ready", 1), "\"ready\" is not a boolean");
  expect_refused(with_field(saved_, "next_avail", "three"), "\"next_avail\" is not an unsigned integer");
  expect_refused(with_field(saved_, "next_used", 65536), "\"next_used\"");
}

TEST_F(QueueStateRefusal, FeaturesThatDoNotMatchTheNegotiatedOnes) {
  expect_refused(with_field(saved_, "event_idx", false), "event_idx");
  expect_refused(with_field(saved_, "indirect", false), "indirect");
}

TEST_F(QueueStateRefusal, InconsistentFields) {
  expect_refused(with_field(saved_, "broken", true), "broken without a fatal_error");
  expect_refused(with_field(saved_, "fatal_error", "x"), "not broken");
  // An inactive queue with progress was not written by save_state().
  expect_refused(with_field(saved_, "active", false), "inactive queue");
}

TEST_F(QueueStateRefusal, ActiveQueueIsNotOverwritten) {
  auto result = original_.queue().restore_state(saved_, original_.memory(), kEventIdxFeatures);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("active queue"), std::string::npos);
  EXPECT_TRUE(original_.queue().active());
}

// ---- undo_pop -------------------------------------------------------------------------------

TEST(QueueUndoPop, ChainsGoBackInReverseOrderAndPopAgain) {
  VirtqueueFake fake(16);
  FakeChain first = fake.chain().readable("one").add();
  FakeChain second = fake.chain().writable(8).writable(8).add();
  auto a = fake.queue().pop();
  auto b = fake.queue().pop();
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(fake.queue().undo_pop(*a)) << "b was popped after a";
  EXPECT_TRUE(a->pending());
  EXPECT_TRUE(fake.queue().undo_pop(*b));
  EXPECT_FALSE(b->pending());
  EXPECT_TRUE(fake.queue().undo_pop(*a));
  EXPECT_EQ(fake.queue().next_avail(), 0);
  EXPECT_EQ(fake.queue().stats().chains_popped, 0u);
  // Dropping the given-back chains returns nothing to the used ring.
  a.reset();
  b.reset();
  EXPECT_EQ(fake.used_idx(), 0);
  EXPECT_EQ(fake.queue().stats().dropped_chains, 0u);

  auto again = fake.queue().pop();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->head_index(), first.head);
  EXPECT_EQ(std::vector<GuestBuffer>(again->readable().begin(), again->readable().end()), first.readable);
  auto again2 = fake.queue().pop();
  ASSERT_TRUE(again2);
  EXPECT_EQ(again2->head_index(), second.head);
  EXPECT_EQ(std::vector<GuestBuffer>(again2->writable().begin(), again2->writable().end()), second.writable);
  fake.queue().add_used(std::move(*again), 0);
  fake.queue().add_used(std::move(*again2), 0);
}

TEST(QueueUndoPop, RefusesUsedChainsAndChainsOfOtherActivations) {
  VirtqueueFake fake(16);
  fake.chain().writable(8).add();
  fake.chain().writable(8).add();
  auto chain = fake.queue().pop();
  ASSERT_TRUE(chain);
  DescriptorChain empty;
  EXPECT_FALSE(fake.queue().undo_pop(empty));
  VirtqueueFake other(16);
  EXPECT_FALSE(other.queue().undo_pop(*chain)) << "another queue's chain";
  ASSERT_TRUE(fake.activate());  // a new activation of the same rings
  EXPECT_FALSE(fake.queue().undo_pop(*chain)) << "an earlier activation's chain";
}

}  // namespace
}  // namespace skiff::virtio
