// SPDX-License-Identifier: Apache-2.0
// An IrqLine that records every level it is set to.
#pragma once

#include <mutex>
#include <vector>

#include "bus/bus_device.h"

namespace skiff::testing {

class FakeIrqLine : public IrqLine {
 public:
  void set_level(bool high) override {
    std::lock_guard lock(mutex_);
    levels_.push_back(high);
  }
  // The current level: the last one set, low if never set.
  bool level() const {
    std::lock_guard lock(mutex_);
    return !levels_.empty() && levels_.back();
  }
  std::vector<bool> levels() const {
    std::lock_guard lock(mutex_);
    return levels_;
  }
  // Rising edges seen so far.
  int rising_edges() const {
    std::lock_guard lock(mutex_);
    int edges = 0;
    bool previous = false;
    for (bool level : levels_) {
      if (level && !previous) ++edges;
      previous = level;
    }
    return edges;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<bool> levels_;
};

}  // namespace skiff::testing
