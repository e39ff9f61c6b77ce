// SPDX-License-Identifier: Apache-2.0
// Checks on the tables themselves; loading them is seccomp_filter_test.cc's job.
#include <sched.h>
#include <signal.h>

#include <sys/socket.h>

#include <gtest/gtest.h>

#if defined(SKIFF_HAVE_SECCOMP)

#include <seccomp.h>
#include <sys/syscall.h>

#include <set>
#include <string>

#include "security/syscall_tables.h"

namespace skiff::security {
namespace {

std::string describe(const SyscallRule& rule) {
  return std::string(rule.name) + (rule.condition_name.empty() ? "" : " " + std::string(rule.condition_name));
}

TEST(SyscallTables, NoGroupListsAnEntryTwice) {
  std::set<const RuleGroup*> groups;
  for (ThreadKind kind : all_thread_kinds()) {
    for (const RuleGroup* group : thread_rule_groups(kind)) groups.insert(group);
  }
  for (const RuleGroup* group : groups) {
    for (size_t i = 0; i < group->rules.size(); ++i) {
      for (size_t j = i + 1; j < group->rules.size(); ++j) {
        const SyscallRule& a = group->rules[i];
        const SyscallRule& b = group->rules[j];
        EXPECT_FALSE(a.number == b.number && a.condition == b.condition)
            << group->name << " lists " << describe(a) << " twice";
      }
    }
  }
}

TEST(SyscallTables, NoKindListsAThreadTwiceOrMixesConditions) {
  for (ThreadKind kind : all_thread_kinds()) {
    const auto groups = thread_rule_groups(kind);
    EXPECT_EQ(std::set<const RuleGroup*>(groups.begin(), groups.end()).size(), groups.size()) << to_string(kind);
    const auto rules = thread_rules(kind);
    for (size_t i = 0; i < rules.size(); ++i) {
      for (size_t j = i + 1; j < rules.size(); ++j) {
        const SyscallRule& a = rules[i];
        const SyscallRule& b = rules[j];
        if (a.number != b.number) continue;
        EXPECT_NE(a.condition, b.condition) << to_string(kind) << ": " << describe(a) << " twice after merging";
        // An unconditional rule next to a conditional one would make the condition moot.
        EXPECT_TRUE(a.condition.has_value() && b.condition.has_value())
            << to_string(kind) << ": " << a.name << " is both unconditional and conditional";
        EXPECT_EQ(a.action, b.action) << to_string(kind) << ": " << a.name << " has two actions";
      }
    }
  }
}

TEST(SyscallTables, EveryRuleSaysWhoNeedsItAndNamesItsSyscall) {
  for (ThreadKind kind : all_thread_kinds()) {
    for (const RuleGroup* group : thread_rule_groups(kind)) {
      EXPECT_FALSE(group->why.empty()) << group->name;
      for (const SyscallRule& rule : group->rules) {
        EXPECT_GE(rule.why.size(), 10u) << group->name << ": " << describe(rule);
        // The name is the kernel's for that number (the macros take both from one token).
        EXPECT_EQ(seccomp_syscall_resolve_name(std::string(rule.name).c_str()), rule.number) << rule.name;
        if (rule.condition) {
          EXPECT_FALSE(rule.condition_name.empty()) << group->name << ": " << rule.name;
          EXPECT_LT(rule.condition->arg_index, 6u) << rule.name;
          EXPECT_EQ(rule.condition->value & ~rule.condition->mask, 0u) << describe(rule) << " can never match";
        }
      }
    }
  }
}

TEST(SyscallTables, IoctlIsAlwaysNarrowedByRequest) {
  for (ThreadKind kind : all_thread_kinds()) {
    for (const SyscallRule& rule : thread_rules(kind)) {
      if (rule.number != __NR_ioctl) continue;
      ASSERT_TRUE(rule.condition.has_value()) << to_string(kind) << ": an ioctl rule without a request";
      EXPECT_EQ(rule.condition->arg_index, 1u) << describe(rule);
    }
  }
}

bool allows(ThreadKind kind, int number) {
  for (const SyscallRule& rule : thread_rules(kind)) {
    if (rule.number == number && rule.action == RuleAction::allow) return true;
  }
  return false;
}

TEST(SyscallTables, NothingOpensFilesOrStartsProgramsAfterStart) {
  for (ThreadKind kind : all_thread_kinds()) {
    for (int number : {__NR_open, __NR_openat, __NR_openat2, __NR_execve, __NR_execveat, __NR_fork, __NR_vfork,
                       __NR_ptrace, __NR_process_vm_writev, __NR_setuid, __NR_mount, __NR_init_module, __NR_bpf,
                       __NR_unlinkat, __NR_rename, __NR_renameat2}) {
      EXPECT_FALSE(allows(kind, number)) << to_string(kind) << " allows syscall " << number;
    }
    // Only virtio-vsock makes sockets: Unix ones, for the guest's connections to
    // "<socket>_<port>" (and the device manager, whose filter its worker inherits).
    const bool vsock = kind == ThreadKind::vsock || kind == ThreadKind::device_manager;
    EXPECT_EQ(allows(kind, __NR_connect), vsock) << to_string(kind);
    EXPECT_EQ(allows(kind, __NR_socket), vsock) << to_string(kind);
    for (const SyscallRule& rule : thread_rules(kind)) {
      if (rule.number != __NR_socket) continue;
      ASSERT_TRUE(rule.condition.has_value()) << to_string(kind) << ": socket() of any family";
      EXPECT_EQ(rule.condition->arg_index, 0u);
      EXPECT_EQ(rule.condition->value, static_cast<uint64_t>(AF_UNIX));
    }
    // Only the main thread removes a file: the API socket at teardown.
    EXPECT_EQ(allows(kind, __NR_unlink), kind == ThreadKind::main) << to_string(kind);
  }
}

TEST(SyscallTables, EveryKindHasTheRuntimeAndOnlyCreatorsCanClone) {
  for (ThreadKind kind : all_thread_kinds()) {
    EXPECT_TRUE(allows(kind, __NR_futex)) << to_string(kind);
    EXPECT_TRUE(allows(kind, __NR_exit)) << to_string(kind);
    const bool creates_threads = kind == ThreadKind::main || kind == ThreadKind::device_manager ||
                                 kind == ThreadKind::signals || kind == ThreadKind::api;
    EXPECT_EQ(allows(kind, __NR_clone), creates_threads) << to_string(kind);
  }
  EXPECT_TRUE(allows(ThreadKind::blk_io, __NR_io_uring_enter));
  EXPECT_FALSE(allows(ThreadKind::blk_io, __NR_io_uring_setup));
  EXPECT_FALSE(allows(ThreadKind::net_io, __NR_preadv));
}

// Only main may fork, and only a plain fork (clone with SIGCHLD and nothing else: no
// shared memory, no namespaces) for the background KVM teardown at exit; every other clone
// rule of every kind is for threads.
TEST(SyscallTables, OnlyMainForksAndOnlyPlainly) {
  for (ThreadKind kind : all_thread_kinds()) {
    bool plain_fork = false;
    for (const SyscallRule& rule : thread_rules(kind)) {
      if (rule.number != __NR_clone || rule.action != RuleAction::allow) continue;
      ASSERT_TRUE(rule.condition.has_value()) << to_string(kind) << ": clone with any flags";
      EXPECT_EQ(rule.condition->arg_index, 0u);
      EXPECT_EQ(rule.condition->mask, ~uint64_t{0});
      if (rule.condition->value == SIGCHLD) {
        plain_fork = true;
      } else {
        EXPECT_NE(rule.condition->value & CLONE_THREAD, 0u) << to_string(kind) << ": clone that is not a thread";
      }
    }
    EXPECT_EQ(plain_fork, kind == ThreadKind::main) << to_string(kind);
  }
}

// A thread inherits its creator's filter; its own is stacked on top. Each kind's filter
// must therefore fit inside its creator's, or the child dies on calls its own table
// allows. Creators today: main starts vCPUs, the device manager, console, signals, API; the
// device manager starts the device workers (activation); signals, API and main start the
// shutdown timer.
TEST(SyscallTables, ChildrenFitInsideTheFilterTheyInherit) {
  const std::pair<ThreadKind, ThreadKind> births[] = {
      {ThreadKind::device_manager, ThreadKind::blk_io},  {ThreadKind::device_manager, ThreadKind::net_io},
      {ThreadKind::device_manager, ThreadKind::balloon}, {ThreadKind::device_manager, ThreadKind::rng},
      {ThreadKind::device_manager, ThreadKind::vsock},
      {ThreadKind::signals, ThreadKind::shutdown_timer}, {ThreadKind::api, ThreadKind::shutdown_timer},
      {ThreadKind::main, ThreadKind::shutdown_timer},
  };
  for (const auto& [parent, child] : births) {
    const auto parent_rules = thread_rules(parent);
    for (const SyscallRule& rule : thread_rules(child)) {
      bool covered = false;
      for (const SyscallRule& p : parent_rules) {
        if (p.number == rule.number && p.action == rule.action && (!p.condition || p.condition == rule.condition)) {
          covered = true;
        }
      }
      EXPECT_TRUE(covered) << to_string(child) << " needs " << describe(rule) << " but its creator "
                           << to_string(parent) << " does not allow it";
    }
  }
}

}  // namespace
}  // namespace skiff::security

#endif  // SKIFF_HAVE_SECCOMP
