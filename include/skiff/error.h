// SPDX-License-Identifier: Apache-2.0
// Error type shared by every skiff API: a category that decides the process exit code,
// a message that names what failed and why, and the errno when a system call failed.
#pragma once

#include <expected>
#include <string>
#include <utility>

namespace skiff {

enum class ErrorKind {
  kConfig,    // the user's spec, CLI flags or input files are wrong
  kHost,      // a host resource is missing or refused (/dev/kvm, hugepages, permissions)
  kGuest,     // the guest did something that stops the VM (triple fault, bad image state)
  kInternal,  // a VMM bug or an unexpected failure of a system call
  kState,     // the VM's state refuses the request (pause a stopped VM, stop one never started)
};

class Error {
 public:
  Error(ErrorKind kind, std::string message, int sys_errno = 0)
      : kind_(kind), message_(std::move(message)), errno_(sys_errno) {}

  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  // The errno of the failed system call, or 0.
  int sys_errno() const { return errno_; }

  // Returns a copy whose message is "<context>: <message>", for adding the caller's view
  // of what was being done (e.g. `disks[0].path "/x"`).
  Error with_context(const std::string& context) const {
    return Error(kind_, context + ": " + message_, errno_);
  }

 private:
  ErrorKind kind_;
  std::string message_;
  int errno_;
};

template <typename T>
using Result = std::expected<T, Error>;

// Shorthands that build an unexpected Error.
inline std::unexpected<Error> config_error(std::string message) {
  return std::unexpected(Error(ErrorKind::kConfig, std::move(message)));
}
inline std::unexpected<Error> host_error(std::string message, int sys_errno = 0) {
  return std::unexpected(Error(ErrorKind::kHost, std::move(message), sys_errno));
}
inline std::unexpected<Error> guest_error(std::string message) {
  return std::unexpected(Error(ErrorKind::kGuest, std::move(message)));
}
inline std::unexpected<Error> internal_error(std::string message, int sys_errno = 0) {
  return std::unexpected(Error(ErrorKind::kInternal, std::move(message), sys_errno));
}
inline std::unexpected<Error> state_error(std::string message) {
  return std::unexpected(Error(ErrorKind::kState, std::move(message)));
}

// Builds an error from errno after a failed system call: "<what>: <strerror(errno)>".
// Permission and missing-resource errnos (EACCES, EPERM, ENOENT, ENODEV, ENOMEM...) map to
// ErrorKind::kHost; the rest to kInternal.
Error errno_error(const std::string& what, int sys_errno);

}  // namespace skiff
