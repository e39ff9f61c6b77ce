// SPDX-License-Identifier: Apache-2.0
#include "api/unix_socket.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace skiff::api {

namespace {

constexpr int kListenBacklog = 8;

Result<sockaddr_un> make_address(const std::filesystem::path& path, std::string_view label) {
  const std::string& text = path.native();
  if (text.empty()) return config_error(fmt::format("{}: the path is empty", label));
  if (text.size() > kMaxUnixSocketPathBytes) {
    return config_error(fmt::format("{} \"{}\" is {} bytes long; a Unix socket path can have at most {}",
                                    label, text, text.size(), kMaxUnixSocketPathBytes));
  }
  if (text.find('\0') != std::string::npos) {
    return config_error(fmt::format("{} \"{}\" contains a NUL byte", label, text));
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, text.data(), text.size());
  return address;
}

Result<UniqueFd> new_socket() {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return std::unexpected(errno_error("socket(AF_UNIX)", errno));
  return fd;
}

// Connects `fd` to `address`; returns 0 or the errno.
int connect_to(int fd, const sockaddr_un& address) {
  int result;
  do {
    // SAFETY: sockaddr_un is a sockaddr for AF_UNIX; the length is its full size.
    result = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  } while (result != 0 && errno == EINTR);
  return result == 0 ? 0 : errno;
}

// Decides what to do with an existing file at the socket path: unlink it when it is a
// socket left by a dead process, refuse otherwise.
Result<void> clear_stale_socket(const std::filesystem::path& path, const sockaddr_un& address,
                                std::string_view label) {
  struct stat info{};
  if (::lstat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return {};
    return std::unexpected(errno_error(fmt::format("{} \"{}\": stat", label, path.native()), errno));
  }
  if (!S_ISSOCK(info.st_mode)) {
    return config_error(
        fmt::format("{} \"{}\" exists and is not a socket; remove it or choose another path", label, path.native()));
  }
  auto probe = new_socket();
  if (!probe) return std::unexpected(probe.error());
  int error = connect_to(probe->get(), address);
  if (error == 0) {
    return config_error(fmt::format("{} {} is in use by a running process (another VM?); stop it or choose another path", label, path.native()));
  }
  if (error != ECONNREFUSED) {
    return std::unexpected(errno_error(fmt::format("{} \"{}\": probing the existing socket", label, path.native()), error));
  }
  // Nobody listens: the process that bound it has gone (killed, crashed). Replace it.
  spdlog::info("{} {}: replacing a stale socket", label, path.native());
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return std::unexpected(errno_error(fmt::format("{} \"{}\": removing the stale socket", label, path.native()), errno));
  }
  return {};
}

}  // namespace

Result<UnixListener> listen_unix_socket(const std::filesystem::path& path, std::string_view label) {
  auto address = make_address(path, label);
  if (!address) return std::unexpected(address.error());
  if (auto cleared = clear_stale_socket(path, *address, label); !cleared) return std::unexpected(cleared.error());

  auto fd = new_socket();
  if (!fd) return std::unexpected(fd.error());
  // Linux creates the socket file with the socket inode's mode masked by the umask, so
  // this makes the file 0600 from its first moment without touching the process-wide umask
  // (other threads may be creating files).
  if (::fchmod(fd->get(), S_IRUSR | S_IWUSR) != 0) {
    return std::unexpected(errno_error(fmt::format("{}: fchmod(0600)", label), errno));
  }
  // SAFETY: sockaddr_un is a sockaddr for AF_UNIX; the length is its full size.
  if (::bind(fd->get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(*address)) != 0) {
    int error = errno;
    return std::unexpected(errno_error(fmt::format("{} \"{}\": bind", label, path.native()), error));
  }
  UnixListener listener;
  listener.path = path;
  struct stat info{};
  if (::stat(path.c_str(), &info) != 0) {
    int error = errno;
    ::unlink(path.c_str());
    return std::unexpected(errno_error(fmt::format("{} \"{}\": stat after bind", label, path.native()), error));
  }
  listener.device = info.st_dev;
  listener.inode = info.st_ino;
  if ((info.st_mode & 0777) != 0600 && ::chmod(path.c_str(), 0600) != 0) {
    int error = errno;
    ::unlink(path.c_str());
    return std::unexpected(errno_error(fmt::format("{} \"{}\": chmod 0600", label, path.native()), error));
  }
  if (::listen(fd->get(), kListenBacklog) != 0) {
    int error = errno;
    ::unlink(path.c_str());
    return std::unexpected(errno_error(fmt::format("{} \"{}\": listen", label, path.native()), error));
  }
  listener.fd = std::move(*fd);
  return listener;
}

void remove_unix_socket(const UnixListener& listener) {
  if (listener.path.empty()) return;
  struct stat info{};
  if (::lstat(listener.path.c_str(), &info) != 0) return;
  if (info.st_dev != listener.device || info.st_ino != listener.inode) return;
  if (::unlink(listener.path.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("{}: could not remove it: {}", listener.path.native(), std::strerror(errno));
  }
}

Result<UniqueFd> connect_unix_socket(const std::filesystem::path& path) {
  auto address = make_address(path, "api.socket");
  if (!address) return std::unexpected(address.error());
  auto fd = new_socket();
  if (!fd) return std::unexpected(fd.error());
  int error = connect_to(fd->get(), *address);
  if (error == 0) return std::move(*fd);
  if (error == ENOENT) {
    return host_error(fmt::format("{}: no such socket (is the VM running, with \"api\": {{\"socket\": ...}} in its spec?)",
                                  path.native()), error);
  }
  if (error == ECONNREFUSED) {
    return host_error(fmt::format("{}: nothing is listening (the VM that created it has exited)", path.native()), error);
  }
  return std::unexpected(errno_error(fmt::format("{}: connect", path.native()), error));
}

}  // namespace skiff::api
