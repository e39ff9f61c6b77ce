// SPDX-License-Identifier: Apache-2.0
#include "cli/host_check.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kvm/kvm_system.h"
#include "memory/guest_memory.h"
#include "skiff/exit.h"

namespace skiff::cli {
namespace {

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

bool cpu_has_hardware_virtualization() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) {
      return line.find(" vmx") != std::string::npos || line.find(" svm") != std::string::npos;
    }
  }
  return false;
}

}  // namespace

int run_host_check(bool json_output) {
  nlohmann::json report;
  bool usable = true;

  auto kvm = KvmSystem::open();
  report["kvm"]["path"] = KvmSystem::kDefaultPath;
  if (!kvm) {
    usable = false;
    report["kvm"]["usable"] = false;
    report["kvm"]["error"] = kvm.error().message();
  } else {
    report["kvm"]["usable"] = true;
    report["kvm"]["api_version"] = KVM_API_VERSION;
    report["kvm"]["max_vcpus"] = kvm->max_vcpus();
    nlohmann::json caps = nlohmann::json::object();
    for (const KvmCapability& cap : required_kvm_capabilities()) {
      bool present = kvm->check_extension(cap.id) > 0;
      caps[cap.name] = present;
      if (!present) usable = false;
    }
    report["kvm"]["required_capabilities"] = caps;
  }

  bool pvm = std::filesystem::exists("/sys/module/kvm_pvm");
  bool hw = cpu_has_hardware_virtualization();
  std::string stock;
  if (pvm) {
    stock = "no: /dev/kvm is paravirtual (kvm_pvm); guest ring 0 is emulated, so stock Linux "
            "kernels cannot boot directly. Boot them nested under QEMU (docs/testing.md).";
  } else if (hw) {
    stock = "yes: the CPU has VT-x/AMD-V";
  } else {
    stock = "unknown: no vmx/svm flag in /proc/cpuinfo";
  }
  report["stock_kernels_directly"] = stock;
  report["kvm"]["paravirtual"] = pvm;

  for (uint64_t size : {2ull << 20, 1ull << 30}) {
    std::string key = size == (2ull << 20) ? "2M" : "1G";
    if (auto pool = read_hugepage_pool(size)) {
      report["hugepages"][key] = {{"total", pool->total}, {"free", pool->free},
                                  {"reserved", pool->reserved}};
    } else {
      report["hugepages"][key] = nullptr;
    }
  }
  report["transparent_hugepages"] = read_first_line("/sys/kernel/mm/transparent_hugepage/enabled");

  int tun = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  report["tun"] = tun >= 0 ? std::string("ok") : fmt::format("/dev/net/tun: {}", std::strerror(errno));
  if (tun >= 0) ::close(tun);

  if (json_output) {
    fmt::print("{}\n", report.dump(2));
  } else {
    fmt::print("/dev/kvm              {}\n",
               kvm ? fmt::format("ok (API {}, up to {} vCPUs)", KVM_API_VERSION, kvm->max_vcpus())
                   : kvm.error().message());
    if (kvm) {
      for (const KvmCapability& cap : required_kvm_capabilities()) {
        if (!report["kvm"]["required_capabilities"][cap.name].get<bool>()) {
          fmt::print("  missing capability  {} ({})\n", cap.name, cap.why);
        }
      }
    }
    fmt::print("stock kernels         {}\n", stock);
    for (const char* key : {"2M", "1G"}) {
      const auto& pool = report["hugepages"][key];
      if (pool.is_null()) {
        fmt::print("hugepages {}          no pool\n", key);
      } else {
        fmt::print("hugepages {}          {} total, {} free, {} reserved\n", key,
                   pool["total"].get<uint64_t>(), pool["free"].get<uint64_t>(),
                   pool["reserved"].get<uint64_t>());
      }
    }
    fmt::print("transparent hugepages {}\n", report["transparent_hugepages"].get<std::string>());
    fmt::print("tun                   {}\n", report["tun"].get<std::string>());
    fmt::print("verdict               {}\n", usable ? "skiff can run VMs here" : "skiff cannot run VMs here");
  }
  return usable ? kExitOk : kExitHost;
}

}  // namespace skiff::cli
