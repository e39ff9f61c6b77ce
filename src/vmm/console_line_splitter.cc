// SPDX-License-Identifier: Apache-2.0
#include "vmm/console_line_splitter.h"

#include <utility>

namespace skiff {

void ConsoleLineSplitter::feed(std::span<const uint8_t> bytes,
                               const std::function<void(std::string_view)>& on_line) {
  for (uint8_t byte : bytes) {
    if (byte == '\n') {
      std::string_view line = partial_;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      on_line(line);
      partial_.clear();
      continue;
    }
    partial_.push_back(static_cast<char>(byte));
    if (partial_.size() >= kMaxLineBytes) {
      on_line(partial_);
      partial_.clear();
    }
  }
}

std::optional<std::string> ConsoleLineSplitter::take_partial() {
  if (partial_.empty()) return std::nullopt;
  std::string line = std::move(partial_);
  partial_.clear();
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

}  // namespace skiff
