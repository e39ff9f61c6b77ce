// SPDX-License-Identifier: Apache-2.0
// skiff.action=wait-shutdown: the guest shows it is running and waits for the host to ask it
// to shut down, then powers off. For the lifecycle tests (pause, resume, shutdown): README.md,
// "wait-shutdown".
//
//   - every kTickPolls polls it prints `tick=<n>`, so the host sees progress (or, paused,
//     none);
//   - skiff.shutdown-via=acpi (the default): it polls PM1 status for PWRBTN_STS, clears it
//     (write 1, ACPI 6.4 §4.8.3.1) and prints `shutdown-request=acpi`;
//   - skiff.shutdown-via=keyboard: it leaves ACPI alone (as a guest without ACPI events
//     does) and reads the i8042 output buffer until a Delete make code arrives, then prints
//     `shutdown-request=keyboard bytes=<hex bytes>`.
#include "guest.h"

enum {
  kPm1StatusPort = 0x600,  // skiff's PM1a event block (layout.h kAcpiPm1EventPort)
  kPm1PowerButtonStatus = 1 << 8,
  kI8042DataPort = 0x60,
  kI8042StatusPort = 0x64,
  kI8042OutputFull = 1 << 0,
  kTickPolls = 4000,
  kMaxKeyBytes = 16,
};

static int value_is(const char* value, usize length, const char* word) {
  usize i = 0;
  for (; i < length && word[i] != 0; ++i) {
    if (value[i] != word[i]) return 0;
  }
  return i == length && word[i] == 0;
}

void wait_for_shutdown_request(const char* cmdline) {
  const char* value;
  usize length;
  int keyboard = 0;
  if (cmdline_value(cmdline, "skiff.shutdown-via", &value, &length)) {
    if (value_is(value, length, "keyboard")) {
      keyboard = 1;
    } else if (!value_is(value, length, "acpi")) {
      line_begin();
      put_str("error bad-shutdown-via");
      line_end();
    }
  }
  line_begin();
  put_str("waiting-for-shutdown via=");
  put_str(keyboard ? "keyboard" : "acpi");
  line_end();

  u8 bytes[kMaxKeyBytes];
  u32 byte_count = 0;
  u64 polls = 0;
  u64 ticks = 0;
  for (;;) {
    if (++polls % kTickPolls == 0) {
      line_begin();
      put_str("tick=");
      put_dec(++ticks);
      line_end();
    }
    if (!keyboard) {
      if (inw(kPm1StatusPort) & kPm1PowerButtonStatus) {
        outw(kPm1StatusPort, kPm1PowerButtonStatus);
        line_begin();
        put_str("shutdown-request=acpi");
        line_end();
        return;
      }
      continue;
    }
    if (!(inb(kI8042StatusPort) & kI8042OutputFull)) continue;
    u8 byte = inb(kI8042DataPort);
    if (byte_count < kMaxKeyBytes) bytes[byte_count++] = byte;
    // Delete's make code: 0x53 in set 1 (after 0xe0), 0x71 in set 2.
    int previous_e0 = byte_count >= 2 && bytes[byte_count - 2] == 0xe0;
    if (previous_e0 && (byte == 0x53 || byte == 0x71)) {
      // Drain the break codes that follow, so the line shows the whole sequence.
      for (u32 i = 0; i < 1000 && byte_count < kMaxKeyBytes; ++i) {
        if (inb(kI8042StatusPort) & kI8042OutputFull) bytes[byte_count++] = inb(kI8042DataPort);
      }
      line_begin();
      put_str("shutdown-request=keyboard bytes=");
      for (u32 i = 0; i < byte_count; ++i) {
        if (i != 0) put_char(',');
        put_hex_digits(bytes[i], 2);
      }
      line_end();
      return;
    }
  }
}
