// SPDX-License-Identifier: Apache-2.0
// The control socket's file: created 0600, a stale one from a dead process replaced, a
// live one refused, and removed again only while it is still ours.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string_view>

#include "common/unique_fd.h"
#include "skiff/error.h"

namespace skiff::api {

// The longest path a sockaddr_un holds: sun_path is 108 bytes with the terminating NUL.
inline constexpr size_t kMaxUnixSocketPathBytes = 107;

// A listening socket and the identity of the file it is bound to.
struct UnixListener {
  UniqueFd fd;
  std::filesystem::path path;
  dev_t device = 0;
  ino_t inode = 0;
};

// Binds a SOCK_STREAM Unix socket at `path` with mode 0600 and listens. When `path`
// exists: a socket something answers on is "in use by a running process" (error); a
// socket nobody answers on (ECONNREFUSED: its process died) is unlinked and replaced;
// anything that is not a socket is left alone (error).
// `label` names the spec field in errors ("api.socket", "/vsock/socket").
Result<UnixListener> listen_unix_socket(const std::filesystem::path& path, std::string_view label = "api.socket");

// Removes the socket file if it is still the one `listener` created (a later skiff may
// have replaced it after deciding ours was stale).
void remove_unix_socket(const UnixListener& listener);

// Connects to the control socket at `path`; errors say whether the file is missing or
// nothing listens on it.
Result<UniqueFd> connect_unix_socket(const std::filesystem::path& path);

}  // namespace skiff::api
