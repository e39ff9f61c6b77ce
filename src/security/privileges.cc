// SPDX-License-Identifier: Apache-2.0
#include "security/privileges.h"

#include <grp.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

namespace skiff::security {

Result<void> drop_privileges(uid_t uid, gid_t gid) {
  if (uid == 0 || gid == 0) {
    return config_error(fmt::format("--uid {} --gid {}: dropping privileges to uid or gid 0 keeps root", uid, gid));
  }
  // Groups first and uid last: once the uid is not 0, the gid and groups can no longer change.
  if (::setgroups(0, nullptr) != 0) {
    return std::unexpected(errno_error("dropping privileges: setgroups (clearing supplementary groups; "
                                       "this needs root or CAP_SETGID)",
                                       errno));
  }
  if (::setresgid(gid, gid, gid) != 0) {
    return std::unexpected(errno_error(fmt::format("dropping privileges: setresgid({})", gid), errno));
  }
  if (::setresuid(uid, uid, uid) != 0) {
    return std::unexpected(errno_error(fmt::format("dropping privileges: setresuid({})", uid), errno));
  }
  uid_t ruid = 0;
  uid_t euid = 0;
  uid_t suid = 0;
  gid_t rgid = 0;
  gid_t egid = 0;
  gid_t sgid = 0;
  if (::getresuid(&ruid, &euid, &suid) != 0 || ::getresgid(&rgid, &egid, &sgid) != 0) {
    return std::unexpected(errno_error("dropping privileges: reading back the ids", errno));
  }
  if (ruid != uid || euid != uid || suid != uid || rgid != gid || egid != gid || sgid != gid) {
    return internal_error(fmt::format("dropping privileges: ids are uid {}/{}/{} gid {}/{}/{}, expected {} and {}",
                                      ruid, euid, suid, rgid, egid, sgid, uid, gid));
  }
  // The proof: with every uid non-zero and no capabilities left, this must fail.
  if (::setuid(0) == 0 || ::seteuid(0) == 0) {
    return internal_error("dropping privileges: root could be regained after the drop; refusing to run");
  }
  return {};
}

}  // namespace skiff::security
