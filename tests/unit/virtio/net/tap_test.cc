// SPDX-License-Identifier: Apache-2.0
// Tap tests. The ones that create interfaces run on a thread that first moves into a fresh
// network namespace (unshare(CLONE_NEWNET) affects only the calling thread), so they never
// touch the host's interfaces; they skip when that is not allowed.
#include "virtio/net/tap.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "virtio/net/net_constants.h"

namespace skiff::virtio::net {
namespace {

// Runs `body` on a thread inside a new network namespace. Returns why it could not, or "".
std::string run_in_new_netns(const std::function<void()>& body) {
  std::string skip;
  std::thread thread([&] {
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
      skip = std::string("/dev/net/tun unusable: ") + std::strerror(errno);
      return;
    }
    if (::unshare(CLONE_NEWNET) != 0) {
      skip = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno) + " (needs root)";
      return;
    }
    body();
  });
  thread.join();
  return skip;
}

int interface_flags(const std::string& name) {
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  int rc = ::ioctl(sock, SIOCGIFFLAGS, &request);
  ::close(sock);
  return rc == 0 ? request.ifr_flags : -1;
}

int interface_mtu(const std::string& name) {
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  int rc = ::ioctl(sock, SIOCGIFMTU, &request);
  ::close(sock);
  return rc == 0 ? request.ifr_mtu : -1;
}

// Opens /dev/net/tun and attaches it to `name` with `flags`, the way `ip tuntap` or an
// embedder would.
int raw_tap(const std::string& name, int flags) {
  int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  request.ifr_flags = static_cast<short>(flags);
  if (::ioctl(fd, TUNSETIFF, &request) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(TapName, Validation) {
  EXPECT_TRUE(validate_tap_name("tap0"));
  EXPECT_TRUE(validate_tap_name("fifteen-chars-x"));
  auto too_long = validate_tap_name("sixteen-chars-xx");
  ASSERT_FALSE(too_long);
  EXPECT_NE(too_long.error().message().find("at most 15 bytes"), std::string::npos) << too_long.error().message();
  EXPECT_EQ(too_long.error().kind(), ErrorKind::kConfig);
  for (const char* bad : {"", ".", "..", "a/b", "a:b", "tap%d", "a b"}) {
    EXPECT_FALSE(validate_tap_name(bad)) << bad;
  }
}

TEST(TapOpen, NameTooLongIsAConfigError) {
  auto tap = Tap::open("a-very-long-tap-name", 1, std::nullopt);
  ASSERT_FALSE(tap);
  EXPECT_EQ(tap.error().kind(), ErrorKind::kConfig);
  EXPECT_NE(tap.error().message().find("at most 15 bytes"), std::string::npos);
}

TEST(TapOpen, MtuOutOfRangeIsAConfigError) {
  auto tap = Tap::open("sktap0", 1, 40);
  ASSERT_FALSE(tap);
  EXPECT_NE(tap.error().message().find("MTU 40 out of range 68..65535"), std::string::npos)
      << tap.error().message();
}

TEST(TapAdopt, RefusesFdsThatAreNotTaps) {
  int fd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto tap = Tap::adopt(fd, 1, std::nullopt);
  ::close(fd);
  ASSERT_FALSE(tap);
  EXPECT_NE(tap.error().message().find("not an attached tun/tap fd"), std::string::npos) << tap.error().message();
  tap = Tap::adopt(0, 2, std::nullopt);
  ASSERT_FALSE(tap);
  EXPECT_NE(tap.error().message().find("multiqueue"), std::string::npos) << tap.error().message();
}

TEST(TapReal, CreatesTapWithMtuOffloadsAndLinkUp) {
  std::string skip = run_in_new_netns([] {
    auto tap = Tap::open("sktap0", 1, 9000);
    ASSERT_TRUE(tap) << tap.error().message();
    EXPECT_EQ((*tap)->name(), "sktap0");
    EXPECT_TRUE((*tap)->created());
    EXPECT_NE(::if_nametoindex("sktap0"), 0u);
    EXPECT_EQ(interface_mtu("sktap0"), 9000);
    EXPECT_EQ((*tap)->mtu(), 9000u);
    EXPECT_NE(interface_flags("sktap0") & IFF_UP, 0);
    EXPECT_EQ((*tap)->supported_offloads(), tun_offloads_wanted());
    EXPECT_EQ((*tap)->queue_count(), 1u);
    // The vnet header size and nonblocking mode.
    int header_size = 0;
    ASSERT_EQ(::ioctl((*tap)->queue_fd(0), TUNGETVNETHDRSZ, &header_size), 0);
    EXPECT_EQ(header_size, static_cast<int>(kNetHeaderSize));
    EXPECT_NE(::fcntl((*tap)->queue_fd(0), F_GETFL) & O_NONBLOCK, 0);
    ifreq request{};
    ASSERT_EQ(::ioctl((*tap)->queue_fd(0), TUNGETIFF, &request), 0);
    EXPECT_EQ(request.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    EXPECT_TRUE((*tap)->set_offloads(TUN_F_CSUM | TUN_F_TSO4));
    EXPECT_EQ((*tap)->offloads(), unsigned{TUN_F_CSUM | TUN_F_TSO4});
    EXPECT_FALSE((*tap)->set_offloads(0x1000)) << "flags outside the probed set are refused";
    tap->reset();
    // A tap skiff created goes away with its fds.
    EXPECT_EQ(::if_nametoindex("sktap0"), 0u);
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
}

TEST(TapReal, MultiqueueOpensOneFdPerQueue) {
  std::string skip = run_in_new_netns([] {
    auto tap = Tap::open("skmq0", 3, std::nullopt);
    ASSERT_TRUE(tap) << tap.error().message();
    ASSERT_EQ((*tap)->queue_count(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      ifreq request{};
      ASSERT_EQ(::ioctl((*tap)->queue_fd(i), TUNGETIFF, &request), 0);
      EXPECT_STREQ(request.ifr_name, "skmq0");
      EXPECT_NE(request.ifr_flags & IFF_MULTI_QUEUE, 0);
    }
    EXPECT_EQ((*tap)->mtu(), 1500u);
    EXPECT_TRUE((*tap)->set_queue_enabled(2, false));
    EXPECT_TRUE((*tap)->set_queue_enabled(2, false)) << "idempotent";
    EXPECT_TRUE((*tap)->set_queue_enabled(2, true));
    EXPECT_FALSE((*tap)->set_queue_enabled(3, true));
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
}

TEST(TapReal, ReusesPersistentTapAndExplainsFlagMismatch) {
  std::string skip = run_in_new_netns([] {
    int fd = raw_tap("skpersist0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ASSERT_EQ(::ioctl(fd, TUNSETPERSIST, 1), 0);
    ::close(fd);
    {
      auto tap = Tap::open("skpersist0", 1, std::nullopt);
      ASSERT_TRUE(tap) << tap.error().message();
      EXPECT_FALSE((*tap)->created());
    }
    EXPECT_NE(::if_nametoindex("skpersist0"), 0u) << "a persistent tap outlives skiff";
    auto mq = Tap::open("skpersist0", 2, std::nullopt);
    ASSERT_FALSE(mq);
    EXPECT_NE(mq.error().message().find("multi_queue"), std::string::npos) << mq.error().message();
    EXPECT_NE(mq.error().message().find("ip tuntap add dev skpersist0 mode tap"), std::string::npos);
    fd = raw_tap("skpersist0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(::ioctl(fd, TUNSETPERSIST, 0), 0);
    ::close(fd);
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
}

TEST(TapReal, AdoptsAnOpenTapFd) {
  std::string skip = run_in_new_netns([] {
    int fd = raw_tap("skfd0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    {
      auto tap = Tap::adopt(fd, 1, 2000);
      ASSERT_TRUE(tap) << tap.error().message();
      EXPECT_EQ((*tap)->name(), "skfd0");
      EXPECT_NE((*tap)->queue_fd(0), fd) << "adopt duplicates the fd";
      EXPECT_EQ(interface_mtu("skfd0"), 2000);
    }
    EXPECT_EQ(::fcntl(fd, F_GETFD), FD_CLOEXEC) << "the caller's fd stays open";
    ::close(fd);

    int plain = raw_tap("skfd1", IFF_TAP | IFF_NO_PI);
    ASSERT_GE(plain, 0);
    auto tap = Tap::adopt(plain, 1, std::nullopt);
    ASSERT_FALSE(tap);
    EXPECT_NE(tap.error().message().find("IFF_VNET_HDR"), std::string::npos) << tap.error().message();
    ::close(plain);

    int tun = raw_tap("sktun0", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR);
    ASSERT_GE(tun, 0);
    tap = Tap::adopt(tun, 1, std::nullopt);
    ASSERT_FALSE(tap);
    EXPECT_NE(tap.error().message().find("not a tap"), std::string::npos) << tap.error().message();
    ::close(tun);
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
}

TEST(TapReal, WithoutCapNetAdminTheErrorSaysWhatToDo) {
  std::string child_skip;
  std::string skip = run_in_new_netns([&child_skip] {
    // Capabilities are per thread: dropping CAP_NET_ADMIN here leaves the test process alone.
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capget, &header, data) != 0) {
      child_skip = std::string("capget: ") + std::strerror(errno);
      return;
    }
    data[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
    data[CAP_NET_ADMIN / 32].permitted &= ~(1u << (CAP_NET_ADMIN % 32));
    if (::syscall(SYS_capset, &header, data) != 0) {
      child_skip = std::string("capset: ") + std::strerror(errno);
      return;
    }
    auto tap = Tap::open("sknoperm0", 2, std::nullopt);
    ASSERT_FALSE(tap);
    const std::string& message = tap.error().message();
    EXPECT_EQ(tap.error().kind(), ErrorKind::kHost);
    EXPECT_NE(message.find("CAP_NET_ADMIN"), std::string::npos) << message;
    EXPECT_NE(message.find("run skiff as root"), std::string::npos) << message;
    EXPECT_NE(message.find("ip tuntap add dev sknoperm0 mode tap user $USER vnet_hdr multi_queue"),
              std::string::npos)
        << message;
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
  if (!child_skip.empty()) GTEST_SKIP() << child_skip;
}

}  // namespace
}  // namespace skiff::virtio::net
