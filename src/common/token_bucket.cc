// SPDX-License-Identifier: Apache-2.0
#include "common/token_bucket.h"

#include <algorithm>
#include <cmath>

namespace skiff {

namespace {
constexpr double kSlack = 1e-6;
}  // namespace

TokenBucket::TokenBucket(uint64_t rate_per_second, uint64_t capacity)
    : rate_(rate_per_second),
      capacity_(capacity != 0 ? capacity : rate_per_second),
      tokens_(static_cast<double>(capacity_)),
      last_(Clock::now()) {}

void TokenBucket::refill(Clock::time_point now) {
  if (now <= last_) return;
  const double seconds = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(static_cast<double>(capacity_), tokens_ + seconds * static_cast<double>(rate_));
  last_ = now;
}

bool TokenBucket::try_take(uint64_t tokens, Clock::time_point now) {
  if (unlimited()) return true;
  refill(now);
  const double wanted = static_cast<double>(tokens);
  // Oversized requests go through on a full bucket, leaving debt that later requests wait out.
  const double needed = std::min(wanted, static_cast<double>(capacity_));
  // A hair of slack: wait_time() rounds up to whole nanoseconds, and the refill of exactly
  // that long must be enough despite floating-point rounding.
  if (tokens_ + kSlack < needed) return false;
  tokens_ -= wanted;
  return true;
}

void TokenBucket::give_back(uint64_t tokens) {
  if (unlimited()) return;
  tokens_ = std::min(static_cast<double>(capacity_), tokens_ + static_cast<double>(tokens));
}

std::chrono::nanoseconds TokenBucket::wait_time(uint64_t tokens, Clock::time_point now) {
  if (unlimited()) return std::chrono::nanoseconds(0);
  refill(now);
  const double needed = std::min(static_cast<double>(tokens), static_cast<double>(capacity_));
  if (tokens_ >= needed) return std::chrono::nanoseconds(0);
  const double seconds = (needed - tokens_) / static_cast<double>(rate_);
  return std::chrono::nanoseconds(static_cast<int64_t>(std::ceil(seconds * 1e9)));
}

RateLimiter::RateLimiter(uint64_t bytes_per_second, uint64_t ops_per_second)
    : bytes_(bytes_per_second), ops_(ops_per_second) {}

bool RateLimiter::try_take(uint64_t bytes, TokenBucket::Clock::time_point now) {
  if (!bytes_.try_take(bytes, now)) return false;
  if (!ops_.try_take(1, now)) {
    bytes_.give_back(bytes);
    return false;
  }
  return true;
}

std::chrono::nanoseconds RateLimiter::wait_time(uint64_t bytes, TokenBucket::Clock::time_point now) {
  return std::max(bytes_.wait_time(bytes, now), ops_.wait_time(1, now));
}

}  // namespace skiff
