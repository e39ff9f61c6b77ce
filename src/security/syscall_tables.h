// SPDX-License-Identifier: Apache-2.0
// The system calls each kind of skiff thread may make, each with who needs it. The tables
// are data: seccomp_filter.cc turns them into libseccomp rules, the tests check them, and
// docs/security.md explains them per thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "security/seccomp_filter.h"

namespace skiff::security {

// A rule matches when (argument[arg_index] & mask) == value. The kernel reads ioctl and
// fcntl commands as 32-bit values, so those rules mask to the low 32 bits.
struct ArgCondition {
  unsigned arg_index = 0;
  uint64_t mask = ~uint64_t{0};
  uint64_t value = 0;
  // The value is this process's pid, read when the filter is built (after any fork).
  bool value_is_own_pid = false;

  friend bool operator==(const ArgCondition&, const ArgCondition&) = default;
};

enum class RuleAction {
  allow,
  // The call fails with ENOSYS instead: glibc then falls back to an older call that the
  // filter can inspect (clone3 passes its flags in memory, clone in a register).
  fail_enosys,
};

struct SyscallRule {
  int number = -1;                       // __NR_*
  std::string_view name;                 // as strace and the kernel name it
  std::optional<ArgCondition> condition;  // none: every call of `number`
  std::string_view condition_name;       // the request or flag the condition names, e.g. "KVM_RUN"
  std::string_view why;                  // who makes this call and when
  RuleAction action = RuleAction::allow;
};

// A named group of rules shared by several thread kinds ("runtime", "eventloop"...).
struct RuleGroup {
  std::string_view name;
  std::string_view why;  // why a thread kind includes the group
  std::vector<SyscallRule> rules;
};

// The groups that make up `kind`'s filter, in order. Every rule of every group is allowed.
std::vector<const RuleGroup*> thread_rule_groups(ThreadKind kind);
// The flattened rules of thread_rule_groups(kind).
std::vector<SyscallRule> thread_rules(ThreadKind kind);

}  // namespace skiff::security
