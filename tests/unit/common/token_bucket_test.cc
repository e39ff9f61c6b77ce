// SPDX-License-Identifier: Apache-2.0
#include "common/token_bucket.h"

#include <gtest/gtest.h>

namespace skiff {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

TEST(TokenBucket, UnlimitedAlwaysAllows) {
  TokenBucket bucket;
  EXPECT_TRUE(bucket.unlimited());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(bucket.try_take(1u << 30));
  EXPECT_EQ(bucket.wait_time(1u << 30), nanoseconds(0));
}

TEST(TokenBucket, StartsFullThenRefillsAtRate) {
  TokenBucket bucket(1000);  // 1000/s, holds 1000
  auto t0 = TokenBucket::Clock::now();
  EXPECT_TRUE(bucket.try_take(1000, t0));
  EXPECT_FALSE(bucket.try_take(1, t0));
  EXPECT_EQ(bucket.wait_time(100, t0).count() > 0, true);
  EXPECT_FALSE(bucket.try_take(100, t0 + milliseconds(50)));  // 50 tokens back
  EXPECT_TRUE(bucket.try_take(100, t0 + milliseconds(100)));  // 100
  // Idle for a long time: capped at the capacity.
  EXPECT_TRUE(bucket.try_take(1000, t0 + std::chrono::seconds(60)));
  EXPECT_FALSE(bucket.try_take(1, t0 + std::chrono::seconds(60)));
}

TEST(TokenBucket, WaitTimeMatchesRate) {
  TokenBucket bucket(1000);
  auto t0 = TokenBucket::Clock::now();
  ASSERT_TRUE(bucket.try_take(1000, t0));
  auto wait = bucket.wait_time(500, t0);
  EXPECT_GE(wait, milliseconds(499));
  EXPECT_LE(wait, milliseconds(501));
  EXPECT_TRUE(bucket.try_take(500, t0 + wait));
}

TEST(TokenBucket, OversizedRequestPassesOnFullBucketAndLeavesDebt) {
  TokenBucket bucket(1000);
  auto t0 = TokenBucket::Clock::now();
  EXPECT_TRUE(bucket.try_take(3000, t0));  // never starves a request larger than a second
  // 2000 tokens of debt: nothing for two seconds, then a full bucket takes another second.
  EXPECT_FALSE(bucket.try_take(1, t0 + milliseconds(1999)));
  EXPECT_TRUE(bucket.try_take(1, t0 + milliseconds(2002)));
}

TEST(TokenBucket, GiveBackIsCappedAtCapacity) {
  TokenBucket bucket(10);
  auto t0 = TokenBucket::Clock::now();
  ASSERT_TRUE(bucket.try_take(10, t0));
  bucket.give_back(100);
  EXPECT_TRUE(bucket.try_take(10, t0));
  EXPECT_FALSE(bucket.try_take(1, t0));
}

TEST(RateLimiter, BothBucketsMustAllowAndNeitherIsChargedOnRefusal) {
  RateLimiter limiter(/*bytes_per_second=*/1000, /*ops_per_second=*/2);
  auto t0 = TokenBucket::Clock::now();
  EXPECT_FALSE(limiter.unlimited());
  EXPECT_TRUE(limiter.try_take(100, t0));
  EXPECT_TRUE(limiter.try_take(100, t0));
  EXPECT_FALSE(limiter.try_take(100, t0));  // ops exhausted; bytes not charged
  EXPECT_GT(limiter.wait_time(100, t0), nanoseconds(0));
  // After half a second: one op back, and the 800 bytes left are still there.
  EXPECT_TRUE(limiter.try_take(800, t0 + milliseconds(500)));
}

TEST(RateLimiter, DefaultIsUnlimited) {
  RateLimiter limiter;
  EXPECT_TRUE(limiter.unlimited());
  EXPECT_TRUE(limiter.try_take(UINT32_MAX));
}

}  // namespace
}  // namespace skiff
