// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the split virtqueue (src/virtio/core/queue.cc): the input is a queue
// configuration plus the contents of guest RAM, so the fuzzer writes the descriptor table,
// the available ring, indirect tables and the buffers, exactly as a hostile driver can.
// The device side pops every chain, touches all its buffers, and returns it (add_used or
// dropped); the invariants below are checked with __builtin_trap() so libFuzzer reports a
// violation as a crash.
//
// Input layout (fuzz/corpus/make_virtqueue_corpus.py writes seeds in this format):
//   [0]     queue size = 1 << (byte % 9)                (1 .. 256)
//   [1]     bit 0: VIRTIO_F_INDIRECT_DESC negotiated
//           bit 1: VIRTIO_F_EVENT_IDX negotiated
//           bit 2: ring addresses from bytes [4, 10) instead of the default layout
//           bit 3: drop every other chain instead of add_used() (the destructor returns it)
//           bit 4: disable notifications while popping
//   [2, 4)  le16 added to the available idx before a second round of pops
//   [4, 10) three le16 offsets (descriptor table, available ring, used ring) into RAM
//   [10, )  the first bytes of guest RAM (the rest is zero)
// Guest RAM is one 64 KiB region at kRamBase, so addresses below it and above it are
// outside RAM. The default layout packs the rings at the start of RAM: descriptor table
// at offset 0, available ring right after it, used ring after that (4-byte aligned).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include <spdlog/spdlog.h>

#include "memory/guest_memory.h"
#include "virtio/core/queue.h"
#include "virtio/core/virtio_constants.h"

namespace {

using skiff::GuestMemory;
using skiff::GuestRegion;
using namespace skiff::virtio;

constexpr uint64_t kRamBase = 0x10000;
constexpr uint64_t kRamSize = 0x10000;
constexpr size_t kHeaderSize = 10;

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

void check(bool condition) {
  if (!condition) __builtin_trap();
}

// The device side: every buffer is inside RAM, the lengths add up, and the copies stop
// at the end of the buffers.
void use_chain(Queue& queue, const GuestMemory& memory, std::optional<DescriptorChain> chain,
               bool drop, uint32_t round) {
  uint64_t readable = 0;
  for (const GuestBuffer& buffer : chain->readable()) {
    check(buffer.len != 0 && memory.contains(buffer.addr, buffer.len));
    readable += buffer.len;
  }
  uint64_t writable = 0;
  for (const GuestBuffer& buffer : chain->writable()) {
    check(buffer.len != 0 && memory.contains(buffer.addr, buffer.len));
    writable += buffer.len;
  }
  check(readable == chain->readable_len() && writable == chain->writable_len());
  check(readable + writable <= (uint64_t{1} << 32));
  if (chain->malformed()) check(readable == 0 && writable == 0 && !chain->error().empty());

  std::vector<uint8_t> data = chain->read_all(4096);
  check(data.size() == std::min<uint64_t>(readable, 4096));
  uint8_t scratch[64];
  check(chain->read_at(readable, scratch) == 0);

  std::vector<uint8_t> pattern(std::min<uint64_t>(writable, 512), static_cast<uint8_t>(round));
  check(chain->write_at(0, pattern) == pattern.size());
  check(chain->write_at(writable, pattern) == 0);
  if (writable > 1) check(chain->write_at(writable - 1, pattern) == 1);

  if (!drop) queue.add_used(std::move(*chain), static_cast<uint32_t>(pattern.size()));
  // Dropped chains are returned with length 0 when `chain` goes out of scope.
}

// Pops until the ring is empty (at most size chains per round by construction, bounded
// again here so a bug cannot hang the fuzzer).
void drain(Queue& queue, const GuestMemory& memory, bool drop_half, uint32_t round) {
  for (uint32_t i = 0; i <= kMaxQueueSize; ++i) {
    auto chain = queue.pop();
    if (!chain) return;
    use_chain(queue, memory, std::move(chain), drop_half && (i % 2 == 1), round);
  }
  __builtin_trap();  // more chains than the ring can hold
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // Guest-caused log lines are rate-limited but still cost time; SKIFF_FUZZ_VERBOSE=1 keeps
  // them, to see what a reproducer does.
  if (std::getenv("SKIFF_FUZZ_VERBOSE") == nullptr) spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* input, size_t input_size) {
  if (input_size < kHeaderSize) return 0;
  const uint16_t size = static_cast<uint16_t>(1u << (input[0] % 9));
  const uint8_t flags = input[1];
  const uint16_t avail_delta = le16(input + 2);

  std::vector<uint8_t> ram(kRamSize, 0);
  std::memcpy(ram.data(), input + kHeaderSize, std::min<size_t>(input_size - kHeaderSize, kRamSize));
  GuestRegion region{kRamBase, kRamSize, ram.data()};
  GuestMemory memory = GuestMemory::from_host_buffers(std::span(&region, 1));

  uint64_t features = feature_mask(kFeatureVersion1);
  if (flags & 1) features |= feature_mask(kFeatureRingIndirectDesc);
  if (flags & 2) features |= feature_mask(kFeatureRingEventIdx);

  Queue queue(256, "fuzz queue");
  queue.set_size(size);
  if (flags & 4) {
    queue.set_desc_table_address(kRamBase + le16(input + 4));
    queue.set_avail_ring_address(kRamBase + le16(input + 6));
    queue.set_used_ring_address(kRamBase + le16(input + 8));
  } else {
    uint64_t avail = kRamBase + desc_table_size(size);
    uint64_t used = (avail + avail_ring_size(size) + 3) & ~uint64_t{3};
    queue.set_desc_table_address(kRamBase);
    queue.set_avail_ring_address(avail);
    queue.set_used_ring_address(used);
  }
  queue.set_ready(true);
  bool fatal_called = false;
  queue.set_fatal_error_handler([&](const skiff::Error&) {
    check(!fatal_called);  // once per activation
    fatal_called = true;
  });
  if (!queue.activate(memory, features)) return 0;

  const bool drop_half = (flags & 8) != 0;
  if (flags & 16) queue.set_notification(false);
  drain(queue, memory, drop_half, 1);
  queue.needs_notification();
  queue.set_notification(true);
  drain(queue, memory, drop_half, 2);
  queue.needs_notification();

  // The driver publishes more (or jumps): move avail idx and pop again.
  uint64_t avail_idx_gpa = queue.avail_ring_address() + 2;
  if (auto idx = memory.read_obj<uint16_t>(avail_idx_gpa)) {
    check(memory.write_obj<uint16_t>(avail_idx_gpa, static_cast<uint16_t>(*idx + avail_delta))
              .has_value());
  }
  drain(queue, memory, drop_half, 3);
  queue.needs_notification();

  // Every chain popped went back to the guest exactly once.
  check(queue.next_used() == static_cast<uint16_t>(queue.stats().chains_popped));
  check(queue.broken() == fatal_called);
  check(queue.stats().malformed_chains <= queue.stats().chains_popped);

  queue.reset();
  check(!queue.pop().has_value());
  return 0;
}
