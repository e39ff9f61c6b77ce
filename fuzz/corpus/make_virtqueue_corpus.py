#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/virtqueue_fuzzer.cc into fuzz/corpus/virtqueue/.

Each seed is the fuzzer's input format (see the comment at the top of virtqueue_fuzzer.cc):
a 10-byte header (queue size, flags, avail idx delta, custom ring offsets) followed by the
first bytes of guest RAM, which start at guest-physical RAM_BASE.
"""
import os
import struct

RAM_BASE = 0x10000
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
FLAG_INDIRECT, FLAG_EVENT_IDX, FLAG_CUSTOM_LAYOUT, FLAG_DROP_HALF, FLAG_NO_NOTIFY = 1, 2, 4, 8, 16


class Seed:
    def __init__(self, size_log2, flags=0, avail_delta=0, layout=(0, 0, 0)):
        self.size = 1 << size_log2
        self.header = struct.pack("<BBHHHH", size_log2, flags, avail_delta, *layout)
        self.ram = bytearray(1024)
        self.desc = 0
        self.avail = 16 * self.size
        self.used = (self.avail + 6 + 2 * self.size + 3) & ~3

    def put(self, offset, data):
        end = offset + len(data)
        if end > len(self.ram):
            self.ram.extend(bytes(end - len(self.ram)))
        self.ram[offset:end] = data

    def descriptor(self, index, addr_offset, length, flags=0, next_index=0, table=None):
        base = self.desc if table is None else table
        self.put(base + 16 * index, struct.pack("<QIHH", RAM_BASE + addr_offset, length, flags, next_index))

    def raw_descriptor(self, index, addr, length, flags=0, next_index=0):
        self.put(self.desc + 16 * index, struct.pack("<QIHH", addr, length, flags, next_index))

    def publish(self, heads, idx=None):
        for slot, head in enumerate(heads):
            self.put(self.avail + 4 + 2 * (slot % self.size), struct.pack("<H", head))
        self.put(self.avail + 2, struct.pack("<H", len(heads) if idx is None else idx))

    def used_event(self, value):
        self.put(self.avail + 4 + 2 * self.size, struct.pack("<H", value))

    def bytes(self):
        return self.header + bytes(self.ram)


def seeds():
    # A request/response chain: header + payload readable, status writable.
    s = Seed(4)
    s.put(0x300, b"request header..payload")
    s.descriptor(0, 0x300, 16, F_NEXT, 1)
    s.descriptor(1, 0x310, 7, F_NEXT, 2)
    s.descriptor(2, 0x340, 1, F_WRITE)
    s.publish([0])
    yield "simple_chain", s

    # An indirect table of three descriptors.
    s = Seed(4, FLAG_INDIRECT)
    s.descriptor(0, 0x200, 48, F_INDIRECT)
    s.descriptor(0, 0x300, 8, F_NEXT, 1, table=0x200)
    s.descriptor(1, 0x308, 8, F_NEXT, 2, table=0x200)
    s.descriptor(2, 0x340, 64, F_WRITE, 0, table=0x200)
    s.put(0x300, b"indirect")
    s.publish([0])
    yield "indirect", s

    # Direct descriptors followed by an indirect one, with EVENT_IDX and notifications off.
    s = Seed(3, FLAG_INDIRECT | FLAG_EVENT_IDX | FLAG_NO_NOTIFY)
    s.descriptor(0, 0x300, 4, F_NEXT, 1)
    s.descriptor(1, 0x200, 32, F_INDIRECT)
    s.descriptor(0, 0x304, 4, F_NEXT, 1, table=0x200)
    s.descriptor(1, 0x340, 16, F_WRITE, 0, table=0x200)
    s.descriptor(2, 0x320, 4)
    s.publish([0, 2])
    s.used_event(1)
    yield "direct_then_indirect_event_idx", s

    # Several chains, every other one dropped by the device.
    s = Seed(4, FLAG_DROP_HALF, avail_delta=2)
    for i in range(4):
        s.descriptor(2 * i, 0x300 + 16 * i, 16, F_NEXT, 2 * i + 1)
        s.descriptor(2 * i + 1, 0x380 + 16 * i, 16, F_WRITE)
    s.publish([0, 2, 4, 6, 0, 2], idx=4)
    yield "drop_half", s

    # A loop through next.
    s = Seed(4)
    s.descriptor(0, 0x300, 8, F_NEXT, 1)
    s.descriptor(1, 0x300, 8, F_NEXT, 0)
    s.publish([0])
    yield "loop", s

    # Bad buffers: outside RAM, wrapping at the top of the address space, writable first.
    s = Seed(4)
    s.raw_descriptor(0, 0x1000, 16)
    s.raw_descriptor(1, 0xFFFFFFFFFFFFFFF0, 0x20)
    s.descriptor(2, 0x300, 4, F_WRITE | F_NEXT, 3)
    s.descriptor(3, 0x310, 4)
    s.publish([0, 1, 2, 17])
    yield "bad_buffers", s

    # The available idx jumps past the queue size.
    s = Seed(4)
    s.descriptor(0, 0x300, 8)
    s.publish([0], idx=40)
    yield "avail_jump", s

    # A second round that moves the available idx backwards.
    s = Seed(2, avail_delta=0xFFFF)
    s.descriptor(0, 0x300, 8)
    s.publish([0, 0, 0])
    yield "avail_backwards", s

    # Custom ring addresses, one of them misaligned.
    s = Seed(4, FLAG_CUSTOM_LAYOUT, layout=(0x100, 0x80, 0x1FE))
    yield "misaligned_used_ring", s

    # Custom ring addresses that overlap (allowed by the checks; the device writes the used
    # ring over the descriptor table).
    s = Seed(1, FLAG_CUSTOM_LAYOUT, layout=(0x0, 0x20, 0x10))
    s.descriptor(0, 0x300, 8)
    s.publish([0])
    yield "overlapping_rings", s


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "virtqueue")
    os.makedirs(out_dir, exist_ok=True)
    for name, seed in seeds():
        data = seed.bytes()
        assert len(data) <= 4096, name
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
