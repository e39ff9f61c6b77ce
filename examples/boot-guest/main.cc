// SPDX-License-Identifier: Apache-2.0
// Boots a kernel with libskiff, collects its console output, and exits with the VM's code.
//   boot-guest KERNEL [CMDLINE]
#include <skiff/spec.h>
#include <skiff/version.h>
#include <skiff/vm.h>

#include <cstdio>
#include <mutex>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s KERNEL [CMDLINE]\n", argv[0]);
    return 64;
  }
  skiff::VmSpec spec;
  spec.name = "example";
  spec.machine.vcpus = 2;
  spec.machine.memory_mib = 64;
  spec.boot.kernel = argv[1];
  spec.boot.cmdline = argc > 2 ? argv[2] : "";
  spec.serial.mode = skiff::SerialMode::kNone;
  spec.serial.input = false;

  std::mutex mutex;
  std::string console;
  skiff::VmOptions options;
  options.console_output = [&](std::span<const uint8_t> bytes) {
    std::lock_guard lock(mutex);
    console.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  };

  auto vm = skiff::Vm::create(spec, options);
  if (!vm) {
    std::fprintf(stderr, "example: %s\n", vm.error().message().c_str());
    return skiff::exit_code_for(vm.error());
  }
  if (auto started = (*vm)->start(); !started) {
    std::fprintf(stderr, "example: %s\n", started.error().message().c_str());
    return skiff::exit_code_for(started.error());
  }
  skiff::VmExit exit = (*vm)->wait();
  std::lock_guard lock(mutex);
  std::printf("%s", console.c_str());
  std::printf("example (libskiff %s): %s, exit code %d\n", SKIFF_VERSION, exit.detail.c_str(), exit.exit_code);
  return exit.exit_code;
}
