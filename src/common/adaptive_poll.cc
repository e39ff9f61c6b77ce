// SPDX-License-Identifier: Apache-2.0
#include "common/adaptive_poll.h"

#include <algorithm>

namespace skiff {

AdaptivePoll::AdaptivePoll(const Params& params) : params_(params) {
  if (params_.max <= Duration::zero()) {
    params_.max = Duration::zero();
    disabled_ = true;
  }
  if (params_.grow < 2) params_.grow = 2;
  // A first step above the cap would never be reached by growing; start at the cap then.
  params_.initial = std::clamp(params_.initial, Duration(1), std::max(params_.max, Duration(1)));
}

void AdaptivePoll::disable() {
  disabled_ = true;
  window_ = Duration::zero();
}

void AdaptivePoll::on_poll_hit() {
  ++counters_.hits;
  late_streak_ = 0;
}

void AdaptivePoll::on_wakeup(Duration idle) {
  if (disabled_) return;
  if (holdoff_ > 0) {
    --holdoff_;
    return;
  }
  if (idle <= window_) {  // the event raced the end of the window
    late_streak_ = 0;
    return;
  }
  if (idle > params_.max) {
    if (window_ == Duration::zero()) return;
    if (++late_streak_ < params_.late_wakeups_to_shrink) return;
    late_streak_ = 0;
    window_ = params_.shrink <= 1 ? Duration::zero() : window_ / params_.shrink;
    // Windows too short to catch anything are not worth the spinning.
    if (window_ < params_.initial) window_ = Duration::zero();
    ++counters_.shrinks;
    return;
  }
  late_streak_ = 0;
  if (window_ >= params_.max) return;
  window_ = window_ == Duration::zero() ? params_.initial : std::min(window_ * params_.grow, params_.max);
  ++counters_.grows;
}

bool AdaptivePoll::on_episode(Duration cpu, Duration wall) {
  ++counters_.episodes;
  if (disabled_ || wall <= Duration::zero()) return false;
  // cpu/wall < min_cpu_percent/100, without dividing.
  if (cpu.count() * 100 >= wall.count() * static_cast<int64_t>(params_.min_cpu_percent)) return false;
  window_ = Duration::zero();
  holdoff_ = params_.contention_holdoff;
  ++counters_.contended;
  return true;
}

}  // namespace skiff
