// SPDX-License-Identifier: Apache-2.0
// The spec's rules that look at this host: host CPUs and NUMA nodes exist, the files the
// spec names can be read or written (validate_spec applies them after the host-independent
// rules; index in spec_rules.h). Everything here reports ErrorKind::kConfig: the spec is
// what must change.
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "config/spec_rules.h"
#include "skiff/spec.h"

namespace skiff::config {

namespace {

constexpr const char* kPossibleCpusPath = "/sys/devices/system/cpu/possible";
constexpr const char* kNodeDir = "/sys/devices/system/node";

std::optional<std::string> read_small_file(const char* path) {
  std::ifstream stream(path);
  if (!stream) return std::nullopt;
  std::ostringstream text;
  text << stream.rdbuf();
  return text.str();
}

// Renders a sorted list compactly: 0-3,8.
std::string format_cpu_list(const std::vector<uint32_t>& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    out += out.empty() ? "" : ",";
    out += j == i ? fmt::format("{}", cpus[i]) : fmt::format("{}-{}", cpus[i], cpus[j]);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

// Host CPUs that can exist (online or not): sysfs first, the configured count as fallback.
std::vector<uint32_t> host_cpus() {
  if (auto text = read_small_file(kPossibleCpusPath)) {
    if (auto cpus = parse_cpu_list(*text); cpus && !cpus->empty()) return *cpus;
  }
  long count = ::sysconf(_SC_NPROCESSORS_CONF);
  std::vector<uint32_t> cpus;
  for (long cpu = 0; cpu < std::min<long>(count, CPU_SETSIZE); ++cpu) {
    cpus.push_back(static_cast<uint32_t>(cpu));
  }
  return cpus;
}

Result<void> check_affinity_on_host(const MachineSpec& machine) {
  if (machine.vcpu_affinity.empty()) return {};
  std::vector<uint32_t> cpus = host_cpus();
  for (size_t vcpu = 0; vcpu < machine.vcpu_affinity.size(); ++vcpu) {
    const auto& list = machine.vcpu_affinity[vcpu];
    for (size_t i = 0; i < list.size(); ++i) {
      if (!std::ranges::binary_search(cpus, list[i])) {
        return config_error(fmt::format(
            "/machine/vcpu_affinity/{}/{}: host CPU {} does not exist on this host (its CPUs "
            "are {})",
            vcpu, i, list[i], format_cpu_list(cpus)));
      }
    }
  }
  return {};
}

Result<void> check_numa_node_on_host(const MachineSpec& machine) {
  if (!machine.numa_node) return {};
  std::string node_dir = fmt::format("{}/node{}", kNodeDir, *machine.numa_node);
  struct stat status {};
  if (::stat(node_dir.c_str(), &status) == 0 && S_ISDIR(status.st_mode)) return {};
  std::string nodes = "unknown: the kernel exposes no NUMA nodes";
  std::string online_path = fmt::format("{}/online", kNodeDir);
  if (auto text = read_small_file(online_path.c_str())) {
    if (auto list = parse_cpu_list(*text)) nodes = format_cpu_list(*list);
  }
  return config_error(fmt::format(
      "/machine/numa_node: host NUMA node {} does not exist ({} not found; this host's nodes: "
      "{})",
      *machine.numa_node, node_dir, nodes));
}

// Closes a descriptor on scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_;
};

// A file the VMM will read at boot: it must be a readable, non-empty regular file.
Result<void> check_input_file(std::string_view pointer, const std::filesystem::path& path,
                              std::string_view fix) {
  auto fail = [&](std::string_view reason) {
    return config_error(
        fmt::format("{} \"{}\": {}; {}", pointer, printable(path.string()), reason, fix));
  };
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) return fail(std::strerror(errno));
  if (S_ISDIR(status.st_mode)) return fail("is a directory, not a file");
  if (!S_ISREG(status.st_mode)) return fail("is not a regular file");
  // Opening is the only reliable readability test (ACLs, LSMs, read-only mounts);
  // O_NONBLOCK in case the file was swapped for a FIFO since stat().
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return fail(std::strerror(errno));
  FdCloser closer(fd);
  if (::fstat(fd, &status) != 0) return fail(std::strerror(errno));
  if (!S_ISREG(status.st_mode)) return fail("is not a regular file");
  if (status.st_size == 0) return fail("is empty");
  return {};
}

// The serial log is appended to (and created) at boot: its directory must exist and the
// file, or its directory when the file is new, must be writable.
Result<void> check_serial_file(const std::filesystem::path& path) {
  constexpr std::string_view kFix =
      "serial.path must name a writable file in an existing directory";
  auto fail = [&](std::string_view reason) {
    return config_error(
        fmt::format("/serial/path \"{}\": {}; {}", printable(path.string()), reason, kFix));
  };
  std::filesystem::path parent = path.parent_path();
  if (parent.empty()) parent = ".";
  struct stat status {};
  if (::stat(parent.c_str(), &status) != 0) {
    return fail(fmt::format("directory \"{}\": {}", parent.string(), std::strerror(errno)));
  }
  if (!S_ISDIR(status.st_mode)) {
    return fail(fmt::format("\"{}\" is not a directory", parent.string()));
  }
  if (::stat(path.c_str(), &status) == 0) {
    if (S_ISDIR(status.st_mode)) return fail("is a directory, not a file");
    if (::access(path.c_str(), W_OK) != 0) return fail(std::strerror(errno));
    return {};
  }
  if (errno != ENOENT) return fail(std::strerror(errno));
  if (::access(parent.c_str(), W_OK | X_OK) != 0) {
    return fail(
        fmt::format("cannot create a file in \"{}\": {}", parent.string(), std::strerror(errno)));
  }
  return {};
}

// A disk must be a regular file or block device that can be opened the way the VM will
// (read-write unless read_only); two disks may not name the same file or device.
Result<void> check_disks(const std::vector<DiskSpec>& disks) {
  std::vector<std::pair<dev_t, ino_t>> seen;
  for (size_t i = 0; i < disks.size(); ++i) {
    const DiskSpec& disk = disks[i];
    auto fail = [&](std::string_view reason, std::string_view fix) {
      return config_error(fmt::format("/disks/{}/path \"{}\": {}; {}", i, printable(disk.path.string()),
                                      reason, fix));
    };
    struct stat status {};
    if (::stat(disk.path.c_str(), &status) != 0) {
      return fail(std::strerror(errno),
                  errno == ENOENT ? "create the image first (e.g. truncate -s 10G disk.img) or fix the path"
                                  : "check the path and its permissions");
    }
    if (!S_ISREG(status.st_mode) && !S_ISBLK(status.st_mode)) {
      return fail("is neither a regular file nor a block device", "name a raw image file or a block device");
    }
    const auto key = S_ISBLK(status.st_mode) ? std::pair<dev_t, ino_t>(status.st_rdev, 0)
                                             : std::pair<dev_t, ino_t>(status.st_dev, status.st_ino);
    if (std::ranges::find(seen, key) != seen.end()) {
      return fail("is already attached as another disk of this VM", "attach each file or device once");
    }
    seen.push_back(key);
    if (::access(disk.path.c_str(), disk.read_only ? R_OK : (R_OK | W_OK)) != 0) {
      return fail(std::strerror(errno), disk.read_only ? "make it readable by skiff"
                                                       : "make it writable by skiff, or set \"read_only\": true");
    }
  }
  return {};
}

// The vsock device makes its socket when the VM starts (a stale one replaced, a live one
// refused) and removes it at exit, so skiff must be able to create and remove files in the
// socket's directory. Only looks: nothing is created here.
Result<void> check_vsock_directory(const VsockSpec& vsock) {
  std::filesystem::path dir = vsock.socket.parent_path();
  if (dir.empty()) dir = ".";
  const std::string socket = printable(vsock.socket.string());
  const std::string shown = printable(dir.string());
  struct stat status {};
  if (::stat(dir.c_str(), &status) != 0) {
    const int error = errno;
    if (error == ENOENT) {
      return config_error(fmt::format(
          "/vsock/socket \"{}\": the directory \"{}\" does not exist; create it (e.g. mkdir -p {})", socket, shown,
          shown));
    }
    return config_error(fmt::format("/vsock/socket \"{}\": directory \"{}\": {}; check the path and its permissions",
                                    socket, shown, std::strerror(error)));
  }
  if (!S_ISDIR(status.st_mode)) {
    return config_error(fmt::format(
        "/vsock/socket \"{}\": \"{}\" is not a directory; put the socket in an existing directory", socket, shown));
  }
  // access() asks with the real uid, the one skiff creates files as (it is not setuid).
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    const int error = errno;
    return config_error(fmt::format(
        "/vsock/socket \"{}\": skiff cannot create the socket in \"{}\": {}; make the directory writable by the "
        "user skiff runs as (e.g. chmod u+wx {}) or choose another directory",
        socket, shown, std::strerror(error), shown));
  }
  return {};
}

}  // namespace

// The socket itself is made (or a stale one replaced) when the API starts; its directory
// must exist.
Result<void> check_api_directory(const ApiSpec& api) {
  std::filesystem::path dir = api.socket.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  auto status = std::filesystem::status(dir, ec);
  if (ec || !std::filesystem::exists(status)) {
    return config_error(fmt::format("/api/socket \"{}\": the directory \"{}\" does not exist; create it (e.g. "
                                    "mkdir -p {})",
                                    printable(api.socket.string()), printable(dir.string()),
                                    printable(dir.string())));
  }
  if (!std::filesystem::is_directory(status)) {
    return config_error(fmt::format("/api/socket \"{}\": \"{}\" is not a directory",
                                    printable(api.socket.string()), printable(dir.string())));
  }
  return {};
}

Result<void> check_host_rules(const VmSpec& spec) {
  if (auto result = check_affinity_on_host(spec.machine); !result) return result;
  if (auto result = check_numa_node_on_host(spec.machine); !result) return result;
  if (auto result = check_input_file(
          "/boot/kernel", spec.boot.kernel,
          "set boot.kernel to a bzImage or ELF vmlinux (relative paths are resolved against "
          "the spec file's directory)");
      !result) {
    return result;
  }
  if (!spec.boot.initrd.empty()) {
    if (auto result = check_input_file(
            "/boot/initrd", spec.boot.initrd,
            "set boot.initrd to an initramfs image, or leave it out to boot without one");
        !result) {
      return result;
    }
  }
  if (auto result = check_disks(spec.disks); !result) return result;
  if (spec.vsock) {
    if (auto result = check_vsock_directory(*spec.vsock); !result) return result;
  }
  if (spec.api) {
    if (auto result = check_api_directory(*spec.api); !result) return result;
  }
  if (spec.serial.mode == SerialMode::kFile) return check_serial_file(spec.serial.path);
  return {};
}

}  // namespace skiff::config
