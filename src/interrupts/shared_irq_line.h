// SPDX-License-Identifier: Apache-2.0
// A level-triggered interrupt line shared by several devices (PCI INTx): the line is high
// while any input is high. KVM_IRQ_LINE keeps one level per GSI for all of user space, so
// the OR has to happen here, or one device lowering its input would hide another's.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "bus/bus_device.h"

namespace skiff {

class SharedIrqLine : public std::enable_shared_from_this<SharedIrqLine> {
 public:
  explicit SharedIrqLine(std::shared_ptr<IrqLine> line) : line_(std::move(line)) {}

  // A new input, initially low. The inputs keep the shared line alive.
  std::shared_ptr<IrqLine> add_input() {
    std::lock_guard lock(mutex_);
    levels_.push_back(false);
    return std::make_shared<Input>(shared_from_this(), levels_.size() - 1);
  }

  bool level() const {
    std::lock_guard lock(mutex_);
    return high_count_ != 0;
  }

 private:
  class Input : public IrqLine {
   public:
    Input(std::shared_ptr<SharedIrqLine> shared, size_t index) : shared_(std::move(shared)), index_(index) {}
    void set_level(bool high) override { shared_->set_input(index_, high); }

   private:
    std::shared_ptr<SharedIrqLine> shared_;
    size_t index_;
  };

  void set_input(size_t index, bool high) {
    std::lock_guard lock(mutex_);
    if (levels_[index] == high) return;
    levels_[index] = high;
    const bool was_high = high_count_ != 0;
    high_count_ = high ? high_count_ + 1 : high_count_ - 1;
    // Under the lock, so two inputs changing at once cannot reorder the line's edges.
    if ((high_count_ != 0) != was_high) line_->set_level(high_count_ != 0);
  }

  const std::shared_ptr<IrqLine> line_;
  mutable std::mutex mutex_;
  std::vector<bool> levels_;
  size_t high_count_ = 0;
};

}  // namespace skiff
