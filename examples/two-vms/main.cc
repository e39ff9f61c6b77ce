// SPDX-License-Identifier: Apache-2.0
// Two VMs in one process through libskiff: both boot the same kernel, each with its own
// console; the first is paused and resumed while the second runs on, then both are shut
// down gracefully and their statistics printed. No global state is shared between them.
//   two-vms KERNEL
// The kernel is expected to keep running until it is asked to shut down (skiff's test
// guest with skiff.action=wait-shutdown does). Exit 0 when both VMs behaved.
#include <skiff/spec.h>
#include <skiff/vm.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

struct Console {
  std::mutex mutex;
  std::string text;
  size_t lines() {
    std::lock_guard lock(mutex);
    size_t n = 0;
    for (char c : text) n += c == '\n';
    return n;
  }
};

std::unique_ptr<skiff::Vm> make_vm(const char* kernel, const char* name, Console& console) {
  skiff::VmSpec spec;
  spec.name = name;
  spec.machine.vcpus = 1;
  spec.machine.memory_mib = 64;
  spec.boot.kernel = kernel;
  spec.boot.cmdline = "skiff.action=wait-shutdown";
  spec.serial.mode = skiff::SerialMode::kNone;
  spec.serial.input = false;
  skiff::VmOptions options;
  options.console_output = [&console](std::span<const uint8_t> bytes) {
    std::lock_guard lock(console.mutex);
    console.text.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  };
  auto vm = skiff::Vm::create(spec, options);
  if (!vm) {
    std::fprintf(stderr, "two-vms: %s: %s\n", name, vm.error().message().c_str());
    return nullptr;
  }
  return std::move(*vm);
}

bool wait_for_lines(Console& console, size_t count) {
  for (int i = 0; i < 300 && console.lines() < count; ++i) std::this_thread::sleep_for(50ms);
  return console.lines() >= count;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s KERNEL\n", argv[0]);
    return 64;
  }
  Console first_console, second_console;
  auto first = make_vm(argv[1], "first", first_console);
  auto second = make_vm(argv[1], "second", second_console);
  if (!first || !second) return 1;
  if (!first->start() || !second->start()) {
    std::fprintf(stderr, "two-vms: start failed\n");
    return 1;
  }
  // Both print their boot report, then tick lines.
  if (!wait_for_lines(first_console, 20) || !wait_for_lines(second_console, 20)) {
    std::fprintf(stderr, "two-vms: the guests did not print\n");
    return 1;
  }
  if (auto paused = first->pause(); !paused) {
    std::fprintf(stderr, "two-vms: pause: %s\n", paused.error().message().c_str());
    return 1;
  }
  const size_t first_at_pause = first_console.lines();
  const size_t second_at_pause = second_console.lines();
  std::this_thread::sleep_for(500ms);
  const bool first_still = first_console.lines() == first_at_pause;
  const bool second_moved = wait_for_lines(second_console, second_at_pause + 1);
  std::printf("paused first VM: %s; second VM kept running: %s\n", first_still ? "no progress" : "PROGRESSED",
              second_moved ? "yes" : "NO");
  if (!first->resume()) return 1;

  for (auto* vm : {first.get(), second.get()}) {
    if (auto asked = vm->shutdown(10s); !asked) {
      std::fprintf(stderr, "two-vms: shutdown: %s\n", asked.error().message().c_str());
      return 1;
    }
  }
  int failures = first_still && second_moved ? 0 : 1;
  for (auto* vm : {first.get(), second.get()}) {
    skiff::VmExit exit = vm->wait();
    skiff::VmStats stats = vm->stats();
    uint64_t exits = 0;
    for (const auto& vcpu : stats.vcpus) {
      for (const auto& [reason, count] : vcpu.exits) exits += count;
    }
    std::printf("%s: %s (exit code %d), state %s, up %.2f s, %llu vCPU exits\n", vm->spec().name.c_str(),
                exit.detail.c_str(), exit.exit_code, std::string(skiff::to_string(stats.state)).c_str(),
                stats.uptime_s, static_cast<unsigned long long>(exits));
    if (exit.reason != skiff::StopReason::kGuestPowerOff) failures++;
  }
  return failures == 0 ? 0 : 1;
}
