// SPDX-License-Identifier: Apache-2.0
// The /dev/kvm system handle: API version, capabilities, supported CPUID and MSR lists.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "kvm/kvm_vm.h"
#include "skiff/error.h"

namespace skiff {

struct KvmCapability {
  int id;
  const char* name;
  const char* why;  // what skiff uses it for
};

// The capabilities skiff cannot run without.
const std::vector<KvmCapability>& required_kvm_capabilities();

class KvmSystem {
 public:
  static constexpr const char* kDefaultPath = "/dev/kvm";

  // Opens the device and checks the API version. Errors say why and what to do (missing
  // module, no permission).
  static Result<KvmSystem> open(const std::string& path = kDefaultPath);

  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific value.
  int check_extension(int capability) const;
  // Fails naming the first missing required capability.
  Result<void> check_required_capabilities() const;
  Result<int> vcpu_mmap_size() const;
  Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
  Result<std::vector<uint32_t>> msr_index_list() const;
  // The largest vCPU count KVM recommends and allows.
  int max_vcpus() const;

  Result<KvmVm> create_vm() const;

 private:
  explicit KvmSystem(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace skiff
