// SPDX-License-Identifier: Apache-2.0
#include "security/seccomp_filter.h"

#include <execinfo.h>
#include <link.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <vector>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "security/syscall_tables.h"

namespace skiff::security {
namespace {

constexpr std::array kAllThreadKinds = {
    ThreadKind::main,    ThreadKind::vcpu,    ThreadKind::device_manager, ThreadKind::blk_io, ThreadKind::net_io,
    ThreadKind::balloon, ThreadKind::rng,     ThreadKind::vsock,          ThreadKind::console, ThreadKind::signals,
    ThreadKind::api,     ThreadKind::shutdown_timer,
};

// ---- What the SIGSYS handler may touch ---------------------------------------------------
// A signal handler may call only async-signal-safe functions: no malloc, no libseccomp, no
// fmt. Everything it prints is prepared here, before any filter exists.

// si_code of a SIGSYS raised by a seccomp trap: SYS_SECCOMP in asm-generic/siginfo.h, which
// glibc's <signal.h> does not export.
constexpr int kSiCodeSeccomp = 1;

// x86-64 has about 460 system calls; a number past the table is printed as a number.
constexpr int kSyscallNameSlots = 512;
constexpr size_t kSyscallNameBytes = 32;
char g_syscall_names[kSyscallNameSlots][kSyscallNameBytes];

// Which thread this is, for the report. Written by install_thread_filter (so the TLS block
// exists before the handler first reads it), read by the handler of the same thread.
struct ThreadIdentity {
  bool known = false;
  ThreadKind kind = ThreadKind::main;
  char name[16] = {};  // the kernel's comm: at most 15 characters and a NUL
};
thread_local ThreadIdentity t_identity;

// Appends `text` to buf[*used..] without overflowing; async-signal-safe.
void append(char* buf, size_t size, size_t* used, const char* text) {
  while (*text != '\0' && *used + 1 < size) buf[(*used)++] = *text++;
}

void append_number(char* buf, size_t size, size_t* used, long value) {
  char digits[24];
  size_t count = 0;
  unsigned long magnitude = value < 0 ? 0UL - static_cast<unsigned long>(value) : static_cast<unsigned long>(value);
  do {
    digits[count++] = static_cast<char>('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude != 0 && count < sizeof(digits));
  if (value < 0) append(buf, size, used, "-");
  while (count > 0 && *used + 1 < size) buf[(*used)++] = digits[--count];
}

void append_hex(char* buf, size_t size, size_t* used, unsigned long value) {
  char digits[20];
  size_t count = 0;
  do {
    digits[count++] = "0123456789abcdef"[value % 16];
    value /= 16;
  } while (value != 0 && count < sizeof(digits));
  append(buf, size, used, "0x");
  while (count > 0 && *used + 1 < size) buf[(*used)++] = digits[--count];
}

const char* kind_name(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::main: return "main";
    case ThreadKind::vcpu: return "vcpu";
    case ThreadKind::device_manager: return "device_manager";
    case ThreadKind::blk_io: return "blk_io";
    case ThreadKind::net_io: return "net_io";
    case ThreadKind::balloon: return "balloon";
    case ThreadKind::rng: return "rng";
    case ThreadKind::vsock: return "vsock";
    case ThreadKind::console: return "console";
    case ThreadKind::signals: return "signals";
    case ThreadKind::api: return "api";
    case ThreadKind::shutdown_timer: return "shutdown_timer";
  }
  return "unknown";
}

// Dies of SIGSYS. Called with SIGSYS blocked (we are in its handler, without SA_NODEFER).
[[noreturn]] void die_of_sigsys(const siginfo_t* info, void* context) {
#if defined(__x86_64__)
  if (info->si_code == kSiCodeSeccomp && context != nullptr) {
    // Make the same call again, with the same arguments: the filter traps it again, and a
    // seccomp trap whose signal is blocked makes the kernel reset SIGSYS to its default
    // action and deliver it (kernel/signal.c force_sig_info_to_task): the process dies of
    // SIGSYS. This needs no system call a filter might forbid.
    const auto* uc = static_cast<const ucontext_t*>(context);
    const greg_t* regs = uc->uc_mcontext.gregs;
    ::syscall(info->si_syscall, regs[REG_RDI], regs[REG_RSI], regs[REG_RDX], regs[REG_R10], regs[REG_R8],
              regs[REG_R9]);
  }
#endif
  // Not from seccomp (kill -SYS), or the call went through after all: the default action
  // by hand. Under a filter that forbids these the kernel kills us as above.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  ::sigaction(SIGSYS, &default_action, nullptr);
  sigset_t sigsys;
  sigemptyset(&sigsys);
  sigaddset(&sigsys, SIGSYS);
  ::pthread_sigmask(SIG_UNBLOCK, &sigsys, nullptr);
  ::raise(SIGSYS);
  ::_exit(128 + SIGSYS);
}

// The loaded objects' address ranges, recorded before any filter (dl_iterate_phdr takes the
// loader's lock), so that the handler can print each frame as "object+offset" for
// `addr2line -f -C -e <object> <offset>` without calling anything unsafe.
struct LoadedObject {
  uintptr_t start = 0;
  uintptr_t end = 0;
  uintptr_t base = 0;  // what offsets are relative to (dlpi_addr)
  char name[64] = {};
};
constexpr int kMaxLoadedObjects = 24;
LoadedObject g_objects[kMaxLoadedObjects];
int g_object_count = 0;

int record_object(dl_phdr_info* object, size_t, void*) {
  if (g_object_count >= kMaxLoadedObjects) return 1;
  LoadedObject& out = g_objects[g_object_count];
  uintptr_t low = UINTPTR_MAX;
  uintptr_t high = 0;
  for (int i = 0; i < object->dlpi_phnum; ++i) {
    const ElfW(Phdr)& segment = object->dlpi_phdr[i];
    if (segment.p_type != PT_LOAD || (segment.p_flags & PF_X) == 0) continue;
    low = std::min<uintptr_t>(low, object->dlpi_addr + segment.p_vaddr);
    high = std::max<uintptr_t>(high, object->dlpi_addr + segment.p_vaddr + segment.p_memsz);
  }
  if (high == 0) return 0;
  out.start = low;
  out.end = high;
  out.base = object->dlpi_addr;
  const char* name = object->dlpi_name != nullptr && object->dlpi_name[0] != '\0' ? object->dlpi_name
                                                                                   : program_invocation_name;
  if (const char* slash = std::strrchr(name, '/')) name = slash + 1;
  std::strncpy(out.name, name, sizeof(out.name) - 1);
  ++g_object_count;
  return 0;
}

// "skiff: seccomp: called from skiff+0x4a3b2 libc.so.6+0x10e1c0 ..." (innermost first).
// backtrace() was primed before any filter (it loads libgcc_s's unwinder on first use).
void write_call_stack() {
  void* frames[24];
  const int count = ::backtrace(frames, 24);
  char line[1024];
  size_t used = 0;
  append(line, sizeof(line), &used, "skiff: seccomp: called from");
  for (int i = 0; i < count; ++i) {
    const auto address = reinterpret_cast<uintptr_t>(frames[i]);
    append(line, sizeof(line), &used, " ");
    bool found = false;
    for (int j = 0; j < g_object_count && !found; ++j) {
      if (address < g_objects[j].start || address >= g_objects[j].end) continue;
      append(line, sizeof(line), &used, g_objects[j].name);
      append(line, sizeof(line), &used, "+");
      append_hex(line, sizeof(line), &used, address - g_objects[j].base);
      found = true;
    }
    if (!found) append_hex(line, sizeof(line), &used, address);
  }
  if (count <= 0) append(line, sizeof(line), &used, " (no stack: libgcc_s is not available)");
  append(line, sizeof(line), &used, "\n");
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, line, used);
}

void sigsys_handler(int, siginfo_t* info, void* context) {
  char line[256];
  size_t used = 0;
  append(line, sizeof(line), &used, "skiff: seccomp: ");
  if (info->si_code == kSiCodeSeccomp) {
    const int number = info->si_syscall;
    append(line, sizeof(line), &used, "forbidden system call ");
    if (number >= 0 && number < kSyscallNameSlots && g_syscall_names[number][0] != '\0') {
      append(line, sizeof(line), &used, g_syscall_names[number]);
    } else {
      append(line, sizeof(line), &used, "?");
    }
    append(line, sizeof(line), &used, " (");
    append_number(line, sizeof(line), &used, number);
    append(line, sizeof(line), &used, ")");
#if defined(__x86_64__)
    if (number == __NR_ioctl && context != nullptr) {
      // Which request: most threads may make some ioctls, and the request says who erred.
      const auto* uc = static_cast<const ucontext_t*>(context);
      append(line, sizeof(line), &used, " request ");
      append_hex(line, sizeof(line), &used, static_cast<unsigned long>(uc->uc_mcontext.gregs[REG_RSI]) & 0xffffffffUL);
    }
#endif
  } else {
    append(line, sizeof(line), &used, "SIGSYS not raised by seccomp");
  }
  const ThreadIdentity& identity = t_identity;
  if (identity.known) {
    append(line, sizeof(line), &used, " in the ");
    append(line, sizeof(line), &used, kind_name(identity.kind));
    append(line, sizeof(line), &used, " thread \"");
    append(line, sizeof(line), &used, identity.name);
    append(line, sizeof(line), &used, "\"");
  } else {
    append(line, sizeof(line), &used, " in a thread without a filter of its own (it inherited its creator's)");
  }
  append(line, sizeof(line), &used, "; killing the process\n");
  // One write: lines from two threads that trip at once do not interleave.
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, line, used);
  write_call_stack();
  die_of_sigsys(info, context);
}

void resolve_syscall_names() {
  for (int number = 0; number < kSyscallNameSlots; ++number) {
    // seccomp_syscall_resolve_num_arch returns a malloc'd copy, or NULL for a gap.
    std::unique_ptr<char, decltype(&std::free)> name(seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, number),
                                                     &std::free);
    if (!name) continue;
    std::strncpy(g_syscall_names[number], name.get(), kSyscallNameBytes - 1);
    g_syscall_names[number][kSyscallNameBytes - 1] = '\0';
  }
}

uint32_t filter_action(RuleAction action) {
  switch (action) {
    case RuleAction::allow: return SCMP_ACT_ALLOW;
    case RuleAction::fail_enosys: return SCMP_ACT_ERRNO(ENOSYS);
  }
  return SCMP_ACT_ALLOW;
}

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using FilterContext = std::unique_ptr<void, FilterDeleter>;

Result<FilterContext> build_filter(ThreadKind kind, SeccompMode mode) {
  const bool enforce = mode == SeccompMode::enforce;
  FilterContext ctx(seccomp_init(enforce ? SCMP_ACT_TRAP : SCMP_ACT_LOG));
  if (!ctx) return internal_error(fmt::format("seccomp: seccomp_init for the {} thread failed", kind_name(kind)));
  const std::string where = fmt::format("seccomp filter of the {} thread", kind_name(kind));
  // A syscall of another ABI (int 0x80, x32) is never ours: an attack, not a missing rule.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, enforce ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG);
      rc < 0) {
    return std::unexpected(errno_error(where + ": setting the bad-architecture action", -rc));
  }
  // install_thread_filter sets NO_NEW_PRIVS itself, first, and reports its own error.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0); rc < 0) {
    return std::unexpected(errno_error(where + ": SCMP_FLTATR_CTL_NNP", -rc));
  }
  // A binary search over syscall numbers instead of a linear scan: KVM_RUN's ioctl is
  // checked on every exit. Older libseccomp lacks the attribute; the linear filter works.
  (void)seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2);

  const uint64_t own_pid = static_cast<uint64_t>(::getpid());
  for (const SyscallRule& rule : thread_rules(kind)) {
    int rc = 0;
    if (rule.condition) {
      const ArgCondition& c = *rule.condition;
      const uint64_t value = c.value_is_own_pid ? own_pid : c.value;
      // SCMP_CMP_MASKED_EQ: (arg & datum_a) == datum_b.
      scmp_arg_cmp compare{c.arg_index, SCMP_CMP_MASKED_EQ, c.mask, value};
      rc = seccomp_rule_add_exact_array(ctx.get(), filter_action(rule.action), rule.number, 1, &compare);
    } else {
      rc = seccomp_rule_add_exact_array(ctx.get(), filter_action(rule.action), rule.number, 0, nullptr);
    }
    if (rc < 0) {
      return std::unexpected(errno_error(
          fmt::format("{}: rule for {}{}{}", where, rule.name, rule.condition_name.empty() ? "" : " ",
                      rule.condition_name),
          -rc));
    }
  }
  return ctx;
}

}  // namespace

Result<SeccompMode> parse_seccomp_mode(std::string_view text) {
  if (text == "enforce") return SeccompMode::enforce;
  if (text == "log") return SeccompMode::log;
  if (text == "off") return SeccompMode::off;
  return config_error(fmt::format("--seccomp \"{}\": expected enforce, log or off", text));
}

std::string_view to_string(SeccompMode mode) {
  switch (mode) {
    case SeccompMode::enforce: return "enforce";
    case SeccompMode::log: return "log";
    case SeccompMode::off: return "off";
  }
  return "unknown";
}

std::span<const ThreadKind> all_thread_kinds() { return kAllThreadKinds; }

std::string_view to_string(ThreadKind kind) { return kind_name(kind); }

void install_sigsys_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    resolve_syscall_names();
    // backtrace() loads libgcc_s's unwinder on its first call: do that now, unfiltered.
    void* frames[2];
    (void)::backtrace(frames, 2);
    dl_iterate_phdr(record_object, nullptr);
    // libseccomp probes the kernel (which seccomp actions and flags exist) once and caches
    // the answer; doing it now means a thread that installs its filter later under an
    // inherited one needs no probing syscalls.
    (void)seccomp_api_get();
    struct sigaction action {};
    action.sa_sigaction = sigsys_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO;  // no SA_NODEFER: die_of_sigsys relies on SIGSYS being blocked
    if (::sigaction(SIGSYS, &action, nullptr) != 0) {
      spdlog::warn("seccomp: cannot install the SIGSYS handler ({}); a violation kills without a report",
                   std::strerror(errno));
    }
  });
}

namespace {

// Process-wide state that glibc would otherwise load lazily, from a file, in whichever
// thread first needs it, which may then be a filtered one.
void prime_lazy_libc_state() {
  static std::once_flag once;
  std::call_once(once, [] {
    // localtime_r (spdlog's time stamps) reads /etc/localtime on its first call only.
    ::tzset();
    // malloc reads /proc/sys/vm/overcommit_memory the first time it shrinks the heap of a
    // thread arena (check_may_shrink_heap), e.g. when the main thread frees at teardown
    // what a device thread allocated. Make that happen now: a thread fills its own arena
    // with blocks below the mmap threshold and frees them, which trims the arena's heap.
    std::thread([] {
      std::vector<void*> blocks;
      for (int i = 0; i < 16; ++i) blocks.push_back(std::malloc(96 * 1024));
      for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) std::free(*it);
    }).join();
  });
}

}  // namespace

void prepare_thread_filters(SeccompMode mode) {
  if (mode == SeccompMode::off) return;
  prime_lazy_libc_state();
  if (mode == SeccompMode::enforce) {
    install_sigsys_handler();
  } else {
    (void)seccomp_api_get();
  }
}

Result<void> install_thread_filter(ThreadKind kind, SeccompMode mode) {
  if (mode == SeccompMode::off) return {};
  prepare_thread_filters(mode);

  auto filter = build_filter(kind, mode);
  if (!filter) return std::unexpected(filter.error());

  ThreadIdentity& identity = t_identity;
  identity.kind = kind;
  if (::prctl(PR_GET_NAME, identity.name, 0, 0, 0) != 0) identity.name[0] = '\0';
  identity.name[sizeof(identity.name) - 1] = '\0';
  identity.known = true;

  // No execve from here on can gain privileges (setuid binaries, file capabilities); it
  // is also what lets a process without CAP_SYS_ADMIN load a filter.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return std::unexpected(
        errno_error(fmt::format("seccomp: PR_SET_NO_NEW_PRIVS for the {} thread", kind_name(kind)), errno));
  }
  if (mode == SeccompMode::enforce) {
    // A thread that blocks SIGSYS would be killed without the report.
    sigset_t sigsys;
    sigemptyset(&sigsys);
    sigaddset(&sigsys, SIGSYS);
    ::pthread_sigmask(SIG_UNBLOCK, &sigsys, nullptr);
  }
  // Without SCMP_FLTATR_CTL_TSYNC: this thread only.
  if (int rc = seccomp_load(filter->get()); rc < 0) {
    return std::unexpected(
        errno_error(fmt::format("seccomp: loading the filter of the {} thread", kind_name(kind)), -rc));
  }
  return {};
}

}  // namespace skiff::security
