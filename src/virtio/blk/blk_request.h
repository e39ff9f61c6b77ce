// SPDX-License-Identifier: Apache-2.0
// Parsing of one virtio-blk request (virtio 1.2 §5.2.6) from a descriptor chain. Pure: it
// reads the chain's readable bytes and checks them; executing is the device's job.
//
// Layout (any framing, §2.6.4): the readable part starts with the 16-byte header
// {le32 type, le32 reserved, le64 sector}, followed for OUT / DISCARD / WRITE_ZEROES by the
// payload; the writable part holds the IN / GET_ID payload, and its LAST byte is the status.
//
// Everything here is guest-controlled: lengths, sectors and segment counts are checked
// against the limits the device advertised, with overflow-safe arithmetic.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "virtio/blk/blk_constants.h"
#include "virtio/core/queue.h"

namespace skiff::virtio {

enum class BlkRequestType { kIn, kOut, kFlush, kGetId, kDiscard, kWriteZeroes, kUnsupported };

// What the device advertised, in the units the checks need.
struct BlkLimits {
  uint64_t capacity = 0;    // bytes, a multiple of 512
  uint32_t alignment = 512;  // byte offsets and lengths of I/O must be multiples of it
  bool read_only = false;
  bool discard = false;       // VIRTIO_BLK_F_DISCARD offered
  bool write_zeroes = false;  // VIRTIO_BLK_F_WRITE_ZEROES offered
  uint32_t seg_max = 126;     // data buffers per IN/OUT request
  uint32_t size_max = 1 << 20;  // bytes per data buffer
  uint32_t max_discard_sectors = 0;
  uint32_t max_discard_seg = 0;
  uint32_t max_write_zeroes_sectors = 0;
  uint32_t max_write_zeroes_seg = 0;
};

// One DISCARD or WRITE_ZEROES segment, in bytes.
struct BlkRange {
  uint64_t offset = 0;
  uint64_t len = 0;
  bool unmap = false;
  bool operator==(const BlkRange&) const = default;
};

struct BlkRequest {
  BlkRequestType type = BlkRequestType::kUnsupported;
  uint32_t raw_type = 0;
  uint64_t sector = 0;
  // The payload: device-readable for OUT, device-writable for IN and GET_ID (the status
  // byte excluded). Empty for the other types.
  std::vector<GuestBuffer> data;
  uint64_t data_len = 0;
  std::vector<BlkRange> ranges;  // DISCARD, WRITE_ZEROES
  // False when the chain has no writable byte for the status (or is malformed): it goes
  // back with used length 0.
  bool has_status = false;
  // kBlkStatusOk: execute the request. Anything else: answer with this status now.
  uint8_t status = kBlkStatusOk;
  std::string error;  // why status != OK or !has_status, for the (rate-limited) log

  uint64_t offset() const { return sector << kSectorShift; }
};

BlkRequest parse_blk_request(const DescriptorChain& chain, const BlkLimits& limits);

// True when [sector * 512, sector * 512 + len) lies inside `capacity` bytes, without
// overflowing for any input.
bool sector_range_ok(uint64_t sector, uint64_t len, uint64_t capacity);

// The part [offset, offset + len) of a list of buffers, as buffers. Stops at the end of the
// list.
std::vector<GuestBuffer> slice_buffers(std::span<const GuestBuffer> buffers, uint64_t offset,
                                       uint64_t len);

std::string_view to_string(BlkRequestType type);

}  // namespace skiff::virtio
