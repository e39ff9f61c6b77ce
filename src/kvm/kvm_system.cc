// SPDX-License-Identifier: Apache-2.0
#include "kvm/kvm_system.h"

#include "kvm/kvm_uapi.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <memory>

#include <fmt/format.h>

namespace skiff {

const std::vector<KvmCapability>& required_kvm_capabilities() {
  static const std::vector<KvmCapability> kCapabilities = {
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM in skiff's address space"},
      {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "x86 real-mode support pages"},
      {KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR", "x86 real-mode support pages"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "the CPUID skiff presents to the guest"},
      {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel LAPIC/IOAPIC/PIC"},
      {KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel i8254 timer"},
      {KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING", "interrupt routing (MSI, IOAPIC pins)"},
      {KVM_CAP_IRQFD, "KVM_CAP_IRQFD", "device interrupts without a vCPU exit"},
      {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD", "device notifications without a user-space exit"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "stopping vCPUs without races"},
      {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "starting secondary vCPUs by INIT/SIPI"},
  };
  return kCapabilities;
}

Result<KvmSystem> KvmSystem::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string fix;
    switch (err) {
      case ENOENT:
        fix = "KVM is not available: load the kvm_intel or kvm_amd module (modprobe kvm_intel), "
              "enable virtualization in the firmware, or enable nested virtualization when this "
              "host is itself a VM";
        break;
      case EACCES:
      case EPERM:
        fix = fmt::format("no permission: add your user to the group owning {} (usually 'kvm': "
                          "usermod -aG kvm $USER, then log in again) or run as root",
                          path);
        break;
      case ENXIO:
      case ENODEV:
        fix = "the KVM module is loaded but has no hardware support on this CPU";
        break;
      default:
        fix = "cannot use KVM";
        break;
    }
    return std::unexpected(Error(ErrorKind::kHost,
                                 fmt::format("{}: {}: {}", path, std::strerror(err), fix), err));
  }
  KvmSystem system{UniqueFd(fd)};
  // SAFETY: KVM_GET_API_VERSION takes no argument.
  int version = ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return host_error(fmt::format("{}: KVM API version {} is not the supported version {}", path,
                                  version, KVM_API_VERSION));
  }
  return system;
}

int KvmSystem::check_extension(int capability) const {
  // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
  int result = ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return result < 0 ? 0 : result;
}

Result<void> KvmSystem::check_required_capabilities() const {
  for (const KvmCapability& cap : required_kvm_capabilities()) {
    if (check_extension(cap.id) <= 0) {
      return host_error(fmt::format("/dev/kvm lacks {} (needed for {}): this host's KVM is too old "
                                    "or restricted",
                                    cap.name, cap.why));
    }
  }
  return {};
}

Result<int> KvmSystem::vcpu_mmap_size() const {
  // SAFETY: KVM_GET_VCPU_MMAP_SIZE takes no argument.
  int size = ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size <= 0) return std::unexpected(errno_error("KVM_GET_VCPU_MMAP_SIZE", errno));
  return size;
}

int KvmSystem::max_vcpus() const {
  int max = check_extension(KVM_CAP_MAX_VCPUS);
  if (max <= 0) max = check_extension(KVM_CAP_NR_VCPUS);
  return max <= 0 ? 4 : max;  // the API documents 4 when neither is reported
}

Result<std::vector<kvm_cpuid_entry2>> KvmSystem::supported_cpuid() const {
  // The entry count is not known up front: grow the buffer while KVM says E2BIG.
  for (uint32_t count = 64; count <= 4096; count *= 2) {
    std::vector<uint8_t> buffer(sizeof(kvm_uapi::Cpuid2Header) + count * sizeof(kvm_cpuid_entry2));
    // SAFETY: the buffer holds the header followed by `count` entries (kvm_uapi.h says why
    // the header is not struct kvm_cpuid2).
    auto* header = reinterpret_cast<kvm_uapi::Cpuid2Header*>(buffer.data());
    header->nent = count;
    if (ioctl(fd_.get(), kvm_uapi::kGetSupportedCpuid, buffer.data()) == 0) {
      std::vector<kvm_cpuid_entry2> entries(header->nent);
      std::memcpy(entries.data(), buffer.data() + sizeof(*header), entries.size() * sizeof(kvm_cpuid_entry2));
      return entries;
    }
    if (errno != E2BIG) return std::unexpected(errno_error("KVM_GET_SUPPORTED_CPUID", errno));
  }
  return internal_error("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

Result<std::vector<uint32_t>> KvmSystem::msr_index_list() const {
  kvm_uapi::MsrListHeader probe{};
  // SAFETY: with nmsrs = 0 KVM only writes the needed count back (E2BIG).
  if (ioctl(fd_.get(), kvm_uapi::kGetMsrIndexList, &probe) == 0) return std::vector<uint32_t>{};
  if (errno != E2BIG) return std::unexpected(errno_error("KVM_GET_MSR_INDEX_LIST", errno));
  uint32_t count = probe.nmsrs;
  std::vector<uint32_t> buffer(1 + count);  // header (one u32) then the indices
  buffer[0] = count;
  // SAFETY: the buffer holds the header followed by `count` indices.
  if (ioctl(fd_.get(), kvm_uapi::kGetMsrIndexList, buffer.data()) != 0) {
    return std::unexpected(errno_error("KVM_GET_MSR_INDEX_LIST", errno));
  }
  return std::vector<uint32_t>(buffer.begin() + 1, buffer.begin() + 1 + std::min(buffer[0], count));
}

Result<KvmVm> KvmSystem::create_vm() const {
  auto mmap_size = vcpu_mmap_size();
  if (!mmap_size) return std::unexpected(mmap_size.error());
  int vm_fd = -1;
  // KVM_CREATE_VM can fail with EINTR while the kernel sets up the VM's MMU.
  do {
    // SAFETY: machine type 0 is the default x86 VM.
    vm_fd = ioctl(fd_.get(), KVM_CREATE_VM, 0);
  } while (vm_fd < 0 && errno == EINTR);
  if (vm_fd < 0) return std::unexpected(errno_error("KVM_CREATE_VM", errno));
  return KvmVm(UniqueFd(vm_fd), *mmap_size);
}

}  // namespace skiff
