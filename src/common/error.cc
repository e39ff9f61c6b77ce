// SPDX-License-Identifier: Apache-2.0
#include "skiff/error.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace skiff {

Error errno_error(const std::string& what, int sys_errno) {
  ErrorKind kind = ErrorKind::kInternal;
  switch (sys_errno) {
    case EACCES:
    case EPERM:
    case ENOENT:
    case ENODEV:
    case ENXIO:
    case ENOMEM:
    case EBUSY:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
      kind = ErrorKind::kHost;
      break;
    default:
      break;
  }
  return Error(kind, fmt::format("{}: {}", what, std::strerror(sys_errno)), sys_errno);
}

}  // namespace skiff
