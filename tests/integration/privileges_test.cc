// SPDX-License-Identifier: Apache-2.0
// Tier 2: `skiff run --uid/--gid` gives up root once the VM is built, and every thread of a
// running skiff (vCPU, device manager, device worker, API, signals, main) has its seccomp
// filter and no_new_privs, read from /proc while the guest runs.
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "guest_runner.h"

namespace skiff::test {
namespace {

struct TaskStatus {
  std::string name;
  std::map<std::string, std::string> fields;  // "Uid" -> "65534\t65534\t65534\t65534"
};

std::vector<TaskStatus> read_tasks(pid_t pid) {
  std::vector<TaskStatus> tasks;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* handle = opendir(dir.c_str());
  if (handle == nullptr) return tasks;
  while (dirent* entry = readdir(handle)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + entry->d_name + "/status");
    TaskStatus task;
    for (std::string line; std::getline(in, line);) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      task.fields[line.substr(0, colon)] = value;
    }
    task.name = task.fields["Name"];
    if (!task.name.empty()) tasks.push_back(std::move(task));
  }
  closedir(handle);
  return tasks;
}

bool has_task(const std::vector<TaskStatus>& tasks, const std::string& name) {
  for (const TaskStatus& task : tasks) {
    if (task.name == name) return true;
  }
  return false;
}

// Waits until skiff's threads include all of `names` (the guest got that far), up to 20 s.
std::vector<TaskStatus> wait_for_tasks(pid_t pid, const std::vector<std::string>& names) {
  std::vector<TaskStatus> tasks;
  for (int i = 0; i < 400; ++i) {
    tasks = read_tasks(pid);
    bool all = true;
    for (const std::string& name : names) all = all && has_task(tasks, name);
    if (all) return tasks;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return tasks;
}

class Privileges : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = kvm_unavailable_reason()) GTEST_SKIP() << "needs /dev/kvm: " << *reason;
    char dir[] = "/tmp/skiff-priv-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    // The API socket's directory is writable by anyone, so the dropped user may remove it.
    ASSERT_EQ(chmod(dir_.c_str(), 0777), 0);  // not sticky: unlink by a non-owner
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }

  // A VM with the API, virtio-rng on PCI (its worker thread), waiting for a shutdown.
  std::string write_spec() {
    const std::string path = dir_ + "/vm.json";
    std::ofstream out(path);
    out << R"({"machine": {"vcpus": 1, "memory_mib": 64},
      "boot": {"kernel": ")" << SKIFF_TEST_GUEST_ELF
        << R"(", "cmdline": "console=ttyS0 skiff.virtio=1 skiff.action=wait-shutdown"},
      "serial": {"mode": "stdout", "input": false},
      "rng": {}, "api": {"socket": ")"
        << dir_ << R"(/api.sock"}})";
    return path;
  }

  std::string dir_;
};

TEST_F(Privileges, EveryThreadRunsUnderItsFilter) {
#ifdef SKIFF_TEST_ASAN
  GTEST_SKIP() << "the AddressSanitizer runtime makes system calls the filters forbid; the sanitizer stage runs "
                  "with SKIFF_SECCOMP=off and the plain build runs this test";
#endif
  if (const char* mode = std::getenv("SKIFF_SECCOMP"); mode != nullptr && std::string(mode) != "enforce") {
    GTEST_SKIP() << "SKIFF_SECCOMP=" << mode << " turns the filters off or to log mode";
  }
  std::vector<TaskStatus> tasks;
  auto run = run_cli({"run", write_spec()}, std::chrono::seconds(60), std::chrono::milliseconds(0), [&](pid_t pid) {
    tasks = wait_for_tasks(pid, {"skiff-vcpu0", "skiff-devices", "skiff-api", "skiff-signals"});
  });
  EXPECT_EQ(run.exit_code, 0) << run.err;
  // (The rng worker lives only while the test guest's driver has the device active; the
  // device workers' filters are shown by SeccompEnforce.)
  for (const std::string name : {"skiff-vcpu0", "skiff-devices", "skiff-api", "skiff-signals"}) {
    EXPECT_TRUE(has_task(tasks, name)) << name << " not found; output:\n" << run.out << run.err;
  }
  for (const TaskStatus& task : tasks) {
    // "Seccomp: 2" is filter mode; KVM's own kernel threads inherit it from their creator.
    EXPECT_EQ(task.fields.at("Seccomp"), "2") << task.name;
    EXPECT_EQ(task.fields.at("NoNewPrivs"), "1") << task.name;
  }
}

TEST_F(Privileges, UidAndGidAreDroppedAfterTheVmIsBuilt) {
  if (geteuid() != 0) GTEST_SKIP() << "dropping privileges needs root";
  std::vector<TaskStatus> tasks;
  auto run = run_cli({"run", write_spec(), "--uid", "65534", "--gid", "65534"}, std::chrono::seconds(60),
                     std::chrono::milliseconds(0),
                     [&](pid_t pid) { tasks = wait_for_tasks(pid, {"skiff-vcpu0", "skiff-devices", "skiff-api"}); });
  // /dev/kvm, the kernel and the API socket were opened as root; the guest ran and shut
  // down on SIGTERM as the unprivileged user.
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("SKIFF-GUEST shutdown-request=acpi"), std::string::npos) << run.out;
  ASSERT_TRUE(has_task(tasks, "skiff-vcpu0")) << run.out << run.err;
  for (const TaskStatus& task : tasks) {
    EXPECT_EQ(task.fields.at("Uid"), "65534\t65534\t65534\t65534") << task.name;
    EXPECT_EQ(task.fields.at("Gid"), "65534\t65534\t65534\t65534") << task.name;
    EXPECT_EQ(task.fields.at("Groups"), "") << task.name;
    EXPECT_EQ(task.fields.at("CapEff"), "0000000000000000") << task.name;
  }
  // The unprivileged process could remove its socket (the directory allows it).
  struct stat info {};
  EXPECT_NE(stat((dir_ + "/api.sock").c_str(), &info), 0);
}

TEST_F(Privileges, UidAndGidGoTogetherAndAreNotRoot) {
  auto uid_only = run_cli({"run", SKIFF_DEFAULT_VM_SPEC, "--uid", "65534"});
  EXPECT_EQ(uid_only.exit_code, 78);
  EXPECT_NE(uid_only.err.find("--uid and --gid go together"), std::string::npos) << uid_only.err;
  auto root = run_cli({"run", SKIFF_DEFAULT_VM_SPEC, "--uid", "0", "--gid", "0"});
  EXPECT_EQ(root.exit_code, 78);
  EXPECT_NE(root.err.find("--uid/--gid 0 is root"), std::string::npos) << root.err;
  auto mode = run_cli({"run", SKIFF_DEFAULT_VM_SPEC, "--seccomp", "strict"});
  EXPECT_EQ(mode.exit_code, 64);
  EXPECT_NE(mode.err.find("--seccomp"), std::string::npos) << mode.err;
}

}  // namespace
}  // namespace skiff::test
