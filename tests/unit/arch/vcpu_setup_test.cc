// SPDX-License-Identifier: Apache-2.0
#include "arch/x86_64/vcpu_setup.h"

#include <gtest/gtest.h>

namespace skiff::x86 {
namespace {

TEST(BootMsrs, OnlyMsrsKvmListsAreSet) {
  std::vector<uint32_t> supported = {kMsrLstar, kMsrIa32MiscEnable, 0x10a /* not wanted */};
  auto msrs = boot_msrs(supported);
  ASSERT_EQ(msrs.size(), 2u);
  EXPECT_EQ(msrs[0].first, kMsrLstar);
  EXPECT_EQ(msrs[1].first, kMsrIa32MiscEnable);
  EXPECT_EQ(msrs[1].second, 1u);  // fast strings
  EXPECT_TRUE(boot_msrs({}).empty());
}

}  // namespace
}  // namespace skiff::x86
