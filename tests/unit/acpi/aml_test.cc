// SPDX-License-Identifier: Apache-2.0
// AML encodings checked against the byte layouts of ACPI 6.4 section 20.2 (AML grammar) and
// section 6.4 (resource descriptors). The expected byte strings were cross-checked with
// the output of the ACPICA compiler (iasl 20200925) for the equivalent ASL.
#include "arch/x86_64/acpi/aml.h"

#include <gtest/gtest.h>

namespace skiff::x86::aml {
namespace {

Bytes filled(size_t count, uint8_t value) { return Bytes(count, value); }

TEST(AcpiAml, PkgLengthOneByteUpTo63) {
  // Section 20.2.4: a single PkgLeadByte holds totals 0-63 in bits 5-0.
  EXPECT_EQ(encode_pkg_length(0), (Bytes{0x01}));
  EXPECT_EQ(encode_pkg_length(62), (Bytes{0x3f}));
}

TEST(AcpiAml, PkgLengthTwoBytesFrom64) {
  // 63 content bytes + 1 length byte = 64 no longer fits; with 2 bytes the total is 65:
  // lead byte 0x40 | (65 & 0xf), then 65 >> 4.
  EXPECT_EQ(encode_pkg_length(63), (Bytes{0x41, 0x04}));
  // The largest 2-byte value, 4095 (12 bits).
  EXPECT_EQ(encode_pkg_length(4093), (Bytes{0x4f, 0xff}));
}

TEST(AcpiAml, PkgLengthThreeBytesFrom4096) {
  // 4094 + 2 = 4096 does not fit in 12 bits: 3 bytes, total 4097 = 0x1001.
  EXPECT_EQ(encode_pkg_length(4094), (Bytes{0x81, 0x00, 0x01}));
  // The largest 3-byte value, 2^20 - 1.
  EXPECT_EQ(encode_pkg_length((1u << 20) - 4), (Bytes{0x8f, 0xff, 0xff}));
}

TEST(AcpiAml, PkgLengthFourBytesAndLimit) {
  EXPECT_EQ(encode_pkg_length((1u << 20) - 3), (Bytes{0xc1, 0x00, 0x00, 0x01}));
  EXPECT_EQ(encode_pkg_length(kMaxPkgLength - 4), (Bytes{0xcf, 0xff, 0xff, 0xff}));
  EXPECT_FALSE(encode_pkg_length(kMaxPkgLength - 3).has_value());
}

TEST(AcpiAml, BufferPkgLengthBoundariesMatchCompiler) {
  // Buffer(){...} with 60, 61, 4090 and 4091 initializer bytes: the PkgLength covers the
  // BufferSize term and the bytes, crossing the 63 and 4095 limits.
  Bytes b60 = buffer(filled(60, 1));
  EXPECT_EQ(Bytes(b60.begin(), b60.begin() + 4), (Bytes{0x11, 0x3f, 0x0a, 0x3c}));
  EXPECT_EQ(b60.size(), 1 + 63u);
  Bytes b61 = buffer(filled(61, 1));
  EXPECT_EQ(Bytes(b61.begin(), b61.begin() + 5), (Bytes{0x11, 0x41, 0x04, 0x0a, 0x3d}));
  EXPECT_EQ(b61.size(), 1 + 65u);
  Bytes b4090 = buffer(filled(4090, 1));
  EXPECT_EQ(Bytes(b4090.begin(), b4090.begin() + 6), (Bytes{0x11, 0x4f, 0xff, 0x0b, 0xfa, 0x0f}));
  EXPECT_EQ(b4090.size(), 1 + 4095u);
  Bytes b4091 = buffer(filled(4091, 1));
  EXPECT_EQ(Bytes(b4091.begin(), b4091.begin() + 7),
            (Bytes{0x11, 0x81, 0x00, 0x01, 0x0b, 0xfb, 0x0f}));
  EXPECT_EQ(b4091.size(), 1 + 4097u);
}

TEST(AcpiAml, IntegersUseShortestPrefix) {
  // Section 20.2.3: ZeroOp 0x00, OneOp 0x01, BytePrefix 0x0a, WordPrefix 0x0b, DWordPrefix
  // 0x0c, QWordPrefix 0x0e, little-endian data.
  EXPECT_EQ(integer(0), (Bytes{0x00}));
  EXPECT_EQ(integer(1), (Bytes{0x01}));
  EXPECT_EQ(integer(2), (Bytes{0x0a, 0x02}));
  EXPECT_EQ(integer(0xff), (Bytes{0x0a, 0xff}));
  EXPECT_EQ(integer(0x100), (Bytes{0x0b, 0x00, 0x01}));
  EXPECT_EQ(integer(0x12345678), (Bytes{0x0c, 0x78, 0x56, 0x34, 0x12}));
  EXPECT_EQ(integer(0x123456789a),
            (Bytes{0x0e, 0x9a, 0x78, 0x56, 0x34, 0x12, 0x00, 0x00, 0x00}));
  EXPECT_EQ(ones(), (Bytes{0xff}));
  EXPECT_EQ(dword_const(1), (Bytes{0x0c, 0x01, 0x00, 0x00, 0x00}));
}

TEST(AcpiAml, StringIsNulTerminatedAscii) {
  EXPECT_EQ(string("abc"), (Bytes{0x0d, 'a', 'b', 'c', 0x00}));
  EXPECT_EQ(string(std::string_view("a\0b", 3)), (Bytes{0x0d, 'a', '?', 'b', 0x00}));
}

TEST(AcpiAml, NamesPadAndUsePrefixes) {
  // Section 20.2.2: NameSeg padded with '_'; DualNamePrefix 0x2e; MultiNamePrefix 0x2f +
  // count; RootChar 0x5c; ParentPrefixChar 0x5e; NullName 0x00.
  EXPECT_EQ(Name("_SB").encode(), (Bytes{'_', 'S', 'B', '_'}));
  EXPECT_EQ(Name("\\_SB.PCI0").encode(),
            (Bytes{0x5c, 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0'}));
  EXPECT_EQ(Name("\\_SB.PCI0.ISA.COM1").encode(),
            (Bytes{0x5c, 0x2f, 0x04, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'I', 'S', 'A', '_',
                   'C', 'O', 'M', '1'}));
  EXPECT_EQ(Name("^^AB").encode(), (Bytes{0x5e, 0x5e, 'A', 'B', '_', '_'}));
  EXPECT_EQ(Name("\\").encode(), (Bytes{0x5c, 0x00}));
  EXPECT_TRUE(Name("COM1").is_single_segment());
  EXPECT_FALSE(Name("\\COM1").is_single_segment());
}

TEST(AcpiAml, RuntimeNamesAreValidated) {
  EXPECT_TRUE(Name::parse("VR00").has_value());
  EXPECT_TRUE(Name::parse("\\_SB_.VR1F").has_value());
  EXPECT_FALSE(Name::parse("").has_value());
  EXPECT_FALSE(Name::parse("0ABC").has_value());   // digit first
  EXPECT_FALSE(Name::parse("ABCDE").has_value());  // 5 characters
  EXPECT_FALSE(Name::parse("ab").has_value());     // lower case
  EXPECT_FALSE(Name::parse("A..B").has_value());   // empty segment
  EXPECT_FALSE(Name::parse("\\^A").has_value());   // root and parent prefix
  auto error = Name::parse("vr0");
  ASSERT_FALSE(error.has_value());
  EXPECT_NE(error.error().message().find("\"vr0\""), std::string::npos);
}

TEST(AcpiAml, EisaIdCompression) {
  // Section 6.1.5 (_HID): EISAID("PNP0501") is stored as 0x0105d041 (bytes 41 d0 05 01).
  static_assert(encode_eisa_id("PNP0501") == 0x0105d041u);
  static_assert(encode_eisa_id("PNP0A03") == 0x030ad041u);
  static_assert(encode_eisa_id("PNP0303") == 0x0303d041u);
  static_assert(encode_eisa_id("PNP0B00") == 0x000bd041u);
  EXPECT_FALSE(encode_eisa_id("PNP050").has_value());
  EXPECT_FALSE(encode_eisa_id("pnp0501").has_value());
  EXPECT_FALSE(encode_eisa_id("PNP05G1").has_value());
  EXPECT_EQ(eisa_id(0x0105d041), (Bytes{0x0c, 0x41, 0xd0, 0x05, 0x01}));
}

TEST(AcpiAml, PackageNameAndMethod) {
  // Name(_S5, Package(){5, 5}): NameOp, name, PackageOp, PkgLength, NumElements, elements.
  EXPECT_EQ(name("_S5", package({integer(5), integer(5)})),
            (Bytes{0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x05}));
  // Method(_STA, 0, NotSerialized) { Return (0x0f) }
  EXPECT_EQ(method_returning("_STA", integer(0x0f)),
            (Bytes{0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f}));
  // Method(ZZ, 2, Serialized) { Return (Package(){One, "a", Zero}) }
  EXPECT_EQ(method("ZZ", 2, true, {return_value(package({one(), string("a"), zero()}))}),
            (Bytes{0x14, 0x0f, 'Z', 'Z', '_', '_', 0x0a, 0xa4, 0x12, 0x07, 0x03, 0x01, 0x0d, 'a',
                   0x00, 0x00}));
  // Method(YY) { Return (\_SB.PCI0) }: a name reference as the returned term.
  EXPECT_EQ(method_returning("YY", name_ref("\\_SB.PCI0")),
            (Bytes{0x14, 0x11, 'Y', 'Y', '_', '_', 0x00, 0xa4, 0x5c, 0x2e, '_', 'S', 'B', '_', 'P',
                   'C', 'I', '0'}));
}

TEST(AcpiAml, LargePackageUsesVarPackage) {
  std::vector<Bytes> elements(300, zero());
  Bytes encoded = package(elements);
  EXPECT_EQ(encoded[0], 0x13);  // VarPackageOp
  // PkgLength (2 bytes: 3 + 300 + 2 = 305), then VarNumElements as a WordConst.
  EXPECT_EQ(Bytes(encoded.begin() + 1, encoded.begin() + 6),
            (Bytes{0x41, 0x13, 0x0b, 0x2c, 0x01}));
}

TEST(AcpiAml, ScopeAndNestedDevices) {
  // Scope(\_SB) { Device(PCI0) { Device(ISA) { Name(COM1, 2) } } }
  Bytes encoded = scope("\\_SB", {device("PCI0", {device("ISA", {name("COM1", integer(2))})})});
  EXPECT_EQ(encoded, (Bytes{0x10, 0x1b, 0x5c, '_', 'S', 'B', '_', 0x5b, 0x82, 0x13, 'P', 'C', 'I',
                            '0', 0x5b, 0x82, 0x0c, 'I', 'S', 'A', '_', 0x08, 'C', 'O', 'M', '1',
                            0x0a, 0x02}));
}

TEST(AcpiAml, SerialPortDeviceMatchesCompiler) {
  // Device(COM1) { Name(_HID, EisaId("PNP0501")) Name(_UID, One)
  //   Name(_CRS, ResourceTemplate() { IO(Decode16, 0x3f8, 0x3f8, 1, 8) IRQNoFlags() {4} }) }
  Bytes encoded = device(
      "COM1", {name("_HID", eisa_id(*encode_eisa_id("PNP0501"))), name("_UID", one()),
               name("_CRS", resource_template({io(0x3f8, 0x3f8, 1, 8), irq_no_flags(4)}))});
  const Bytes expected = {0x5b, 0x82, 0x2b, 'C',  'O',  'M',  '1',  0x08, '_',  'H',  'I',
                          'D',  0x0c, 0x41, 0xd0, 0x05, 0x01, 0x08, '_',  'U',  'I',  'D',
                          0x01, 0x08, '_',  'C',  'R',  'S',  0x11, 0x10, 0x0a, 0x0d, 0x47,
                          0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79,
                          0x00};
  EXPECT_EQ(encoded, expected);
}

TEST(AcpiAml, ResourceDescriptors) {
  // Memory32Fixed(ReadWrite, 0xd0000000, 0x200): tag 0x86, length 9, RW bit.
  EXPECT_EQ(memory32_fixed(true, 0xd0000000, 0x200),
            (Bytes{0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x02, 0x00, 0x00}));
  // Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {5}: tag 0x89, length 6.
  EXPECT_EQ(interrupt(5), (Bytes{0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00}));
  EXPECT_EQ(interrupt(40, {.consumer = true, .edge = false, .active_low = true, .shared = true}),
            (Bytes{0x89, 0x06, 0x00, 0x0d, 0x01, 0x28, 0x00, 0x00, 0x00}));
  // WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0xff, 0, 0x100)
  EXPECT_EQ(word_bus_number(0, 0xff),
            (Bytes{0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00,
                   0x00, 0x00, 0x01}));
  // QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0,
  //             0x100000000, 0x1ffffffff, 0, 0x100000000)
  Bytes qword = qword_memory(MemoryCaching::kCacheable, true, 0x100000000, 0x1ffffffff);
  const Bytes expected_qword = {
      0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03,                          // header, type, flags
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,              // granularity
      0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,              // minimum
      0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00,              // maximum
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,              // translation
      0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00};             // length
  EXPECT_EQ(qword, expected_qword);
  // WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0xd00, 0xffff,
  //        0, 0xf300)
  EXPECT_EQ(word_io(0x0d00, 0xffff),
            (Bytes{0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00, 0x0d, 0xff, 0xff, 0x00,
                   0x00, 0x00, 0xf3}));
  // DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0,
  //             0xc0000000, 0xdfffffff, 0, 0x20000000)
  EXPECT_EQ(dword_memory(MemoryCaching::kNonCacheable, true, 0xc0000000, 0xdfffffff),
            (Bytes{0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                   0xc0, 0xff, 0xff, 0xff, 0xdf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20}));
}

TEST(AcpiAml, ResourceTemplateEndsWithEndTag) {
  Bytes empty = resource_template(std::span<const Bytes>{});
  EXPECT_EQ(empty, (Bytes{0x11, 0x05, 0x0a, 0x02, 0x79, 0x00}));
}

}  // namespace
}  // namespace skiff::x86::aml
