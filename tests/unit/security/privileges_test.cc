// SPDX-License-Identifier: Apache-2.0
#include "security/privileges.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace skiff::security {
namespace {

TEST(DropPrivileges, RefusesToDropToRoot) {
  auto dropped = drop_privileges(0, 1000);
  ASSERT_FALSE(dropped.has_value());
  EXPECT_EQ(dropped.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(dropped.error().message().find("keeps root"), std::string::npos);
  EXPECT_FALSE(drop_privileges(1000, 0).has_value());
}

TEST(DropPrivileges, RootCannotBeRegainedAfterwards) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to drop it";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        constexpr uid_t kNobody = 65534;
        auto dropped = drop_privileges(kNobody, kNobody);
        const bool ids = ::getuid() == kNobody && ::geteuid() == kNobody && ::getgid() == kNobody &&
                         ::getegid() == kNobody && ::getgroups(0, nullptr) == 0;
        const bool stuck = ::setuid(0) != 0 && ::setgid(0) != 0;
        _exit(dropped.has_value() && ids && stuck ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(DropPrivileges, WithoutRootItSaysWhatIsMissing) {
  if (::geteuid() == 0) GTEST_SKIP() << "runs as a normal user only";
  auto dropped = drop_privileges(65534, 65534);
  ASSERT_FALSE(dropped.has_value());
  EXPECT_NE(dropped.error().message().find("setgroups"), std::string::npos) << dropped.error().message();
}

}  // namespace
}  // namespace skiff::security
