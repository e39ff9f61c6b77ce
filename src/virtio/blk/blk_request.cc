// SPDX-License-Identifier: Apache-2.0
#include "virtio/blk/blk_request.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#include <fmt/format.h>

namespace skiff::virtio {
namespace {

static_assert(std::endian::native == std::endian::little, "virtio-blk fields are little-endian");

template <typename T>
T load(const uint8_t* bytes) {
  T value;
  std::memcpy(&value, bytes, sizeof(T));
  return value;
}

BlkRequest& fail(BlkRequest& request, uint8_t status, std::string why) {
  request.status = status;
  request.error = std::move(why);
  return request;
}

// The checks shared by IN and OUT.
void check_transfer(BlkRequest& request, const BlkLimits& limits) {
  if (request.data.size() > limits.seg_max) {
    fail(request, kBlkStatusIoErr,
         fmt::format("{} data buffers, more than seg_max {}", request.data.size(), limits.seg_max));
    return;
  }
  for (const GuestBuffer& buffer : request.data) {
    if (buffer.len > limits.size_max) {
      fail(request, kBlkStatusIoErr,
           fmt::format("a {}-byte data buffer, more than size_max {}", buffer.len, limits.size_max));
      return;
    }
  }
  // §5.2.6: data is read or written "in multiples of 512 bytes".
  if (request.data_len % kSectorSize != 0) {
    fail(request, kBlkStatusIoErr, fmt::format("data length {} is not a multiple of 512", request.data_len));
    return;
  }
  if (!sector_range_ok(request.sector, request.data_len, limits.capacity)) {
    fail(request, kBlkStatusIoErr,
         fmt::format("sector {} + {} bytes is beyond the capacity of {} sectors", request.sector,
                     request.data_len, limits.capacity >> kSectorShift));
    return;
  }
  // Direct I/O (and block devices) take only whole logical blocks; blk_size told the driver.
  if (request.offset() % limits.alignment != 0 || request.data_len % limits.alignment != 0) {
    fail(request, kBlkStatusIoErr,
         fmt::format("sector {} / {} bytes is not aligned to the {}-byte logical block",
                     request.sector, request.data_len, limits.alignment));
  }
}

// DISCARD and WRITE_ZEROES: the readable payload is an array of 16-byte segments.
void parse_segments(BlkRequest& request, const DescriptorChain& chain, const BlkLimits& limits) {
  const bool discard = request.type == BlkRequestType::kDiscard;
  const uint32_t max_segments = discard ? limits.max_discard_seg : limits.max_write_zeroes_seg;
  const uint32_t max_sectors = discard ? limits.max_discard_sectors : limits.max_write_zeroes_sectors;
  const uint64_t payload = chain.readable_len() - kBlkHeaderSize;
  if (payload == 0 || payload % kBlkSegmentSize != 0) {
    fail(request, kBlkStatusIoErr,
         fmt::format("{}-byte payload is not a whole number of 16-byte segments", payload));
    return;
  }
  const uint64_t count = payload / kBlkSegmentSize;
  if (count > max_segments) {
    fail(request, kBlkStatusIoErr, fmt::format("{} segments, more than the {} advertised", count, max_segments));
    return;
  }
  request.ranges.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    std::array<uint8_t, kBlkSegmentSize> raw{};
    if (chain.read_at(kBlkHeaderSize + i * kBlkSegmentSize, raw) != raw.size()) {
      fail(request, kBlkStatusIoErr, "segment could not be read");
      return;
    }
    const auto sector = load<uint64_t>(raw.data());
    const auto num_sectors = load<uint32_t>(raw.data() + 8);
    const auto flags = load<uint32_t>(raw.data() + 12);
    // §5.2.6.2: UNSUPP for any unknown flag, and for DISCARD with unmap set.
    if ((flags & ~kBlkSegmentFlagUnmap) != 0 || (discard && (flags & kBlkSegmentFlagUnmap) != 0)) {
      fail(request, kBlkStatusUnsupp, fmt::format("segment flags {:#x} not supported", flags));
      return;
    }
    if (num_sectors > max_sectors) {
      fail(request, kBlkStatusIoErr,
           fmt::format("segment of {} sectors, more than the {} advertised", num_sectors, max_sectors));
      return;
    }
    const uint64_t len = uint64_t{num_sectors} << kSectorShift;
    if (!sector_range_ok(sector, len, limits.capacity)) {
      fail(request, kBlkStatusIoErr,
           fmt::format("segment sector {} + {} sectors is beyond the capacity of {} sectors", sector,
                       num_sectors, limits.capacity >> kSectorShift));
      return;
    }
    const uint64_t offset = sector << kSectorShift;
    if (offset % limits.alignment != 0 || len % limits.alignment != 0) {
      fail(request, kBlkStatusIoErr,
           fmt::format("segment sector {} + {} sectors is not aligned to the {}-byte logical block",
                       sector, num_sectors, limits.alignment));
      return;
    }
    request.ranges.push_back({offset, len, (flags & kBlkSegmentFlagUnmap) != 0});
  }
}

}  // namespace

bool sector_range_ok(uint64_t sector, uint64_t len, uint64_t capacity) {
  if (sector > (capacity >> kSectorShift)) return false;
  const uint64_t offset = sector << kSectorShift;  // cannot wrap: sector <= capacity / 512
  return len <= capacity - offset;
}

std::vector<GuestBuffer> slice_buffers(std::span<const GuestBuffer> buffers, uint64_t offset,
                                       uint64_t len) {
  std::vector<GuestBuffer> out;
  for (const GuestBuffer& buffer : buffers) {
    if (len == 0) break;
    if (offset >= buffer.len) {
      offset -= buffer.len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(buffer.len - offset, len);
    out.push_back({buffer.addr + offset, static_cast<uint32_t>(take)});
    len -= take;
    offset = 0;
  }
  return out;
}

BlkRequest parse_blk_request(const DescriptorChain& chain, const BlkLimits& limits) {
  BlkRequest request;
  if (chain.malformed()) return fail(request, kBlkStatusIoErr, "malformed chain: " + chain.error());
  // §5.2.6: the status is the last byte the device writes; without one nothing can be
  // answered.
  if (chain.writable_len() == 0) {
    return fail(request, kBlkStatusIoErr, "no device-writable byte for the status");
  }
  request.has_status = true;
  if (chain.readable_len() < kBlkHeaderSize) {
    return fail(request, kBlkStatusIoErr,
                fmt::format("header is {} bytes, needs {}", chain.readable_len(), kBlkHeaderSize));
  }
  std::array<uint8_t, kBlkHeaderSize> header{};
  if (chain.read_at(0, header) != header.size()) {
    return fail(request, kBlkStatusIoErr, "header could not be read");
  }
  request.raw_type = load<uint32_t>(header.data());
  request.sector = load<uint64_t>(header.data() + 8);
  const uint64_t writable_payload = chain.writable_len() - 1;
  switch (request.raw_type) {
    case kBlkTypeIn:
      request.type = BlkRequestType::kIn;
      request.data = slice_buffers(chain.writable(), 0, writable_payload);
      request.data_len = writable_payload;
      check_transfer(request, limits);
      break;
    case kBlkTypeOut:
      request.type = BlkRequestType::kOut;
      // §5.2.6.2: "IOERR for a write request if the VIRTIO_BLK_F_RO feature if offered, and
      // MUST NOT write any data."
      if (limits.read_only) return fail(request, kBlkStatusIoErr, "write to a read-only disk");
      request.data = slice_buffers(chain.readable(), kBlkHeaderSize, chain.readable_len() - kBlkHeaderSize);
      request.data_len = chain.readable_len() - kBlkHeaderSize;
      check_transfer(request, limits);
      break;
    case kBlkTypeFlush:
      // Allowed on read-only disks too: firmware (OVMF) flushes them.
      request.type = BlkRequestType::kFlush;
      break;
    case kBlkTypeGetId:
      request.type = BlkRequestType::kGetId;
      request.data = slice_buffers(chain.writable(), 0, writable_payload);
      request.data_len = writable_payload;
      break;
    case kBlkTypeDiscard:
    case kBlkTypeWriteZeroes: {
      const bool discard = request.raw_type == kBlkTypeDiscard;
      request.type = discard ? BlkRequestType::kDiscard : BlkRequestType::kWriteZeroes;
      if (!(discard ? limits.discard : limits.write_zeroes)) {
        return fail(request, kBlkStatusUnsupp,
                    fmt::format("{} was not offered", discard ? "DISCARD" : "WRITE_ZEROES"));
      }
      if (limits.read_only) return fail(request, kBlkStatusIoErr, "write to a read-only disk");
      parse_segments(request, chain, limits);
      break;
    }
    default:
      request.type = BlkRequestType::kUnsupported;
      return fail(request, kBlkStatusUnsupp, fmt::format("request type {} is not supported", request.raw_type));
  }
  return request;
}

std::string_view to_string(BlkRequestType type) {
  switch (type) {
    case BlkRequestType::kIn:
      return "IN";
    case BlkRequestType::kOut:
      return "OUT";
    case BlkRequestType::kFlush:
      return "FLUSH";
    case BlkRequestType::kGetId:
      return "GET_ID";
    case BlkRequestType::kDiscard:
      return "DISCARD";
    case BlkRequestType::kWriteZeroes:
      return "WRITE_ZEROES";
    case BlkRequestType::kUnsupported:
      break;
  }
  return "UNSUPPORTED";
}

}  // namespace skiff::virtio
