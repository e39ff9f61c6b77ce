#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/blk_request_fuzzer.cc into fuzz/corpus/blk_request/.

Each seed is the fuzzer's input format (see the comment at the top of blk_request_fuzzer.cc):
device limits, chains (seedlib.chain), then raw values for sector_range_ok/slice_buffers.
"""
import sys
import struct

sys.dont_write_bytecode = True  # no __pycache__ next to the corpora
from seedlib import chain, empty, readable, u8, u16, u32, u64, wild, writable, write_corpus

T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES, T_GET_LIFETIME = 0, 1, 4, 8, 11, 13, 10
RO, DISCARD, WRITE_ZEROES, INDIRECT = 1, 2, 4, 8


def limits(capacity=1 << 30, align_log=0, flags=DISCARD | WRITE_ZEROES, seg_max=126, size_max=1 << 20,
           discard_sectors=1 << 16, discard_seg=8, wz_sectors=1 << 16, wz_seg=8):
    return (u64(capacity) + u8(align_log) + u8(flags) + u8(seg_max) + u32(size_max) + u32(discard_sectors) +
            u8(discard_seg) + u32(wz_sectors) + u8(wz_seg))


def header(req_type, sector=0):
    return struct.pack("<IIQ", req_type, 0, sector)


def segment(sector, count, flags=0):
    return struct.pack("<QII", sector, count, flags)


TAIL = u64(3) + u64(4096) + u64(1 << 20) + u32(8) + u32(16)


def request(lim, *chains):
    return lim + u8(len(chains) - 1) + b"".join(chains) + TAIL


def seeds():
    yield "read_4k", request(limits(), chain(readable(header(T_IN, 8)), writable(4096), writable(1)))
    yield "write_1k", request(limits(), chain(readable(header(T_OUT, 2)), readable(b"\x11" * 1024), writable(1)))
    yield "write_one_buffer", request(limits(), chain(readable(header(T_OUT) + b"\x22" * 512), writable(1)))
    yield "flush", request(limits(), chain(readable(header(T_FLUSH)), writable(1)))
    yield "get_id", request(limits(), chain(readable(header(T_GET_ID)), writable(21)))
    yield "discard", request(limits(), chain(readable(header(T_DISCARD) + segment(0, 8) + segment(64, 16)),
                                             writable(1)))
    yield "write_zeroes_unmap", request(limits(), chain(readable(header(T_WRITE_ZEROES)),
                                                        readable(segment(8, 8, 1)), writable(1)))
    yield "discard_unmap_flag", request(limits(), chain(readable(header(T_DISCARD) + segment(0, 8, 1)), writable(1)))
    yield "discard_beyond_capacity", request(limits(capacity=1 << 20),
                                             chain(readable(header(T_DISCARD) + segment(2040, 16)), writable(1)))
    yield "discard_not_offered", request(limits(flags=0), chain(readable(header(T_DISCARD) + segment(0, 8)),
                                                                writable(1)))
    yield "unsupported_type", request(limits(), chain(readable(header(T_GET_LIFETIME)), writable(1)))
    yield "no_status", request(limits(), chain(readable(header(T_IN)), readable(b"x" * 4)))
    yield "short_header", request(limits(), chain(readable(b"\x00" * 8), writable(1)))
    yield "read_beyond_capacity", request(limits(capacity=4096),
                                          chain(readable(header(T_IN, 7)), writable(1024), writable(1)))
    yield "read_huge_sector", request(limits(capacity=(1 << 64) - 512),
                                      chain(readable(header(T_IN, (1 << 64) - 1)), writable(513)))
    yield "read_unaligned_4k", request(limits(align_log=3), chain(readable(header(T_IN, 1)), writable(4097)))
    yield "too_many_segments", request(limits(seg_max=2),
                                       chain(readable(header(T_IN)), writable(512), writable(512), writable(513)))
    yield "write_read_only", request(limits(flags=RO), chain(readable(header(T_OUT)), readable(b"\0" * 512),
                                                             writable(1)))
    yield "indirect_read", request(limits(flags=INDIRECT),
                                   chain(readable(header(T_IN)), writable(1024), writable(1), indirect=True))
    yield "wild_buffer", request(limits(), chain(readable(header(T_IN)), wild(0xFFFFFFFFFFFFF000, 0x2000, True),
                                                 writable(1)))
    yield "writable_before_readable", request(limits(), chain(writable(512), readable(header(T_OUT)), writable(1)))
    yield "empty_descriptors", request(limits(), chain(empty(), readable(header(T_FLUSH)), empty(True), writable(1)))
    yield "several", request(limits(), chain(readable(header(T_FLUSH)), writable(1)),
                             chain(readable(header(T_IN)), writable(512), writable(1)),
                             chain(readable(header(T_GET_ID)), writable(1)))


if __name__ == "__main__":
    write_corpus(__file__, "blk_request", seeds())
