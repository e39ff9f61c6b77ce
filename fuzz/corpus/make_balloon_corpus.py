#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/balloon_fuzzer.cc into fuzz/corpus/balloon/.

Each seed is the fuzzer's input format (see the comment at the top of balloon_fuzzer.cc): a
stats buffer, HugePageBitmap operations, then MemoryReclaimer operations on the three regions
(A: anonymous at 0, 64 pages; B: memfd at 1 MiB, 32 pages; C: anonymous, the last 16 pages a
le32 PFN can name).
"""
import sys
import struct

sys.dont_write_bytecode = True  # no __pycache__ next to the corpora
from seedlib import u8, u16, u32, u64, write_corpus

DISCARD, REUSE, DISCARD_FREE, DISCARD_PFNS, REUSE_PFNS, FORGET = range(6)
GIVE, TAKE, RELEASE = range(3)
A, B, C, RAW = range(4)


def stats(*entries):
    data = b"".join(struct.pack("<HQ", tag, value) for tag, value in entries)
    return u8(len(data)) + data


def bitmap(per_huge_minus_one, *ops):
    return u16(per_huge_minus_one) + u8(len(ops)) + b"".join(u8(op) + u8(h) + u16(f) + u16(c) for op, h, f, c in ops)


def addr(base, delta=0):
    return u8(base) + (u64(delta) if base == RAW else u32(delta))


def pages(count, extra_bytes=0):
    return u8(0) + u16(count) + u16(extra_bytes)


def raw_len(value):
    return u8(1) + u64(value)


def pfn(base, delta=0):
    return u8(base) + (u32(delta) if base == RAW else u16(delta))


def reclaim(*ops):
    return u8(len(ops)) + b"".join(ops)


def range_op(op, address, length):
    return u8(op) + address + length


def pfn_op(op, *pfns):
    return u8(op) + u8(len(pfns)) + b"".join(pfns)


NO_STATS, NO_BITMAP = u8(0), bitmap(0)


def seeds():
    yield "stats_known", stats((0, 1), (4, 1 << 30), (5, 2 << 30), (6, 1 << 29), (9, 7)) + NO_BITMAP + reclaim()
    yield "stats_unknown_and_repeated", stats((4, 1), (4, 2), (100, 3), (0xFFFF, 4)) + NO_BITMAP + reclaim()
    yield "stats_partial_entry", u8(15) + bytes(15) + NO_BITMAP + reclaim()
    yield "bitmap_2m", NO_STATS + bitmap(511, (GIVE, 0, 0, 256), (GIVE, 0, 256, 256), (RELEASE, 0, 0, 0),
                                         (TAKE, 0, 10, 1), (GIVE, 1, 0, 512), (GIVE, 1, 0, 512),
                                         (TAKE, 2, 0, 4)) + reclaim()
    yield "bitmap_odd_size", NO_STATS + bitmap(69, (GIVE, 3, 60, 100), (GIVE, 3, 0, 60), (RELEASE, 3, 0, 0),
                                               (TAKE, 3, 69, 1), (GIVE, 3, 70, 5), (TAKE, 3, 0, 0xFFFF)) + reclaim()
    yield "discard_ranges", NO_STATS + NO_BITMAP + reclaim(
        range_op(DISCARD, addr(A, 0x1000), pages(4)),
        range_op(DISCARD, addr(A, 0x3800), pages(2)),           # unaligned: covers one page
        range_op(DISCARD, addr(B, 0), pages(32)),               # the whole memfd region
        range_op(REUSE, addr(B, 0x2000), pages(3)),
        range_op(DISCARD_FREE, addr(A, 0x3F000), pages(8)),     # runs past region A's end
        range_op(DISCARD, addr(C, 0xF000), pages(4)),           # past the last PFN
        range_op(DISCARD, addr(RAW, 0xFFFFFFFFFFFFF000), raw_len(0x2000)),  # wraps
        range_op(DISCARD, addr(A, 0), raw_len((1 << 64) - 1)))
    yield "pfn_lists", NO_STATS + NO_BITMAP + reclaim(
        pfn_op(DISCARD_PFNS, pfn(A, 1), pfn(A, 2), pfn(A, 2), pfn(A, 3), pfn(B, 5), pfn(C, 15), pfn(RAW, 0xFFFFFFFF),
               pfn(A, 0xFFFF), pfn(RAW, 0x100000)),
        pfn_op(REUSE_PFNS, pfn(A, 2), pfn(B, 5)),
        u8(FORGET),
        pfn_op(DISCARD_PFNS, pfn(B, 31), pfn(B, 32)))


if __name__ == "__main__":
    write_corpus(__file__, "balloon", seeds())
