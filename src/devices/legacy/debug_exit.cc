// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/debug_exit.h"

#include <atomic>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff {

DebugExit::DebugExit(StopCallback stop) : stop_(std::move(stop)) {}

void DebugExit::read(uint64_t /*offset*/, std::span<uint8_t> data) {
  for (uint8_t& byte : data) byte = 0xff;
}

void DebugExit::write(uint64_t offset, std::span<const uint8_t> data) {
  const size_t size = data.size();
  if (offset != 0 || (size != 1 && size != 2 && size != 4)) {
    static std::atomic<uint32_t> logged{0};
    if (logged.fetch_add(1, std::memory_order_relaxed) < 8) {
      spdlog::warn("debug-exit: {}-byte write at offset {} ignored (only 1-, 2- or 4-byte "
                   "writes at offset 0 count)",
                   size, offset);
    }
    return;
  }
  uint32_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= static_cast<uint32_t>(data[i]) << (8 * i);
  if (value > 0xff) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
      spdlog::warn("debug-exit: guest wrote {:#x}; only the low 8 bits ({}) become the exit "
                   "code",
                   value, value & 0xff);
    }
  }
  if (stop_) {
    stop_(VmExit{.reason = StopReason::kDebugExit,
                 .exit_code = static_cast<int>(value & 0xff),
                 .detail = fmt::format("guest wrote {} to the debug-exit port", value)});
  }
}

namespace {
constexpr std::string_view kStateKind = "debug-exit";
constexpr uint32_t kStateVersion = 1;
}  // namespace

Result<state::StateBlob> DebugExit::save_state() const { return state::StateBlob(kStateKind, kStateVersion); }

Result<void> DebugExit::restore_state(const state::StateBlob& blob) {
  return blob.expect(kStateKind, kStateVersion);
}

}  // namespace skiff
