// SPDX-License-Identifier: Apache-2.0
// Token-bucket rate limiting for device I/O (virtio-blk requests, virtio-net frames).
// A bucket refills continuously at `rate` tokens per second and holds at most `capacity`
// tokens (one second's worth by default), so a device may burst up to a second of traffic
// after idling and is held to the rate after that.
#pragma once

#include <chrono>
#include <cstdint>

namespace skiff {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  // rate 0 = unlimited: every take() succeeds.
  explicit TokenBucket(uint64_t rate_per_second = 0, uint64_t capacity = 0);

  bool unlimited() const { return rate_ == 0; }
  // Takes `tokens` when available. A request larger than the capacity is allowed once the
  // bucket is full (it then runs into debt), so it never waits forever.
  bool try_take(uint64_t tokens, Clock::time_point now = Clock::now());
  // Returns tokens taken for work that did not happen.
  void give_back(uint64_t tokens);
  // How long until `tokens` can be taken; zero when they can be now.
  std::chrono::nanoseconds wait_time(uint64_t tokens, Clock::time_point now = Clock::now());

 private:
  void refill(Clock::time_point now);

  uint64_t rate_;
  uint64_t capacity_;
  // Signed: a request larger than the capacity leaves the bucket in debt.
  double tokens_;
  Clock::time_point last_;
};

// A bytes bucket and an ops bucket (a spec's RateLimitSpec), taken together.
class RateLimiter {
 public:
  RateLimiter() = default;
  // 0 = that bucket is unlimited.
  RateLimiter(uint64_t bytes_per_second, uint64_t ops_per_second);

  bool unlimited() const { return bytes_.unlimited() && ops_.unlimited(); }
  // One operation of `bytes` bytes: both buckets must allow it; neither is charged if one
  // refuses.
  bool try_take(uint64_t bytes, TokenBucket::Clock::time_point now = TokenBucket::Clock::now());
  // Time until one operation of `bytes` could go.
  std::chrono::nanoseconds wait_time(uint64_t bytes,
                                     TokenBucket::Clock::time_point now = TokenBucket::Clock::now());

 private:
  TokenBucket bytes_;
  TokenBucket ops_;
};

}  // namespace skiff
