// SPDX-License-Identifier: Apache-2.0
#include "devices/legacy/pvpanic.h"

#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "arch/x86_64/acpi/aml.h"

namespace skiff {

Pvpanic::Pvpanic(StopCallback stop) : stop_(std::move(stop)) {}

void Pvpanic::read(uint64_t offset, std::span<uint8_t> data) {
  // "On read, the bits recognized by the device are set." Only the first byte is the
  // register; wider reads see zeros above it.
  for (size_t i = 0; i < data.size(); ++i) data[i] = (offset + i == 0) ? kPvpanicSupportedEvents : 0;
}

void Pvpanic::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;
  // "On write, the bits not recognized by the device are ignored." Linux writes one byte;
  // the register is one byte wide, so only data[0] counts.
  const uint8_t events = data[0] & kPvpanicSupportedEvents;
  if (events & kPvpanicPanicked) {
    if (stop_) {
      stop_(VmExit{.reason = StopReason::kGuestPanic,
                   .exit_code = kExitGuestPanic,
                   .detail = "guest kernel panicked (pvpanic)"});
    }
    return;
  }
  if (events & kPvpanicCrashLoaded) {
    // The guest goes on into its kdump kernel; nothing to stop.
    const uint32_t count = crash_loaded_events_.fetch_add(1, std::memory_order_relaxed);
    if (count < 4) spdlog::warn("pvpanic: guest kernel panicked; its crash (kdump) kernel takes over");
  }
}

namespace {
constexpr std::string_view kStateKind = "pvpanic";
constexpr uint32_t kStateVersion = 1;
}  // namespace

Result<state::StateBlob> Pvpanic::save_state() const {
  state::StateBlob blob(kStateKind, kStateVersion);
  // The counter is the device's only state and is atomic: no lock to take.
  blob.put("crash_loaded_events", crash_loaded_events_.load(std::memory_order_relaxed));
  return blob;
}

Result<void> Pvpanic::restore_state(const state::StateBlob& blob) {
  if (auto r = blob.expect(kStateKind, kStateVersion); !r) return r;
  const auto events = blob.get<uint32_t>("crash_loaded_events");
  if (!events) return std::unexpected(events.error());
  crash_loaded_events_.store(*events, std::memory_order_relaxed);
  return {};
}

x86::AcpiDevice pvpanic_acpi_device(uint16_t port) {
  x86::AcpiDevice device;
  device.name = "PEVT";
  device.hid = "QEMU0001";
  // ACPI 6.4 section 6.4.2.5, I/O Port descriptor: 16-bit decode, one byte at `port`.
  device.resources.push_back(x86::aml::io(port, port, 1, static_cast<uint8_t>(kPvpanicPortSize)));
  // Section 6.3.7 _STA: present, enabled, shown in UI, functioning.
  device.extra.push_back(x86::aml::name("_STA", x86::aml::integer(0x0f)));
  return device;
}

}  // namespace skiff
