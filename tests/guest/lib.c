// SPDX-License-Identifier: Apache-2.0
// The few libc pieces GCC may call even with -ffreestanding (memset/memcpy for
// aggregate initialisation and copies), plus byte helpers for the table parsers.
#include "guest.h"

void* memset(void* dst, int value, usize size) {
  u8* d = dst;
  for (usize i = 0; i < size; ++i) d[i] = (u8)value;
  return dst;
}

void* memcpy(void* dst, const void* src, usize size) {
  u8* d = dst;
  const u8* s = src;
  for (usize i = 0; i < size; ++i) d[i] = s[i];
  return dst;
}

int bytes_equal(const void* a, const void* b, usize size) {
  const u8* x = a;
  const u8* y = b;
  for (usize i = 0; i < size; ++i) {
    if (x[i] != y[i]) return 0;
  }
  return 1;
}

u8 byte_sum(u64 addr, u64 size) {
  u8 sum = 0;
  for (u64 i = 0; i < size; ++i) sum = (u8)(sum + read8(addr + i));
  return sum;
}
