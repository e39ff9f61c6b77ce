// SPDX-License-Identifier: Apache-2.0
// Forwards the host's console input (normally stdin) to a Serial's receive line.
//
// When the input is a terminal, it is put in raw mode (no line editing, no echo, no
// signal keys: Ctrl-C goes to the guest) and restored when the ConsoleInput is destroyed,
// at exit() through an atexit handler, and by ConsoleInput::restore(), which a signal
// handler may call. Output post-processing (OPOST) stays on so that skiff's own log lines
// on the same terminal still start at column 0.
//
// When skiff runs as a background job of that terminal, terminal input is not forwarded
// (switching modes or reading would stop the process with SIGTTOU/SIGTTIN).
//
// When the input is a pipe or a file, its bytes are forwarded as they are, without any
// terminal change; end of input ends forwarding quietly.
//
// Like QEMU's -nographic console, Ctrl-A is an escape key: Ctrl-A x asks the VM to stop,
// Ctrl-A Ctrl-A sends one Ctrl-A to the guest, Ctrl-A h prints the keys on stderr, and
// Ctrl-A followed by anything else is dropped.
//
// Threads: one thread, "skiff-console", that polls the input fd and a stop eventfd. When
// the Serial's receive buffer is full it holds the remaining bytes back and waits on a
// second eventfd that the Serial's input-space callback writes; nothing is dropped.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "devices/legacy/serial.h"
#include "skiff/error.h"
#include "skiff/vm.h"  // SeccompMode
#include "skiff/exit.h"

namespace skiff {

class ConsoleInput {
 public:
  static constexpr uint8_t kEscapeKey = 0x01;  // Ctrl-A

  // Starts forwarding `fd` (not owned; it must stay open until the ConsoleInput is
  // destroyed) to `serial`. `stop` is called, from the console thread, on Ctrl-A x.
  // Fails when the terminal cannot be switched to raw mode, when another ConsoleInput
  // already holds a terminal in raw mode, or when the eventfds or the thread cannot be
  // created. The thread installs the console seccomp filter in `seccomp` mode first.
  static Result<std::unique_ptr<ConsoleInput>> start(int fd, std::shared_ptr<Serial> serial,
                                                     StopCallback stop,
                                                     SeccompMode seccomp = SeccompMode::off);

  // Stops the thread and restores the terminal.
  ~ConsoleInput();
  ConsoleInput(const ConsoleInput&) = delete;
  ConsoleInput& operator=(const ConsoleInput&) = delete;

  // Stops and joins the console thread (idempotent), then restores the terminal.
  void shutdown();

  // True when the input is a terminal that was put in raw mode.
  bool raw_mode() const { return raw_mode_; }

  // Restores the terminal settings saved when raw mode was entered, if a terminal is in
  // raw mode. Async-signal-safe (one atomic exchange and tcsetattr), idempotent, and
  // callable from any thread; the ConsoleInput keeps forwarding input afterwards.
  static void restore() noexcept;

 private:
  ConsoleInput(int fd, std::shared_ptr<Serial> serial, StopCallback stop, bool raw_mode,
               int stop_fd, int space_fd);

  void run();
  // Applies the escape-key handling to `bytes` and appends what goes to the guest to
  // `out`. Returns false when the user asked to stop (Ctrl-A x).
  bool process_input(std::span<const uint8_t> bytes, std::vector<uint8_t>& out);
  // Offers `pending` to the serial until all of it is accepted, waiting on the
  // input-space eventfd in between. Returns false when shutdown() interrupts it.
  bool deliver(const std::vector<uint8_t>& pending);

  int fd_;
  std::shared_ptr<Serial> serial_;
  StopCallback stop_;
  bool raw_mode_;
  int stop_fd_;   // eventfd: written by shutdown()
  int space_fd_;  // eventfd: written by the Serial's input-space callback
  bool escape_pending_ = false;
  std::thread thread_;
};

}  // namespace skiff
