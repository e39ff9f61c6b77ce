// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for virtio-blk request parsing (src/virtio/blk/blk_request.cc):
// parse_blk_request() on descriptor chains the input describes, under device limits the
// input also chooses, plus sector_range_ok() and slice_buffers() on raw values.
//
// Input layout (fuzz/corpus/make_blk_request_corpus.py writes seeds in this format):
//   u64 capacity (rounded down to 512)   u8 alignment: 512 << (b % 4)
//   u8 flags: bit 0 read-only, bit 1 DISCARD offered, bit 2 WRITE_ZEROES offered,
//             bit 3 VIRTIO_F_INDIRECT_DESC negotiated
//   u8 seg_max   u32 size_max   u32 max_discard_sectors   u8 max_discard_seg
//   u32 max_write_zeroes_sectors   u8 max_write_zeroes_seg
//   u8 chain count - 1 (1..4), then each chain as read_chain() in fuzz_support.h reads it
//   u64 sector, u64 len, u64 capacity for sector_range_ok; u32 offset, u32 len for
//   slice_buffers over the last chain's readable buffers
// Invariants (besides the sanitizers): a request accepted with status OK stays inside the
// advertised limits and the capacity, its data buffers lie in guest RAM and add up to
// data_len, discard/write-zeroes ranges are in bounds and aligned, and an answer the device
// writes (status byte, IN data) lands in the chain's writable buffers.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.h"
#include "virtio/blk/blk_request.h"

namespace {

using namespace skiff::virtio;
using skiff::fuzz::check;
using skiff::fuzz::FuzzReader;

constexpr uint64_t kRamBase = 0x100000;
constexpr uint64_t kRamSize = 0x40000;

bool reference_sector_range_ok(uint64_t sector, uint64_t len, uint64_t capacity) {
  const unsigned __int128 end = (static_cast<unsigned __int128>(sector) << kSectorShift) + len;
  return end <= capacity;
}

void check_request(const BlkRequest& request, const DescriptorChain& chain, const BlkLimits& limits,
                   const skiff::GuestMemory& memory) {
  if (chain.malformed() || chain.writable_len() == 0) check(!request.has_status);
  if (!request.has_status || request.status != kBlkStatusOk) {
    check(!request.error.empty());
    return;
  }
  check(request.error.empty());
  uint64_t total = 0;
  for (const GuestBuffer& buffer : request.data) {
    check(buffer.len != 0 && memory.contains(buffer.addr, buffer.len));
    total += buffer.len;
  }
  check(total == request.data_len);
  switch (request.type) {
    case BlkRequestType::kIn:
    case BlkRequestType::kOut:
      check(request.data.size() <= limits.seg_max);
      for (const GuestBuffer& buffer : request.data) check(buffer.len <= limits.size_max);
      check(request.data_len % kSectorSize == 0);
      check(reference_sector_range_ok(request.sector, request.data_len, limits.capacity));
      check(request.offset() % limits.alignment == 0 && request.data_len % limits.alignment == 0);
      if (request.type == BlkRequestType::kIn) {
        check(request.data_len == chain.writable_len() - 1);
      } else {
        check(!limits.read_only);
        check(request.data_len == chain.readable_len() - kBlkHeaderSize);
      }
      break;
    case BlkRequestType::kGetId:
      check(request.data_len == chain.writable_len() - 1);
      break;
    case BlkRequestType::kFlush:
      check(request.data.empty());
      break;
    case BlkRequestType::kDiscard:
    case BlkRequestType::kWriteZeroes: {
      const bool discard = request.type == BlkRequestType::kDiscard;
      check(!limits.read_only && (discard ? limits.discard : limits.write_zeroes));
      check(!request.ranges.empty());
      check(request.ranges.size() <= (discard ? limits.max_discard_seg : limits.max_write_zeroes_seg));
      check(request.ranges.size() * kBlkSegmentSize == chain.readable_len() - kBlkHeaderSize);
      const uint64_t max_bytes =
          uint64_t{discard ? limits.max_discard_sectors : limits.max_write_zeroes_sectors} << kSectorShift;
      for (const BlkRange& range : request.ranges) {
        check(range.len <= max_bytes);
        check(range.offset <= limits.capacity && range.len <= limits.capacity - range.offset);
        check(range.offset % limits.alignment == 0 && range.len % limits.alignment == 0);
        check(!(discard && range.unmap));
      }
      break;
    }
    case BlkRequestType::kUnsupported:
      check(false);  // always answered UNSUPP
      break;
  }
}

// What the device does with the request: fills IN / GET_ID data, writes the status byte.
void answer(const BlkRequest& request, const DescriptorChain& chain, const skiff::GuestMemory& memory) {
  if (!request.has_status) return;
  if (request.status == kBlkStatusOk &&
      (request.type == BlkRequestType::kIn || request.type == BlkRequestType::kGetId)) {
    for (const GuestBuffer& buffer : request.data) check(memory.fill(buffer.addr, 0x5a, buffer.len).has_value());
  }
  const uint8_t status = request.status;
  check(chain.write_at(chain.writable_len() - 1, std::span<const uint8_t>(&status, 1)) == 1);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  skiff::fuzz::quiet_logs_unless_verbose();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzReader in(data, size);
  BlkLimits limits;
  limits.capacity = in.u64() & ~uint64_t{kSectorSize - 1};
  limits.alignment = static_cast<uint32_t>(kSectorSize << (in.u8() % 4));
  const uint8_t flags = in.u8();
  limits.read_only = (flags & 1) != 0;
  limits.discard = (flags & 2) != 0;
  limits.write_zeroes = (flags & 4) != 0;
  limits.seg_max = in.u8();
  limits.size_max = in.u32();
  limits.max_discard_sectors = in.u32();
  limits.max_discard_seg = in.u8();
  limits.max_write_zeroes_sectors = in.u32();
  limits.max_write_zeroes_seg = in.u8();

  skiff::fuzz::FuzzRam ram(kRamBase, kRamSize);
  skiff::fuzz::DriverRing ring(ram, 16, "fuzz virtio-blk queue");
  uint64_t features = feature_mask(kFeatureVersion1);
  if (flags & 8) features |= feature_mask(kFeatureRingIndirectDesc);
  check(ring.queue().activate(ram.memory(), features).has_value());

  const size_t chains = 1 + in.u8() % 4;
  for (size_t i = 0; i < chains; ++i) {
    if (!skiff::fuzz::read_chain(in, ram, ring)) break;
  }

  std::vector<GuestBuffer> last_readable;
  while (auto chain = ring.queue().pop()) {
    const BlkRequest request = parse_blk_request(*chain, limits);
    check_request(request, *chain, limits, ram.memory());
    answer(request, *chain, ram.memory());
    last_readable.assign(chain->readable().begin(), chain->readable().end());
    ring.queue().add_used(std::move(*chain), request.has_status ? static_cast<uint32_t>(request.data_len + 1) : 0);
  }
  check(ring.used_idx() == ring.published());

  const uint64_t sector = in.u64();
  const uint64_t len = in.u64();
  const uint64_t capacity = in.u64() & ~uint64_t{kSectorSize - 1};
  check(sector_range_ok(sector, len, capacity) == reference_sector_range_ok(sector, len, capacity));

  const uint64_t offset = in.u32();
  const uint64_t slice_len = in.u32();
  uint64_t total = 0;
  for (const GuestBuffer& buffer : last_readable) total += buffer.len;
  const std::vector<GuestBuffer> slice = slice_buffers(last_readable, offset, slice_len);
  uint64_t sliced = 0;
  for (const GuestBuffer& buffer : slice) {
    check(buffer.len != 0 && ram.memory().contains(buffer.addr, buffer.len));
    sliced += buffer.len;
  }
  check(sliced == (offset >= total ? 0 : std::min(slice_len, total - offset)));
  return 0;
}
