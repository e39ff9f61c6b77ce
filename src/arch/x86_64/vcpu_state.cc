// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/vcpu_state.h"

#include <algorithm>
#include <mutex>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "arch/x86_64/vcpu_setup.h"
#include "kvm/kvm_uapi.h"
#include "state/field_checks.h"

namespace skiff::x86 {
namespace {

// The flags KVM_GET_VCPU_EVENTS can report and KVM_SET_VCPU_EVENTS accepts
// (arch/x86/include/uapi/asm/kvm.h, api.rst "KVM_GET_VCPU_EVENTS").
constexpr uint32_t kKnownEventFlags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
                                      KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM |
                                      KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT;

// The multiprocessing states an x86 vCPU is in outside confidential guests: runnable,
// uninitialized (an AP before INIT), INIT received, halted, SIPI received (api.rst,
// "KVM_GET_MP_STATE").
constexpr uint64_t kMaxMpState = KVM_MP_STATE_SIPI_RECEIVED;

// MSRs a restored long-mode guest cannot do without: the TSC (time would jump), and the
// syscall entry points and swapgs base (the guest kernel's next system call or interrupt
// from user mode would go astray). EFER is restored through sregs. A refusal of one of
// these is an error; of any other MSR, a warning.
constexpr uint32_t kRequiredMsrs[] = {kMsrIa32Tsc, kMsrStar, kMsrLstar, kMsrCstar, kMsrSyscallMask, kMsrKernelGsBase};

bool is_required_msr(uint32_t index) {
  return std::find(std::begin(kRequiredMsrs), std::end(kRequiredMsrs), index) != std::end(kRequiredMsrs);
}

// One warning per refused MSR index per process: restoring many vCPUs on a host that
// refuses an MSR would otherwise log the same line for each.
void warn_refused_msr_once(uint32_t vcpu_id, uint32_t index) {
  static std::mutex mutex;
  static std::unordered_set<uint32_t> warned;
  {
    std::lock_guard lock(mutex);
    if (!warned.insert(index).second) return;
  }
  spdlog::warn("vCPU {}: KVM refused to restore MSR {:#x}; it keeps its default value (further refusals of "
               "this MSR are not logged)",
               vcpu_id, index);
}

// Reads every MSR of `indexes` that KVM can read: one KVM_GET_MSRS for the whole list, and
// when KVM stops early (at the first MSR it cannot read), skip that one and go on with the
// rest in another call.
Result<std::vector<std::pair<uint32_t, uint64_t>>> read_msrs(const KvmVcpu& vcpu, std::span<const uint32_t> indexes) {
  std::vector<std::pair<uint32_t, uint64_t>> values;
  values.reserve(indexes.size());
  while (!indexes.empty()) {
    auto read = vcpu.get_msrs(indexes);
    if (!read) return std::unexpected(read.error());
    values.insert(values.end(), read->begin(), read->end());
    if (read->size() >= indexes.size()) break;
    spdlog::debug("vCPU {}: KVM cannot read MSR {:#x}; it is not saved", vcpu.id(), indexes[read->size()]);
    indexes = indexes.subspan(read->size() + 1);
  }
  return values;
}

// Writes the MSRs in as few KVM_SET_MSRS calls as KVM allows: it stops at the first MSR it
// refuses, which is skipped (or is an error, for a required one) before going on.
Result<void> write_msrs(const KvmVcpu& vcpu, std::span<const std::pair<uint32_t, uint64_t>> msrs) {
  while (!msrs.empty()) {
    auto written = vcpu.set_msrs(msrs);
    if (!written) return std::unexpected(written.error());
    if (*written >= msrs.size()) break;
    const uint32_t refused = msrs[*written].first;
    if (is_required_msr(refused)) {
      return internal_error(fmt::format("vCPU {}: KVM refused to restore MSR {:#x} (value {:#x}), which a long-mode "
                                        "guest needs",
                                        vcpu.id(), refused, msrs[*written].second));
    }
    warn_refused_msr_once(vcpu.id(), refused);
    msrs = msrs.subspan(*written + 1);
  }
  return {};
}

}  // namespace

Result<state::StateBlob> save_vcpu_state(const KvmVcpu& vcpu, std::span<const uint32_t> msr_indexes) {
  auto regs = vcpu.get_regs();
  auto sregs = vcpu.get_sregs();
  auto fpu = vcpu.get_fpu();
  auto xsave = vcpu.get_xsave();
  auto xcrs = vcpu.get_xcrs();
  auto lapic = vcpu.get_lapic();
  auto events = vcpu.get_vcpu_events();
  auto mp_state = vcpu.get_mp_state();
  auto debugregs = vcpu.get_debugregs();
  auto msrs = read_msrs(vcpu, msr_indexes);
  if (auto error = state::first_error(regs, sregs, fpu, xsave, xcrs, lapic, events, mp_state, debugregs, msrs)) {
    return std::unexpected(error->with_context(fmt::format("saving vCPU {}", vcpu.id())));
  }

  std::vector<uint64_t> indexes;
  std::vector<uint64_t> values;
  indexes.reserve(msrs->size());
  values.reserve(msrs->size());
  for (const auto& [index, value] : *msrs) {
    indexes.push_back(index);
    values.push_back(value);
  }

  state::StateBlob blob(kVcpuStateKind, kVcpuStateVersion);
  blob.put("id", vcpu.id());
  state::put_struct(blob, "regs", *regs);
  state::put_struct(blob, "sregs", *sregs);
  state::put_struct(blob, "fpu", *fpu);
  blob.put_bytes("xsave", *xsave);
  state::put_struct(blob, "xcrs", *xcrs);
  state::put_struct(blob, "lapic", *lapic);
  state::put_struct(blob, "events", *events);
  blob.put("mp_state", mp_state->mp_state);
  state::put_struct(blob, "debugregs", *debugregs);
  blob.put_u64s("msr_indexes", indexes).put_u64s("msr_values", values);
  return blob;
}

Result<void> restore_vcpu_state(const KvmVcpu& vcpu, const state::StateBlob& blob) {
  if (auto r = blob.expect(kVcpuStateKind, kVcpuStateVersion); !r) return r;

  // ---- Read and check everything before the first ioctl. -----------------------------------
  const auto id = blob.get<uint32_t>("id");
  const auto regs = state::get_struct<kvm_regs>(blob, "regs");
  const auto sregs = state::get_struct<kvm_sregs>(blob, "sregs");
  const auto fpu = state::get_struct<kvm_fpu>(blob, "fpu");
  const auto xsave = blob.bytes("xsave", vcpu.xsave_size());
  const auto xcrs = state::get_struct<kvm_xcrs>(blob, "xcrs");
  const auto lapic = state::get_struct<kvm_lapic_state>(blob, "lapic");
  auto events = state::get_struct<kvm_vcpu_events>(blob, "events");
  const auto mp_state = blob.get<uint32_t>("mp_state", kMaxMpState);
  const auto debugregs = state::get_struct<kvm_debugregs>(blob, "debugregs");
  const auto msr_indexes = blob.u64s("msr_indexes", kMaxVcpuStateMsrs, UINT32_MAX);
  const auto msr_values = blob.u64s("msr_values", kMaxVcpuStateMsrs);
  if (auto error = state::first_error(id, regs, sregs, fpu, xsave, xcrs, lapic, events, mp_state, debugregs,
                                      msr_indexes, msr_values)) {
    return std::unexpected(*error);
  }
  if (*id != vcpu.id()) {
    return std::unexpected(state::field_error(blob, "id", fmt::format("is {}, but this is vCPU {}", *id, vcpu.id())));
  }
  // A shorter area than this host's comes from a host with fewer dynamic XSAVE features;
  // the XSAVE header's XSTATE_BV (bytes 512-519) says which components it holds, so the
  // rest is zero-padded. 4096 bytes is the smallest area KVM ever transfers.
  if (xsave->size() < kvm_uapi::kXsaveLegacySize) {
    return std::unexpected(state::field_error(
        blob, "xsave", fmt::format("holds {} bytes, fewer than the {} of KVM's XSAVE area", xsave->size(),
                                   kvm_uapi::kXsaveLegacySize)));
  }
  if (xcrs->nr_xcrs > KVM_MAX_XCRS || xcrs->flags != 0) {
    return std::unexpected(state::field_error(
        blob, "xcrs", fmt::format("has {} registers and flags {:#x} (at most {} and no flags)", xcrs->nr_xcrs,
                                  xcrs->flags, KVM_MAX_XCRS)));
  }
  if ((events->flags & ~kKnownEventFlags) != 0) {
    return std::unexpected(state::field_error(blob, "events", fmt::format("has unknown flags {:#x}", events->flags)));
  }
  if (debugregs->flags != 0) {
    return std::unexpected(state::field_error(blob, "debugregs", fmt::format("has flags {:#x} (must be 0)", debugregs->flags)));
  }
  if (msr_indexes->size() != msr_values->size()) {
    return std::unexpected(state::field_error(
        blob, "msr_values", fmt::format("has {} values for {} msr_indexes", msr_values->size(), msr_indexes->size())));
  }
  std::vector<std::pair<uint32_t, uint64_t>> msrs;
  msrs.reserve(msr_indexes->size());
  for (size_t i = 0; i < msr_indexes->size(); ++i) {
    msrs.emplace_back(static_cast<uint32_t>((*msr_indexes)[i]), (*msr_values)[i]);
  }
  std::vector<uint8_t> xsave_area(vcpu.xsave_size(), 0);
  std::copy(xsave->begin(), xsave->end(), xsave_area.begin());
  // KVM_GET_VCPU_EVENTS fills sipi_vector but does not flag it valid; it is restored so a
  // vCPU saved between INIT and SIPI wakes at the same vector.
  events->flags |= KVM_VCPUEVENT_VALID_SIPI_VECTOR;

  // ---- Write, in an order that respects what each ioctl depends on. -------------------------
  // 1. sregs: CR0/CR3/CR4, EFER, segments and the APIC base (KVM_SET_SREGS applies
  //    apic_base as a write of IA32_APIC_BASE: the LAPIC's enable bit and xAPIC/x2APIC mode).
  //    Everything below is interpreted in that mode.
  // 2. regs: KVM_SET_REGS discards a pending exception, so it precedes the events that
  //    restore one.
  // 3. fpu, then xsave: both write the x87/SSE state, and the XSAVE area is the complete
  //    one (AVX and beyond), so it goes second and wins.
  // 4. xcrs: KVM checks XCR0 against the guest's CPUID (set by configure_vcpu before).
  // 5. debugregs: no dependencies.
  // 6. lapic: after sregs, whose APIC base decides how KVM reads the register page (the
  //    APIC id is 8 bits in xAPIC mode, 32 in x2APIC mode).
  // 7. MSRs: after the LAPIC, because IA32_TSC_DEADLINE (0x6e0) only takes a value while
  //    the LAPIC timer is in TSC-deadline mode; IA32_APIC_BASE, where KVM lists it, carries
  //    the value sregs already set. (The APIC base lives in sregs as well as in the MSR,
  //    which is why the LAPIC need not wait for the MSRs.)
  // 8. events: pending exception/interrupt/NMI/SMI and the interrupt shadow, after regs
  //    (see 2) and after the LAPIC (a latched INIT is recorded in the LAPIC).
  // 9. mp_state last: KVM refuses INIT_RECEIVED/SIPI_RECEIVED while an INIT is latched,
  //    which the events just restored decide, and SIPI_RECEIVED uses their SIPI vector.
  const auto context = [&](const Error& error) {
    return std::unexpected(error.with_context(fmt::format("restoring vCPU {}", vcpu.id())));
  };
  if (auto r = vcpu.set_sregs(*sregs); !r) return context(r.error());
  if (auto r = vcpu.set_regs(*regs); !r) return context(r.error());
  if (auto r = vcpu.set_fpu(*fpu); !r) return context(r.error());
  if (auto r = vcpu.set_xsave(xsave_area); !r) return context(r.error());
  if (auto r = vcpu.set_xcrs(*xcrs); !r) return context(r.error());
  if (auto r = vcpu.set_debugregs(*debugregs); !r) return context(r.error());
  if (auto r = vcpu.set_lapic(*lapic); !r) return context(r.error());
  if (auto r = write_msrs(vcpu, msrs); !r) return context(r.error());
  if (auto r = vcpu.set_vcpu_events(*events); !r) return context(r.error());
  kvm_mp_state mp{};
  mp.mp_state = *mp_state;
  if (auto r = vcpu.set_mp_state(mp); !r) return context(r.error());
  return {};
}

}  // namespace skiff::x86
