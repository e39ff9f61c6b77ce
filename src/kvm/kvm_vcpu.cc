// SPDX-License-Identifier: Apache-2.0
#include "kvm/kvm_vcpu.h"

#include "kvm/kvm_uapi.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include <fmt/format.h>

namespace skiff {

KvmVcpu::KvmVcpu(KvmVcpu&& other) noexcept
    : fd_(std::move(other.fd_)),
      run_(std::exchange(other.run_, nullptr)),
      run_size_(other.run_size_),
      id_(other.id_),
      xsave_size_(other.xsave_size_) {}

KvmVcpu::~KvmVcpu() {
  if (run_ != nullptr) munmap(run_, run_size_);
}

Result<bool> KvmVcpu::run() const {
  // SAFETY: KVM_RUN takes no argument; results land in the mapped kvm_run page.
  if (ioctl(fd_.get(), KVM_RUN, 0) == 0) return true;
  if (errno == EINTR || errno == EAGAIN) return false;
  return std::unexpected(errno_error(fmt::format("KVM_RUN on vCPU {}", id_), errno));
}

// The get/set pairs differ only in the ioctl and the struct.
template <typename T>
static Result<T> vcpu_get(int fd, unsigned long request, const char* name, uint32_t id) {
  T value{};
  // SAFETY: the ioctl writes one T.
  if (ioctl(fd, request, &value) != 0) {
    return std::unexpected(errno_error(fmt::format("{} on vCPU {}", name, id), errno));
  }
  return value;
}

template <typename T>
static Result<void> vcpu_set(int fd, unsigned long request, const T& value, const char* name,
                             uint32_t id) {
  // SAFETY: the ioctl reads one T.
  if (ioctl(fd, request, &value) != 0) {
    return std::unexpected(errno_error(fmt::format("{} on vCPU {}", name, id), errno));
  }
  return {};
}

Result<kvm_regs> KvmVcpu::get_regs() const { return vcpu_get<kvm_regs>(fd_.get(), KVM_GET_REGS, "KVM_GET_REGS", id_); }
Result<void> KvmVcpu::set_regs(const kvm_regs& regs) const { return vcpu_set(fd_.get(), KVM_SET_REGS, regs, "KVM_SET_REGS", id_); }
Result<kvm_sregs> KvmVcpu::get_sregs() const { return vcpu_get<kvm_sregs>(fd_.get(), KVM_GET_SREGS, "KVM_GET_SREGS", id_); }
Result<void> KvmVcpu::set_sregs(const kvm_sregs& sregs) const { return vcpu_set(fd_.get(), KVM_SET_SREGS, sregs, "KVM_SET_SREGS", id_); }
Result<kvm_fpu> KvmVcpu::get_fpu() const { return vcpu_get<kvm_fpu>(fd_.get(), KVM_GET_FPU, "KVM_GET_FPU", id_); }
Result<void> KvmVcpu::set_fpu(const kvm_fpu& fpu) const { return vcpu_set(fd_.get(), KVM_SET_FPU, fpu, "KVM_SET_FPU", id_); }
Result<kvm_lapic_state> KvmVcpu::get_lapic() const { return vcpu_get<kvm_lapic_state>(fd_.get(), KVM_GET_LAPIC, "KVM_GET_LAPIC", id_); }
Result<void> KvmVcpu::set_lapic(const kvm_lapic_state& lapic) const { return vcpu_set(fd_.get(), KVM_SET_LAPIC, lapic, "KVM_SET_LAPIC", id_); }
Result<kvm_mp_state> KvmVcpu::get_mp_state() const { return vcpu_get<kvm_mp_state>(fd_.get(), KVM_GET_MP_STATE, "KVM_GET_MP_STATE", id_); }
Result<void> KvmVcpu::set_mp_state(const kvm_mp_state& state) const { return vcpu_set(fd_.get(), KVM_SET_MP_STATE, state, "KVM_SET_MP_STATE", id_); }
Result<kvm_xcrs> KvmVcpu::get_xcrs() const { return vcpu_get<kvm_xcrs>(fd_.get(), KVM_GET_XCRS, "KVM_GET_XCRS", id_); }
Result<void> KvmVcpu::set_xcrs(const kvm_xcrs& xcrs) const { return vcpu_set(fd_.get(), KVM_SET_XCRS, xcrs, "KVM_SET_XCRS", id_); }
Result<kvm_vcpu_events> KvmVcpu::get_vcpu_events() const { return vcpu_get<kvm_vcpu_events>(fd_.get(), KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", id_); }
Result<void> KvmVcpu::set_vcpu_events(const kvm_vcpu_events& events) const { return vcpu_set(fd_.get(), KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS", id_); }
Result<kvm_debugregs> KvmVcpu::get_debugregs() const { return vcpu_get<kvm_debugregs>(fd_.get(), KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", id_); }
Result<void> KvmVcpu::set_debugregs(const kvm_debugregs& debugregs) const { return vcpu_set(fd_.get(), KVM_SET_DEBUGREGS, debugregs, "KVM_SET_DEBUGREGS", id_); }

size_t KvmVcpu::xsave_size() const { return std::max(xsave_size_, kvm_uapi::kXsaveLegacySize); }

Result<std::vector<uint8_t>> KvmVcpu::get_xsave() const {
  // A vector of XsaveArea gives the buffer the alignment of the kernel's struct kvm_xsave.
  const size_t size = xsave_size();
  std::vector<kvm_uapi::XsaveArea> buffer((size + sizeof(kvm_uapi::XsaveArea) - 1) / sizeof(kvm_uapi::XsaveArea));
  // KVM_GET_XSAVE refuses (EINVAL) a vCPU whose area outgrew 4096 bytes; KVM_GET_XSAVE2
  // writes the whole area, KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) bytes (api.rst 4.42, 4.116).
  const bool xsave2 = xsave_size_ != 0;
  // SAFETY: the buffer holds at least xsave_size() bytes, all the ioctl writes.
  if (ioctl(fd_.get(), xsave2 ? kvm_uapi::kGetXsave2 : kvm_uapi::kGetXsave, buffer.data()) != 0) {
    return std::unexpected(errno_error(fmt::format("{} on vCPU {}", xsave2 ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE", id_), errno));
  }
  // SAFETY: XsaveArea is an array of u32; its bytes are the area.
  const auto* bytes = reinterpret_cast<const uint8_t*>(buffer.data());
  return std::vector<uint8_t>(bytes, bytes + size);
}

Result<void> KvmVcpu::set_xsave(std::span<const uint8_t> area) const {
  const size_t size = xsave_size();
  if (area.size() != size) {
    return internal_error(fmt::format("KVM_SET_XSAVE on vCPU {}: {} bytes instead of {}", id_, area.size(), size));
  }
  std::vector<kvm_uapi::XsaveArea> buffer((size + sizeof(kvm_uapi::XsaveArea) - 1) / sizeof(kvm_uapi::XsaveArea));
  std::memcpy(buffer.data(), area.data(), size);
  // SAFETY: KVM_SET_XSAVE reads the vCPU's XSAVE area size, at most xsave_size() bytes,
  // all inside the buffer.
  if (ioctl(fd_.get(), kvm_uapi::kSetXsave, buffer.data()) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_SET_XSAVE on vCPU {}", id_), errno));
  }
  return {};
}

Result<void> KvmVcpu::set_cpuid(std::span<const kvm_cpuid_entry2> entries) const {
  std::vector<uint8_t> buffer(sizeof(kvm_uapi::Cpuid2Header) + entries.size() * sizeof(kvm_cpuid_entry2));
  // SAFETY: the buffer holds the header followed by the entries (see kvm_uapi.h).
  auto* header = reinterpret_cast<kvm_uapi::Cpuid2Header*>(buffer.data());
  header->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(buffer.data() + sizeof(*header), entries.data(), entries.size_bytes());
  if (ioctl(fd_.get(), kvm_uapi::kSetCpuid2, buffer.data()) != 0) {
    return std::unexpected(errno_error(fmt::format("KVM_SET_CPUID2 on vCPU {}", id_), errno));
  }
  return {};
}

Result<std::vector<std::pair<uint32_t, uint64_t>>> KvmVcpu::get_msrs(std::span<const uint32_t> indexes) const {
  // The same buffer layout as set_msrs: an 8-byte header in the first entry's place.
  std::vector<kvm_msr_entry> buffer(1 + indexes.size());
  // SAFETY: the first 8 bytes are the header, the entries follow (see kvm_uapi.h).
  auto* header = reinterpret_cast<kvm_uapi::MsrsHeader*>(buffer.data());
  header->nmsrs = static_cast<uint32_t>(indexes.size());
  header->pad = 0;
  auto* entries = reinterpret_cast<kvm_msr_entry*>(reinterpret_cast<uint8_t*>(buffer.data()) + sizeof(*header));
  for (size_t i = 0; i < indexes.size(); ++i) {
    entries[i] = kvm_msr_entry{};
    entries[i].index = indexes[i];
  }
  // KVM_GET_MSRS returns the number of MSRs read; it stops at the first one it cannot read.
  // SAFETY: the buffer holds the header and nmsrs entries; KVM writes their data fields.
  int count = ioctl(fd_.get(), kvm_uapi::kGetMsrs, buffer.data());
  if (count < 0) return std::unexpected(errno_error(fmt::format("KVM_GET_MSRS on vCPU {}", id_), errno));
  const size_t read = std::min(static_cast<size_t>(count), indexes.size());
  std::vector<std::pair<uint32_t, uint64_t>> values;
  values.reserve(read);
  for (size_t i = 0; i < read; ++i) values.emplace_back(entries[i].index, entries[i].data);
  return values;
}

Result<size_t> KvmVcpu::set_msrs(std::span<const std::pair<uint32_t, uint64_t>> msrs) const {
  // kvm_msr_entry holds a u64, so a vector of entries gives the buffer 8-byte alignment;
  // the first element's place is the 8-byte header.
  std::vector<kvm_msr_entry> buffer(1 + msrs.size());
  static_assert(sizeof(kvm_msr_entry) >= sizeof(kvm_uapi::MsrsHeader));
  // SAFETY: the first 8 bytes are the header, the entries follow (see kvm_uapi.h).
  auto* header = reinterpret_cast<kvm_uapi::MsrsHeader*>(buffer.data());
  header->nmsrs = static_cast<uint32_t>(msrs.size());
  header->pad = 0;
  auto* entries = reinterpret_cast<kvm_msr_entry*>(reinterpret_cast<uint8_t*>(buffer.data()) + sizeof(*header));
  for (size_t i = 0; i < msrs.size(); ++i) {
    entries[i] = kvm_msr_entry{};
    entries[i].index = msrs[i].first;
    entries[i].data = msrs[i].second;
  }
  // KVM_SET_MSRS returns the number of MSRs set; it stops at the first one it refuses.
  int count = ioctl(fd_.get(), kvm_uapi::kSetMsrs, buffer.data());
  if (count < 0) return std::unexpected(errno_error(fmt::format("KVM_SET_MSRS on vCPU {}", id_), errno));
  return static_cast<size_t>(count);
}

}  // namespace skiff
