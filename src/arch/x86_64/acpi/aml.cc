// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/acpi/aml.h"

#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff::x86::aml {
namespace {

// Opcodes and prefixes (ACPI 6.4 section 20.3, "AML Byte Stream Byte Values").
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kVarPackageOp = 0x13;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kOnesOp = 0xff;

// Resource descriptor tags (ACPI 6.4 sections 6.4.2 and 6.4.3).
constexpr uint8_t kIrqNoFlagsTag = 0x22;     // small item 0x04, length 2
constexpr uint8_t kIoPortTag = 0x47;         // small item 0x08, length 7
constexpr uint8_t kEndTag = 0x79;            // small item 0x0f, length 1
constexpr uint8_t kMemory32FixedTag = 0x86;  // large item 0x06
constexpr uint8_t kDWordAddressTag = 0x87;   // large item 0x07
constexpr uint8_t kWordAddressTag = 0x88;    // large item 0x08
constexpr uint8_t kExtendedIrqTag = 0x89;    // large item 0x09
constexpr uint8_t kQWordAddressTag = 0x8a;   // large item 0x0a

// Address space resource types and general flags (section 6.4.3.5).
constexpr uint8_t kResourceTypeMemory = 0;
constexpr uint8_t kResourceTypeIo = 1;
constexpr uint8_t kResourceTypeBusNumber = 2;
constexpr uint8_t kGeneralFlagsMinFixed = 1 << 2;
constexpr uint8_t kGeneralFlagsMaxFixed = 1 << 3;
// Producer (bit 0 clear), positive decode (bit 1 clear), fixed minimum and maximum.
constexpr uint8_t kBridgeWindowFlags = kGeneralFlagsMinFixed | kGeneralFlagsMaxFixed;
constexpr uint8_t kIoRangeEntire = 3;  // I/O type-specific flags _RNG: ISA and non-ISA ranges

// Building AML is driven by skiff's own code with bounded inputs; an object that cannot be
// encoded is a bug in the caller, like an out-of-range array index.
[[noreturn]] void invariant_failed(const std::string& what) {
  spdlog::critical("AML builder: {}", what);
  std::abort();
}

void append(Bytes& out, const Bytes& data) { out.insert(out.end(), data.begin(), data.end()); }

template <typename T>
void append_le(Bytes& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(value) >> (8 * i)));
  }
}

// Opcode bytes, PkgLength, then the body.
Bytes with_pkg_length(std::initializer_list<uint8_t> opcode, const Bytes& body) {
  auto length = encode_pkg_length(body.size());
  if (!length) invariant_failed(fmt::format("package body of {} bytes is too large", body.size()));
  Bytes out(opcode);
  append(out, *length);
  append(out, body);
  return out;
}

Bytes named_container(std::initializer_list<uint8_t> opcode, const Name& name,
                      std::span<const Bytes> terms) {
  Bytes body = name.encode();
  for (const Bytes& term : terms) append(body, term);
  return with_pkg_length(opcode, body);
}

Bytes address_descriptor_header(uint8_t tag, uint16_t length, uint8_t type, uint8_t general,
                                uint8_t type_specific) {
  Bytes out{tag};
  append_le<uint16_t>(out, length);
  out.push_back(type);
  out.push_back(general);
  out.push_back(type_specific);
  return out;
}

uint8_t memory_type_flags(MemoryCaching caching, bool read_write) {
  return static_cast<uint8_t>((static_cast<uint8_t>(caching) << 1) | (read_write ? 1 : 0));
}

}  // namespace

Result<Name> Name::parse(std::string_view text) {
  Name result;
  if (!result.assign(text)) {
    return config_error(fmt::format(
        "AML name \"{}\": expected an optional \\ or ^ prefix and '.'-separated segments of "
        "1-4 characters (A-Z, 0-9, _; not starting with a digit), at most {} characters",
        text, kMaxLength));
  }
  return result;
}

bool Name::is_single_segment() const {
  const std::string_view t = text();
  return !t.empty() && t.front() != '\\' && t.front() != '^' &&
         t.find('.') == std::string_view::npos;
}

Bytes Name::encode() const {
  const std::string_view t = text();
  Bytes out;
  size_t pos = 0;
  while (pos < t.size() && (t[pos] == '\\' || t[pos] == '^')) {
    out.push_back(static_cast<uint8_t>(t[pos]));
    ++pos;
  }
  std::vector<std::string_view> segments;
  while (pos < t.size()) {
    size_t dot = t.find('.', pos);
    if (dot == std::string_view::npos) dot = t.size();
    segments.push_back(t.substr(pos, dot - pos));
    pos = dot + 1;
  }
  if (segments.empty()) {
    out.push_back(0x00);  // NullName
    return out;
  }
  if (segments.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segments.size() > 2) {
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segments.size()));  // at most 64 / 2 segments
  }
  for (std::string_view segment : segments) {
    for (size_t i = 0; i < 4; ++i) {
      out.push_back(static_cast<uint8_t>(i < segment.size() ? segment[i] : '_'));
    }
  }
  return out;
}

std::optional<Bytes> encode_pkg_length(size_t content_length) {
  // ACPI 6.4 section 20.2.4: the value includes the PkgLength bytes; a single byte holds
  // up to 63 (bits 5-0); longer forms keep the low nibble in bits 3-0 of the lead byte
  // (bits 5-4 zero) and 8 more bits in each following byte.
  if (content_length + 1 <= 0x3f) return Bytes{static_cast<uint8_t>(content_length + 1)};
  for (size_t extra = 1; extra <= 3; ++extra) {
    const size_t total = content_length + 1 + extra;
    if (total >= (size_t{1} << (4 + 8 * extra))) continue;
    Bytes out;
    out.push_back(static_cast<uint8_t>((extra << 6) | (total & 0x0f)));
    for (size_t i = 0; i < extra; ++i) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
    return out;
  }
  return std::nullopt;
}

Bytes zero() { return {kZeroOp}; }
Bytes one() { return {kOneOp}; }
Bytes ones() { return {kOnesOp}; }

Bytes integer(uint64_t value) {
  if (value == 0) return zero();
  if (value == 1) return one();
  if (value <= 0xff) return byte_const(static_cast<uint8_t>(value));
  if (value <= 0xffff) return word_const(static_cast<uint16_t>(value));
  if (value <= 0xffffffff) return dword_const(static_cast<uint32_t>(value));
  return qword_const(value);
}

Bytes byte_const(uint8_t value) { return {kBytePrefix, value}; }

Bytes word_const(uint16_t value) {
  Bytes out{kWordPrefix};
  append_le(out, value);
  return out;
}

Bytes dword_const(uint32_t value) {
  Bytes out{kDWordPrefix};
  append_le(out, value);
  return out;
}

Bytes qword_const(uint64_t value) {
  Bytes out{kQWordPrefix};
  append_le(out, value);
  return out;
}

Bytes string(std::string_view text) {
  Bytes out{kStringPrefix};
  for (char c : text) {
    const auto byte = static_cast<uint8_t>(c);
    out.push_back(byte >= 0x01 && byte <= 0x7f ? byte : static_cast<uint8_t>('?'));
  }
  out.push_back(0x00);
  return out;
}

Bytes buffer(std::span<const uint8_t> data) {
  Bytes body = integer(data.size());  // BufferSize
  body.insert(body.end(), data.begin(), data.end());
  return with_pkg_length({kBufferOp}, body);
}

Bytes package(std::span<const Bytes> elements) {
  Bytes body;
  uint8_t opcode = kPackageOp;
  if (elements.size() <= 0xff) {
    body.push_back(static_cast<uint8_t>(elements.size()));  // NumElements
  } else {
    opcode = kVarPackageOp;  // VarNumElements is a TermArg
    body = integer(elements.size());
  }
  for (const Bytes& element : elements) append(body, element);
  return with_pkg_length({opcode}, body);
}

Bytes package(std::initializer_list<Bytes> elements) {
  return package(std::span<const Bytes>(elements.begin(), elements.size()));
}

Bytes name_ref(const Name& name) { return name.encode(); }

Bytes eisa_id(uint32_t encoded) { return dword_const(encoded); }

Bytes name(const Name& name, const Bytes& data) {
  Bytes out{kNameOp};
  append(out, name.encode());
  append(out, data);
  return out;
}

Bytes scope(const Name& name, std::span<const Bytes> terms) {
  return named_container({kScopeOp}, name, terms);
}

Bytes scope(const Name& name, std::initializer_list<Bytes> terms) {
  return scope(name, std::span<const Bytes>(terms.begin(), terms.size()));
}

Bytes device(const Name& name, std::span<const Bytes> terms) {
  return named_container({kExtOpPrefix, kDeviceOp}, name, terms);
}

Bytes device(const Name& name, std::initializer_list<Bytes> terms) {
  return device(name, std::span<const Bytes>(terms.begin(), terms.size()));
}

Bytes method(const Name& name, uint8_t arg_count, bool serialized, std::span<const Bytes> terms,
             uint8_t sync_level) {
  // MethodFlags (section 20.2.5.2): bits 2-0 ArgCount, bit 3 SerializeFlag, bits 7-4
  // SyncLevel.
  const auto flags = static_cast<uint8_t>((arg_count > 7 ? 7 : arg_count) |
                                          (serialized ? 0x08 : 0x00) |
                                          ((sync_level > 15 ? 15 : sync_level) << 4));
  Bytes body = name.encode();
  body.push_back(flags);
  for (const Bytes& term : terms) append(body, term);
  return with_pkg_length({kMethodOp}, body);
}

Bytes method(const Name& name, uint8_t arg_count, bool serialized,
             std::initializer_list<Bytes> terms) {
  return method(name, arg_count, serialized, std::span<const Bytes>(terms.begin(), terms.size()));
}

Bytes return_value(const Bytes& value) {
  Bytes out{kReturnOp};
  append(out, value);
  return out;
}

Bytes method_returning(const Name& name, const Bytes& value) {
  return method(name, 0, false, {return_value(value)});
}

Bytes resource_template(std::span<const Bytes> descriptors) {
  Bytes data;
  for (const Bytes& descriptor : descriptors) append(data, descriptor);
  // End Tag (section 6.4.2.9): a zero checksum means "treat the template as valid".
  data.push_back(kEndTag);
  data.push_back(0x00);
  return buffer(data);
}

Bytes resource_template(std::initializer_list<Bytes> descriptors) {
  return resource_template(std::span<const Bytes>(descriptors.begin(), descriptors.size()));
}

Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
  Bytes out{kIoPortTag, 0x01};  // information byte: bit 0 = 16-bit decode
  append_le(out, min);
  append_le(out, max);
  out.push_back(alignment);
  out.push_back(length);
  return out;
}

Bytes irq_no_flags(uint8_t irq) {
  if (irq > 15) invariant_failed(fmt::format("IRQ descriptor for IRQ {}: only 0-15 exist", irq));
  Bytes out{kIrqNoFlagsTag};
  append_le(out, static_cast<uint16_t>(1u << irq));  // _INT: one bit per IRQ
  return out;
}

Bytes interrupt(uint32_t gsi, const InterruptFlags& flags) {
  // Flags (section 6.4.3.6): bit 0 consumer, bit 1 edge, bit 2 active-low, bit 3 shared,
  // bit 4 wake capable.
  const auto flag_byte =
      static_cast<uint8_t>((flags.consumer ? 0x01 : 0) | (flags.edge ? 0x02 : 0) |
                           (flags.active_low ? 0x04 : 0) | (flags.shared ? 0x08 : 0) |
                           (flags.wake_capable ? 0x10 : 0));
  Bytes out{kExtendedIrqTag};
  append_le<uint16_t>(out, 6);  // flags, count, one DWord; no resource source
  out.push_back(flag_byte);
  out.push_back(1);  // interrupt table length
  append_le(out, gsi);
  return out;
}

Bytes memory32_fixed(bool read_write, uint32_t base, uint32_t length) {
  Bytes out{kMemory32FixedTag};
  append_le<uint16_t>(out, 9);
  out.push_back(read_write ? 0x01 : 0x00);
  append_le(out, base);
  append_le(out, length);
  return out;
}

Bytes qword_memory(MemoryCaching caching, bool read_write, uint64_t min, uint64_t max,
                   uint64_t translation) {
  Bytes out = address_descriptor_header(kQWordAddressTag, 43, kResourceTypeMemory,
                                        kBridgeWindowFlags, memory_type_flags(caching, read_write));
  append_le<uint64_t>(out, 0);  // granularity
  append_le(out, min);
  append_le(out, max);
  append_le(out, translation);
  append_le<uint64_t>(out, max - min + 1);
  return out;
}

Bytes dword_memory(MemoryCaching caching, bool read_write, uint32_t min, uint32_t max,
                   uint32_t translation) {
  Bytes out = address_descriptor_header(kDWordAddressTag, 23, kResourceTypeMemory,
                                        kBridgeWindowFlags, memory_type_flags(caching, read_write));
  append_le<uint32_t>(out, 0);  // granularity
  append_le(out, min);
  append_le(out, max);
  append_le(out, translation);
  append_le<uint32_t>(out, max - min + 1);
  return out;
}

Bytes word_bus_number(uint16_t min, uint16_t max) {
  Bytes out = address_descriptor_header(kWordAddressTag, 13, kResourceTypeBusNumber,
                                        kBridgeWindowFlags, 0);
  append_le<uint16_t>(out, 0);  // granularity
  append_le(out, min);
  append_le(out, max);
  append_le<uint16_t>(out, 0);  // translation
  append_le(out, static_cast<uint16_t>(max - min + 1));
  return out;
}

Bytes word_io(uint16_t min, uint16_t max, uint16_t translation) {
  Bytes out = address_descriptor_header(kWordAddressTag, 13, kResourceTypeIo, kBridgeWindowFlags,
                                        kIoRangeEntire);
  append_le<uint16_t>(out, 0);  // granularity
  append_le(out, min);
  append_le(out, max);
  append_le(out, translation);
  append_le(out, static_cast<uint16_t>(max - min + 1));
  return out;
}

Bytes concat(std::span<const Bytes> terms) {
  Bytes out;
  for (const Bytes& term : terms) append(out, term);
  return out;
}

}  // namespace skiff::x86::aml
