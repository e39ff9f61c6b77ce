// SPDX-License-Identifier: Apache-2.0
// Polled output on the COM1 16550 UART. No interrupts, no FIFO tuning: each byte waits
// for LSR.THRE (bit 5). One LSR read per byte is one VM exit, the cheapest console.
#include "guest.h"

enum {
  kCom1 = 0x3f8,
  kRegData = 0,
  kRegIer = 1,
  kRegFcr = 2,
  kRegLcr = 3,
  kRegMcr = 4,
  kRegLsr = 5,
  kLsrThre = 0x20,
  kLcrDlab = 0x80,
  kLcr8N1 = 0x03,
  kMcrDtrRts = 0x03,
  kThrePollLimit = 10000,  // a stuck UART must not hang the guest
};

void serial_init(void) {
  outb(kCom1 + kRegIer, 0x00);  // no interrupts
  outb(kCom1 + kRegLcr, kLcrDlab);
  outb(kCom1 + kRegData, 0x01);  // divisor 1: 115200 baud
  outb(kCom1 + kRegIer, 0x00);
  outb(kCom1 + kRegLcr, kLcr8N1);
  outb(kCom1 + kRegFcr, 0x00);  // FIFO off: one byte at a time is all we need
  outb(kCom1 + kRegMcr, kMcrDtrRts);
}

void put_char(char c) {
  for (int i = 0; i < kThrePollLimit; ++i) {
    if (inb(kCom1 + kRegLsr) & kLsrThre) break;
  }
  outb(kCom1 + kRegData, (u8)c);
}

void put_str(const char* s) {
  while (*s) put_char(*s++);
}

static const char kHexDigits[] = "0123456789abcdef";

void put_hex(u64 value) {
  char buf[16];
  int n = 0;
  do {
    buf[n++] = kHexDigits[value & 0xf];
    value >>= 4;
  } while (value != 0);
  put_str("0x");
  while (n > 0) put_char(buf[--n]);
}

void put_hex_padded(u64 value) {
  put_str("0x");
  for (int shift = 60; shift >= 0; shift -= 4) put_char(kHexDigits[(value >> shift) & 0xf]);
}

void put_hex_digits(u64 value, u32 digits) {
  if (digits > 16) digits = 16;
  while (digits > 0) {
    --digits;
    put_char(kHexDigits[(value >> (4 * digits)) & 0xf]);
  }
}

void put_dec(u64 value) {
  char buf[20];
  int n = 0;
  do {
    buf[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0) put_char(buf[--n]);
}

void line_begin(void) { put_str("SKIFF-GUEST "); }
void line_end(void) { put_char('\n'); }

void put_field(const char* key, u64 value) {
  put_char(' ');
  put_str(key);
  put_char('=');
  put_dec(value);
}
