// SPDX-License-Identifier: Apache-2.0
// How long an I/O thread should busy-poll before it blocks: a window that grows while
// the events it waits for keep arriving just after it gave up, and shrinks when they come
// too late for any affordable window to catch them. The idea is QEMU's adaptive polling
// (poll-max-ns, poll-grow, poll-shrink); this is our own take on it, with two additions:
// a thread that must share its CPUs with the vCPUs does not poll at all, and a thread
// that was preempted while polling stops polling for a while.
//
// Pure bookkeeping: no clock, no threads. The caller measures and hands in durations, so
// the rules can be tested with made-up numbers. Not thread-safe; one per polling thread.
#pragma once

#include <chrono>
#include <cstdint>

namespace skiff {

class AdaptivePoll {
 public:
  using Duration = std::chrono::nanoseconds;

  struct Params {
    // The cap on the window; 0 turns polling off for good.
    Duration max{std::chrono::microseconds(32)};
    // The first window when growing from nothing: small, so a wrong guess costs little.
    Duration initial{std::chrono::microseconds(4)};
    // Growing multiplies the window by `grow` (at least 2 is useful; 0 or 1 mean 2).
    uint32_t grow = 2;
    // Shrinking divides the window by `shrink`; 0 (or 1) drops it to zero at once.
    uint32_t shrink = 0;
    // Late wake-ups in a row (with no work found by polling and no timely event between
    // them) before the window shrinks. A device whose completions take longer than the cap
    // still gains from polling when the guest's next request comes right after each
    // completion: late wake-up, hit, late wake-up, hit... must keep the window (virtio-blk
    // at queue depth 1 on a disk with ~100 µs reads). 0 or 1: every late wake-up shrinks.
    uint32_t late_wakeups_to_shrink = 2;
    // Wake-ups after a preempted episode during which the window stays at zero.
    uint32_t contention_holdoff = 1024;
    // A poll episode in which the thread ran for less than this share of the wall time
    // (percent) was preempted: something else wanted the CPU.
    uint32_t min_cpu_percent = 75;
  };

  struct Counters {
    uint64_t episodes = 0;    // poll windows run (on_episode calls)
    uint64_t hits = 0;        // work found by polling (on_poll_hit calls)
    uint64_t grows = 0;
    uint64_t shrinks = 0;     // by the wait rule; contention is counted apart
    uint64_t contended = 0;   // episodes judged preempted (window dropped to zero)
  };

  AdaptivePoll() : AdaptivePoll(Params{}) {}
  explicit AdaptivePoll(const Params& params);

  // How long to poll now; zero means block at once.
  Duration window() const { return window_; }
  Duration max() const { return params_.max; }
  // False once polling is off for good (max 0, or disable()).
  bool enabled() const { return !disabled_; }
  const Counters& counters() const { return counters_; }

  // The thread's CPUs are shared with the vCPUs: polling could only take their time.
  // Until the controller is rebuilt, the window stays zero.
  void disable();

  // Polling found work. The window is right as it is: keep it (and forget late wake-ups).
  void on_poll_hit();

  // The thread blocked and an event woke it; `idle` is the time from the last work it
  // found (through its poll window, if any, and the block) to that event. An event that
  // came within the cap would have been caught by a longer window: grow. One that came
  // later than the cap could not have been caught: shrink. One that came within the
  // window raced the window's end: leave it.
  void on_wakeup(Duration idle);

  // After a poll episode: the thread's CPU time and the wall time it lasted. Returns true
  // when the episode counts as preempted; the window is then zero for a while.
  bool on_episode(Duration cpu, Duration wall);

 private:
  Params params_;
  Duration window_{0};
  uint32_t holdoff_ = 0;  // wake-ups left before the window may grow again
  uint32_t late_streak_ = 0;  // late wake-ups since the last hit or timely event
  bool disabled_ = false;
  Counters counters_;
};

}  // namespace skiff
