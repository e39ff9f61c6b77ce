// SPDX-License-Identifier: Apache-2.0
// A guest's serial console as lines: bytes in, whatever the chunking; "\n" ends a line, a
// "\r" before it is dropped, overlong lines are cut at kMaxLineBytes. The Vm's panic watch
// and the CLI's console patterns (cli/console_watch.h) both read the console through it.
// Not thread-safe: its owner locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace skiff {

class ConsoleLineSplitter {
 public:
  // Longer lines are cut there (and the rest starts a new line): the console is guest
  // input and must not grow the buffer without bound. Linux's own limit is 1024 bytes.
  static constexpr size_t kMaxLineBytes = 4096;

  // Appends `bytes` and calls `on_line` once per completed line, in order, without its
  // "\n" (or "\r\n"). Bytes after the last newline wait for the next call.
  void feed(std::span<const uint8_t> bytes, const std::function<void(std::string_view)>& on_line);
  // The bytes after the last newline (an unfinished line).
  std::string_view partial() const { return partial_; }
  // Hands out the unfinished line, if any, as a line of its own (end of the stream).
  std::optional<std::string> take_partial();

 private:
  std::string partial_;
};

}  // namespace skiff
