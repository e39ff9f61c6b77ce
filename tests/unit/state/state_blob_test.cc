// SPDX-License-Identifier: Apache-2.0
// StateBlob: round trips through CBOR, and every reader's refusal of a field that is
// missing, of the wrong type or out of range, and decode()'s refusal of hostile bytes.
#include <gtest/gtest.h>

#include <linux/kvm.h>

#include <vector>

#include "state/state_blob.h"

namespace skiff::state {
namespace {

StateBlob sample() {
  StateBlob inner("queue", 2);
  inner.put("size", 256).put_bool("ready", true);
  StateBlob blob("serial", 1);
  const std::vector<uint8_t> bytes = {1, 2, 3, 0xff};
  const std::vector<uint64_t> list = {7, 8, 0xffffffffffffffffull};
  blob.put("ier", 0x0f)
      .put_bool("thre", false)
      .put_string("label", "COM1")
      .put_bytes("rx", bytes)
      .put_u64s("list", list)
      .put_blob("inner", inner)
      .put_blobs("queues", std::vector<StateBlob>{inner, inner});
  return blob;
}

TEST(StateBlob, RoundTripsThroughCbor) {
  StateBlob blob = sample();
  auto decoded = StateBlob::decode(blob.encode());
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(*decoded, blob) << decoded->describe();
  EXPECT_EQ(decoded->kind(), "serial");
  EXPECT_EQ(decoded->version(), 1u);
  EXPECT_EQ(*decoded->get<uint8_t>("ier"), 0x0f);
  EXPECT_FALSE(*decoded->boolean("thre"));
  EXPECT_EQ(*decoded->string("label"), "COM1");
  EXPECT_EQ(*decoded->bytes("rx", 4), (std::vector<uint8_t>{1, 2, 3, 0xff}));
  EXPECT_EQ(decoded->u64s("list", 3)->at(2), 0xffffffffffffffffull);
  auto inner = decoded->blob("inner");
  ASSERT_TRUE(inner);
  EXPECT_EQ(inner->kind(), "queue");
  EXPECT_EQ(*inner->get<uint16_t>("size"), 256);
  EXPECT_EQ(decoded->blobs("queues", 2)->size(), 2u);
}

TEST(StateBlob, CopiesAndMovesAreIndependent) {
  StateBlob a = sample();
  StateBlob b = a;
  b.put("ier", 1);
  EXPECT_EQ(*a.u64("ier"), 0x0fu);
  StateBlob c = std::move(b);
  EXPECT_EQ(*c.u64("ier"), 1u);
  a = c;
  EXPECT_EQ(*a.u64("ier"), 1u);
}

TEST(StateBlob, ExpectChecksKindAndVersion) {
  StateBlob blob("serial", 2);
  EXPECT_TRUE(blob.expect("serial", 2));
  EXPECT_TRUE(blob.expect("serial", 3));
  auto newer = blob.expect("serial", 1);
  ASSERT_FALSE(newer);
  EXPECT_NE(newer.error().message().find("version 2 is newer"), std::string::npos) << newer.error().message();
  auto other = blob.expect("i8042", 1);
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message().find("state of serial where i8042 was expected"), std::string::npos);
}

TEST(StateBlob, ReadersRefuseMissingWrongTypeAndOutOfRange) {
  StateBlob blob = sample();
  auto missing = blob.u64("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), "state of serial: field \"nope\" is missing");
  EXPECT_EQ(missing.error().kind(), ErrorKind::kConfig);
  EXPECT_FALSE(blob.u64("label"));
  EXPECT_FALSE(blob.get<uint8_t>("list"));
  auto range = blob.u64("ier", 3);
  ASSERT_FALSE(range);
  EXPECT_NE(range.error().message().find("above the maximum 3"), std::string::npos);
  EXPECT_FALSE(blob.get<uint8_t>("list"));
  StateBlob wide("x", 1);
  wide.put("v", 256);
  EXPECT_FALSE(wide.get<uint8_t>("v"));
  EXPECT_TRUE(wide.get<uint16_t>("v"));
  EXPECT_FALSE(blob.boolean("ier"));
  EXPECT_FALSE(blob.string("ier"));
  EXPECT_FALSE(blob.string("label", 3));
  EXPECT_FALSE(blob.bytes("rx", 3));
  EXPECT_FALSE(blob.bytes("label", 10));
  EXPECT_FALSE(blob.bytes_exact("rx", 5));
  EXPECT_TRUE(blob.bytes_exact("rx", 4));
  EXPECT_FALSE(blob.u64s("list", 2));
  EXPECT_FALSE(blob.u64s("list", 3, 100));
  EXPECT_FALSE(blob.u64s("rx", 3));
  EXPECT_FALSE(blob.blob("ier"));
  EXPECT_FALSE(blob.blobs("queues", 1));
  EXPECT_FALSE(blob.blobs("list", 5));
  EXPECT_TRUE(blob.has("rx"));
  EXPECT_FALSE(blob.has("tx"));
  EXPECT_EQ(blob.field_names(),
            (std::vector<std::string>{"ier", "inner", "label", "list", "queues", "rx", "thre"}));
}

TEST(StateBlob, StructsRoundTripAsExactByteStrings) {
  kvm_regs regs{};
  regs.rip = 0xffffffff81000000;
  regs.rflags = 0x246;
  StateBlob blob("vcpu", 1);
  put_struct(blob, "regs", regs);
  auto decoded = StateBlob::decode(blob.encode());
  ASSERT_TRUE(decoded);
  auto back = get_struct<kvm_regs>(*decoded, "regs");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->rip, regs.rip);
  EXPECT_EQ(back->rflags, regs.rflags);
  EXPECT_FALSE(get_struct<kvm_sregs>(*decoded, "regs"));  // wrong size
}

TEST(StateBlob, DecodeRefusesWhatIsNotABlob) {
  EXPECT_FALSE(StateBlob::decode({}));
  const std::vector<uint8_t> garbage = {0xde, 0xad, 0xbe, 0xef};
  EXPECT_FALSE(StateBlob::decode(garbage));
  // Valid CBOR, wrong shape: an integer; a map without kind; a version of 0.
  EXPECT_FALSE(StateBlob::decode(std::vector<uint8_t>{0x05}));
  StateBlob good("serial", 1);
  std::vector<uint8_t> encoded = good.encode();
  encoded.push_back(0x00);  // trailing byte
  EXPECT_FALSE(StateBlob::decode(encoded));
  encoded.pop_back();
  encoded.pop_back();  // truncated
  EXPECT_FALSE(StateBlob::decode(encoded));
}

TEST(StateBlob, DecodeRefusesHostileNesting) {
  // A million nested one-item arrays: refused before nlohmann's recursive reader sees it.
  std::vector<uint8_t> deep(1'000'000, 0x81);
  deep.push_back(0x00);
  auto r = StateBlob::decode(deep);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("nested too deeply"), std::string::npos) << r.error().message();
  // An array that claims more items than there are bytes.
  const std::vector<uint8_t> huge = {0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  EXPECT_FALSE(StateBlob::decode(huge));
  // Indefinite-length array.
  const std::vector<uint8_t> indefinite = {0x9f, 0x01, 0xff};
  EXPECT_FALSE(StateBlob::decode(indefinite));
}

TEST(StateBlob, DecodeChecksNestedEnvelopes) {
  StateBlob outer("outer", 1);
  StateBlob inner("inner", 1);
  outer.put_blob("child", inner);
  std::vector<uint8_t> encoded = outer.encode();
  ASSERT_TRUE(StateBlob::decode(encoded));
  // Replace the nested version (1) by 0: find "version" followed by 0x01 the second time.
  const std::string key = "version";
  size_t found = 0;
  size_t pos = 0;
  for (size_t i = 0; i + key.size() < encoded.size(); ++i) {
    if (std::equal(key.begin(), key.end(), encoded.begin() + static_cast<std::ptrdiff_t>(i))) {
      if (++found == 2) pos = i + key.size();
    }
  }
  ASSERT_EQ(found, 2u);
  ASSERT_EQ(encoded[pos], 0x01);
  encoded[pos] = 0x00;
  auto r = StateBlob::decode(encoded);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("version"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace skiff::state
