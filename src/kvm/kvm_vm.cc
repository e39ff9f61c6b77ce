// SPDX-License-Identifier: Apache-2.0
#include "kvm/kvm_vm.h"

#include "kvm/background_close.h"
#include "kvm/kvm_uapi.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace skiff {

KvmVm::~KvmVm() {
  if (background_close_) close_vm_fd_in_background(std::move(fd_));
}

int KvmVm::check_extension(int capability) const {
  // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
  int result = ioctl(fd_.get(), KVM_CHECK_EXTENSION, static_cast<unsigned long>(capability));
  return result < 0 ? 0 : result;
}

Result<void> KvmVm::set_tss_address(uint64_t gpa) const {
  // SAFETY: KVM_SET_TSS_ADDR takes the address by value.
  if (ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(gpa)) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_SET_TSS_ADDR {:#x}", gpa), errno));
  }
  return {};
}

Result<void> KvmVm::set_identity_map_address(uint64_t gpa) const {
  // SAFETY: KVM_SET_IDENTITY_MAP_ADDR reads one u64.
  if (ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &gpa) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_SET_IDENTITY_MAP_ADDR {:#x}", gpa), errno));
  }
  return {};
}

Result<void> KvmVm::create_irqchip() const {
  // SAFETY: no argument.
  if (ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) != 0) {
    return std::unexpected(errno_error("KVM_CREATE_IRQCHIP", errno));
  }
  return {};
}

Result<void> KvmVm::create_pit2() const {
  kvm_pit_config config{};
  // Port 0x61 (speaker, PIT channel 2 gate) is emulated in the kernel as a dummy.
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  // SAFETY: KVM_CREATE_PIT2 reads one kvm_pit_config.
  if (ioctl(fd_.get(), KVM_CREATE_PIT2, &config) != 0) {
    return std::unexpected(errno_error("KVM_CREATE_PIT2", errno));
  }
  return {};
}

Result<void> KvmVm::set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                           uint32_t flags) const {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = flags;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  // SAFETY: the host range stays mapped for the VM's lifetime (GuestMemory outlives KvmVm's use).
  if (ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    return std::unexpected(errno_error(
        fmt::format("KVM_SET_USER_MEMORY_REGION slot {} [{:#x}, +{:#x})", slot, gpa, size), errno));
  }
  return {};
}

Result<void> KvmVm::set_irq_line(uint32_t irq, bool level) const {
  kvm_irq_level irq_level{};
  irq_level.irq = irq;
  irq_level.level = level ? 1 : 0;
  // SAFETY: KVM_IRQ_LINE reads one kvm_irq_level.
  if (ioctl(fd_.get(), KVM_IRQ_LINE, &irq_level) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_IRQ_LINE irq {}", irq), errno));
  }
  return {};
}

Result<void> KvmVm::set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) const {
  std::vector<kvm_irq_routing_entry> buffer(1 + entries.size());  // first slot: the header
  static_assert(sizeof(kvm_irq_routing_entry) >= sizeof(kvm_uapi::IrqRoutingHeader));
  // SAFETY: 8-byte header then the entries, as the kernel's struct kvm_irq_routing (kvm_uapi.h).
  auto* header = reinterpret_cast<kvm_uapi::IrqRoutingHeader*>(buffer.data());
  header->nr = static_cast<uint32_t>(entries.size());
  header->flags = 0;
  std::memcpy(reinterpret_cast<uint8_t*>(buffer.data()) + sizeof(*header), entries.data(), entries.size_bytes());
  if (ioctl(fd_.get(), kvm_uapi::kSetGsiRouting, buffer.data()) != 0) {
    return std::unexpected(errno_error("KVM_SET_GSI_ROUTING", errno));
  }
  return {};
}

Result<void> KvmVm::register_irqfd(int event_fd, uint32_t gsi, int resample_fd) const {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event_fd);
  irqfd.gsi = gsi;
  if (resample_fd >= 0) {
    irqfd.flags = KVM_IRQFD_FLAG_RESAMPLE;
    irqfd.resamplefd = static_cast<uint32_t>(resample_fd);
  }
  // SAFETY: KVM_IRQFD reads one kvm_irqfd.
  if (ioctl(fd_.get(), KVM_IRQFD, &irqfd) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_IRQFD gsi {}", gsi), errno));
  }
  return {};
}

Result<void> KvmVm::unregister_irqfd(int event_fd, uint32_t gsi) const {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event_fd);
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  // SAFETY: KVM_IRQFD reads one kvm_irqfd.
  if (ioctl(fd_.get(), KVM_IRQFD, &irqfd) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_IRQFD deassign gsi {}", gsi), errno));
  }
  return {};
}

namespace {
kvm_ioeventfd make_ioeventfd(int event_fd, uint64_t address, uint32_t length, bool pio,
                             std::optional<uint64_t> datamatch) {
  kvm_ioeventfd ioeventfd{};
  ioeventfd.fd = event_fd;
  ioeventfd.addr = address;
  ioeventfd.len = length;
  if (pio) ioeventfd.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    ioeventfd.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    ioeventfd.datamatch = *datamatch;
  }
  return ioeventfd;
}
}  // namespace

Result<void> KvmVm::register_ioeventfd(int event_fd, uint64_t address, uint32_t length, bool pio,
                                       std::optional<uint64_t> datamatch) const {
  kvm_ioeventfd ioeventfd = make_ioeventfd(event_fd, address, length, pio, datamatch);
  // SAFETY: KVM_IOEVENTFD reads one kvm_ioeventfd.
  if (ioctl(fd_.get(), KVM_IOEVENTFD, &ioeventfd) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_IOEVENTFD {:#x}", address), errno));
  }
  return {};
}

Result<void> KvmVm::unregister_ioeventfd(int event_fd, uint64_t address, uint32_t length, bool pio,
                                         std::optional<uint64_t> datamatch) const {
  kvm_ioeventfd ioeventfd = make_ioeventfd(event_fd, address, length, pio, datamatch);
  ioeventfd.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  // SAFETY: KVM_IOEVENTFD reads one kvm_ioeventfd.
  if (ioctl(fd_.get(), KVM_IOEVENTFD, &ioeventfd) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_IOEVENTFD deassign {:#x}", address), errno));
  }
  return {};
}

Result<void> KvmVm::signal_msi(uint64_t address, uint32_t data) const {
  kvm_msi msi{};
  msi.address_lo = static_cast<uint32_t>(address);
  msi.address_hi = static_cast<uint32_t>(address >> 32);
  msi.data = data;
  // SAFETY: KVM_SIGNAL_MSI reads one kvm_msi.
  if (ioctl(fd_.get(), KVM_SIGNAL_MSI, &msi) < 0) {
    return std::unexpected(errno_error("KVM_SIGNAL_MSI", errno));
  }
  return {};
}

Result<kvm_irqchip> KvmVm::get_irqchip(uint32_t chip_id) const {
  kvm_irqchip chip{};
  chip.chip_id = chip_id;
  // SAFETY: KVM_GET_IRQCHIP reads chip_id and writes one kvm_irqchip.
  if (ioctl(fd_.get(), KVM_GET_IRQCHIP, &chip) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_GET_IRQCHIP chip {}", chip_id), errno));
  }
  return chip;
}

Result<void> KvmVm::set_irqchip(const kvm_irqchip& chip) const {
  // SAFETY: KVM_SET_IRQCHIP reads one kvm_irqchip.
  if (ioctl(fd_.get(), KVM_SET_IRQCHIP, &chip) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_SET_IRQCHIP chip {}", chip.chip_id), errno));
  }
  return {};
}

Result<kvm_pit_state2> KvmVm::get_pit2() const {
  kvm_pit_state2 pit{};
  // SAFETY: KVM_GET_PIT2 writes one kvm_pit_state2.
  if (ioctl(fd_.get(), KVM_GET_PIT2, &pit) != 0) return std::unexpected(errno_error("KVM_GET_PIT2", errno));
  return pit;
}

Result<void> KvmVm::set_pit2(const kvm_pit_state2& pit) const {
  // SAFETY: KVM_SET_PIT2 reads one kvm_pit_state2.
  if (ioctl(fd_.get(), KVM_SET_PIT2, &pit) != 0) return std::unexpected(errno_error("KVM_SET_PIT2", errno));
  return {};
}

Result<kvm_clock_data> KvmVm::get_clock() const {
  kvm_clock_data clock{};
  // SAFETY: KVM_GET_CLOCK writes one kvm_clock_data.
  if (ioctl(fd_.get(), KVM_GET_CLOCK, &clock) != 0) return std::unexpected(errno_error("KVM_GET_CLOCK", errno));
  return clock;
}

Result<void> KvmVm::set_clock(const kvm_clock_data& clock) const {
  // SAFETY: KVM_SET_CLOCK reads one kvm_clock_data.
  if (ioctl(fd_.get(), KVM_SET_CLOCK, &clock) != 0) return std::unexpected(errno_error("KVM_SET_CLOCK", errno));
  return {};
}

Result<KvmVcpu> KvmVm::create_vcpu(uint32_t id) const {
  // SAFETY: KVM_CREATE_VCPU takes the vCPU id (its APIC id on x86) by value.
  int fd = ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) return std::unexpected(errno_error(fmt::format("KVM_CREATE_VCPU {}", id), errno));
  UniqueFd vcpu_fd(fd);
  // SAFETY: maps the vCPU's kvm_run page(s) of the size KVM reported; unmapped in ~KvmVcpu.
  void* run = mmap(nullptr, static_cast<size_t>(vcpu_mmap_size_), PROT_READ | PROT_WRITE,
                   MAP_SHARED, fd, 0);
  if (run == MAP_FAILED) {
    return std::unexpected(errno_error(fmt::format("mmap kvm_run of vCPU {}", id), errno));
  }
  // The XSAVE area size is asked of the VM, as api.rst says for KVM_CAP_XSAVE2.
  const int xsave_size = check_extension(KVM_CAP_XSAVE2);
  return KvmVcpu(std::move(vcpu_fd), static_cast<kvm_run*>(run), static_cast<size_t>(vcpu_mmap_size_), id,
                 xsave_size > 0 ? static_cast<size_t>(xsave_size) : 0);
}

}  // namespace skiff
