// SPDX-License-Identifier: Apache-2.0
// A small builder for ACPI Machine Language (AML) byte code: just what skiff's DSDT needs
// (names, integers, strings, packages, Name/Scope/Device/Method, resource templates).
// Each function returns the encoded bytes of one term; containers take their children's
// bytes. The encodings follow ACPI 6.4 section 20.2 ("AML Grammar Definition") and
// section 6.4 ("Resource Data Types for ACPI").
//
// Example: a device with a hardware id and two resources
//   aml::device("COM1", {aml::name("_HID", aml::eisa_id(*aml::encode_eisa_id("PNP0501"))),
//                        aml::name("_CRS", aml::resource_template({aml::io(0x3f8, 0x3f8, 1, 8),
//                                                                  aml::irq_no_flags(4)}))});
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "skiff/error.h"

namespace skiff::x86::aml {

using Bytes = std::vector<uint8_t>;

// Largest value a PkgLength can hold (ACPI 6.4 section 20.2.4: 28 bits), counting the
// PkgLength bytes themselves.
inline constexpr size_t kMaxPkgLength = (size_t{1} << 28) - 1;

// An AML NameString (ACPI 6.4 section 20.2.2): an optional root prefix `\` or parent
// prefixes `^`, then zero or more NameSegs separated by `.`. A segment has 1-4 characters
// (first 'A'-'Z' or '_', the rest also '0'-'9') and is padded with '_' to 4, so "_SB" and
// "_SB_" are the same name. A name built from a string literal is checked at compile time;
// names built at run time go through parse().
class Name {
 public:
  static constexpr size_t kMaxLength = 64;

  template <size_t N>
  consteval Name(const char (&text)[N]) {  // NOLINT(google-explicit-constructor)
    if (!assign(std::string_view(text, N - 1))) {
      throw "invalid AML NameString";  // a compile-time error: the literal is not a name
    }
  }
  static Result<Name> parse(std::string_view text);

  std::string_view text() const { return std::string_view(text_.data(), size_); }
  // The NameString encoding: prefixes, then NullName, one NameSeg, DualNamePrefix + 2 or
  // MultiNamePrefix + count + segments.
  Bytes encode() const;
  // True when the name is one NameSeg without prefixes (what Device() and Name() in a
  // device normally use).
  bool is_single_segment() const;

 private:
  constexpr Name() = default;
  constexpr bool assign(std::string_view text);

  std::array<char, kMaxLength> text_{};
  size_t size_ = 0;
};

// The PkgLength encoding for a package whose contents after the PkgLength are
// `content_length` bytes: the encoded value counts the PkgLength bytes too. One byte up to
// 63 total, then 2, 3 or 4 bytes (lead byte bits 7-6 = following byte count, bits 3-0 = low
// nibble). Returns nullopt beyond kMaxPkgLength.
std::optional<Bytes> encode_pkg_length(size_t content_length);

// --- Data objects (ACPI 6.4 section 20.2.3) -------------------------------------------------
Bytes zero();  // ZeroOp
Bytes one();   // OneOp
Bytes ones();  // OnesOp (all bits set)
// The shortest encoding of `value`: ZeroOp, OneOp, or Byte/Word/DWord/QWord prefix.
Bytes integer(uint64_t value);
// Fixed-width encodings, for fields whose width matters (e.g. an EISA id is a DWord).
Bytes byte_const(uint8_t value);
Bytes word_const(uint16_t value);
Bytes dword_const(uint32_t value);
Bytes qword_const(uint64_t value);
// StringPrefix, the ASCII characters, NUL. Characters outside 0x01-0x7f are replaced by '?'
// (AML strings are 7-bit ASCII without embedded NULs).
Bytes string(std::string_view text);
// BufferOp with the bytes as its initializer.
Bytes buffer(std::span<const uint8_t> data);
// PackageOp (or VarPackageOp beyond 255 elements) holding the elements.
Bytes package(std::span<const Bytes> elements);
Bytes package(std::initializer_list<Bytes> elements);
// A reference to a named object, used as a term argument (e.g. Return(NAME)).
Bytes name_ref(const Name& name);

// EISA compressed id (ACPI 6.4 section 6.1.5, _HID): "PNP0501" -> three letters of 5 bits
// each, then four hex digits, stored so the bytes read 0x41 0xd0 0x05 0x01. Returns nullopt
// unless the text is three 'A'-'Z' letters followed by four hex digits.
constexpr std::optional<uint32_t> encode_eisa_id(std::string_view text) {
  if (text.size() != 7) return std::nullopt;
  uint32_t letters = 0;
  for (size_t i = 0; i < 3; ++i) {
    const char c = text[i];
    if (c < 'A' || c > 'Z') return std::nullopt;
    letters = (letters << 5) | static_cast<uint32_t>(c - 0x40);
  }
  uint32_t digits = 0;
  for (size_t i = 3; i < 7; ++i) {
    const char c = text[i];
    uint32_t nibble = 0;
    if (c >= '0' && c <= '9') {
      nibble = static_cast<uint32_t>(c - '0');
    } else if (c >= 'A' && c <= 'F') {
      nibble = static_cast<uint32_t>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
    digits = (digits << 4) | nibble;
  }
  // Big-endian 15-bit letter field and 16-bit digit field, read as a little-endian DWord.
  const uint32_t big_endian = (letters << 16) | digits;
  return ((big_endian & 0xff) << 24) | ((big_endian & 0xff00) << 8) |
         ((big_endian >> 8) & 0xff00) | (big_endian >> 24);
}
// The DWord constant holding an encoded EISA id.
Bytes eisa_id(uint32_t encoded);

// --- Named objects and namespace modifiers (ACPI 6.4 sections 20.2.5.1-20.2.5.2) ----------
Bytes name(const Name& name, const Bytes& data);          // DefName
Bytes scope(const Name& name, std::span<const Bytes> terms);  // DefScope
Bytes scope(const Name& name, std::initializer_list<Bytes> terms);
Bytes device(const Name& name, std::span<const Bytes> terms);  // DefDevice
Bytes device(const Name& name, std::initializer_list<Bytes> terms);
// DefMethod; arg_count 0-7, sync_level 0-15 (larger values are clamped).
Bytes method(const Name& name, uint8_t arg_count, bool serialized, std::span<const Bytes> terms,
             uint8_t sync_level = 0);
Bytes method(const Name& name, uint8_t arg_count, bool serialized,
             std::initializer_list<Bytes> terms);
Bytes return_value(const Bytes& value);  // DefReturn
// A method without arguments that returns `value`, e.g. _STA returning 0x0f.
Bytes method_returning(const Name& name, const Bytes& value);

// --- Resource descriptors (ACPI 6.4 section 6.4) --------------------------------------------
// ResourceTemplate(): a Buffer of the descriptors followed by an End Tag (checksum 0).
Bytes resource_template(std::span<const Bytes> descriptors);
Bytes resource_template(std::initializer_list<Bytes> descriptors);
// I/O Port descriptor, 16-bit decode (section 6.4.2.5).
Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);
// IRQ descriptor without the flags byte (section 6.4.2.1): edge, active-high, exclusive.
// `irq` must be 0-15 (an ISA IRQ); other values are a programming error.
Bytes irq_no_flags(uint8_t irq);

struct InterruptFlags {
  bool consumer = true;       // ResourceConsumer
  bool edge = true;           // Edge (false: Level)
  bool active_low = false;    // ActiveLow (false: ActiveHigh)
  bool shared = false;        // Shared (false: Exclusive)
  bool wake_capable = false;  // SharedAndWake / ExclusiveAndWake
};
// Extended Interrupt descriptor with one GSI (section 6.4.3.6).
Bytes interrupt(uint32_t gsi, const InterruptFlags& flags = {});
// 32-bit Fixed Memory Range descriptor (section 6.4.3.4).
Bytes memory32_fixed(bool read_write, uint32_t base, uint32_t length);

enum class MemoryCaching : uint8_t {
  kNonCacheable = 0,
  kCacheable = 1,
  kWriteCombining = 2,
  kPrefetchable = 3,
};
// QWord/DWord Address Space descriptors for memory (sections 6.4.3.5.1-2), as a producer
// (a bridge's window) with fixed minimum and maximum and positive decode; the length is
// max - min + 1.
Bytes qword_memory(MemoryCaching caching, bool read_write, uint64_t min, uint64_t max,
                   uint64_t translation = 0);
Bytes dword_memory(MemoryCaching caching, bool read_write, uint32_t min, uint32_t max,
                   uint32_t translation = 0);
// Word Address Space descriptors (section 6.4.3.5.3) for a bus number range and an I/O
// range (EntireRange), as a producer with fixed minimum and maximum.
Bytes word_bus_number(uint16_t min, uint16_t max);
Bytes word_io(uint16_t min, uint16_t max, uint16_t translation = 0);

// Concatenates terms (e.g. a DSDT's term list).
Bytes concat(std::span<const Bytes> terms);

// --- implementation of the compile-time name check ---------------------------------------
constexpr bool Name::assign(std::string_view text) {
  if (text.size() > kMaxLength) return false;
  size_t pos = 0;
  if (pos < text.size() && text[pos] == '\\') {
    ++pos;
  } else {
    while (pos < text.size() && text[pos] == '^') ++pos;
  }
  const bool has_prefix = pos > 0;
  if (pos == text.size()) {
    // Only a prefix: the NullName, valid after a prefix (e.g. Scope(\)).
    if (!has_prefix) return false;
  } else {
    size_t segment_length = 0;
    for (size_t i = pos; i <= text.size(); ++i) {
      if (i == text.size() || text[i] == '.') {
        if (segment_length == 0 || segment_length > 4) return false;
        segment_length = 0;
        continue;
      }
      const char c = text[i];
      const bool lead = (c >= 'A' && c <= 'Z') || c == '_';
      const bool digit = c >= '0' && c <= '9';
      if (segment_length == 0 ? !lead : !(lead || digit)) return false;
      ++segment_length;
    }
  }
  for (size_t i = 0; i < text.size(); ++i) text_[i] = text[i];
  size_ = text.size();
  return true;
}

}  // namespace skiff::x86::aml
