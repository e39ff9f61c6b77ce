# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the fuzz/corpus/make_*_corpus.py scripts: little-endian packing, the
chain encoding that fuzz/fuzz_support.h read_chain() decodes, and writing a corpus directory."""
import os
import struct

WRITABLE, WILD, EMPTY = 1, 2, 4


def u8(v):
    return struct.pack("<B", v & 0xFF)


def u16(v):
    return struct.pack("<H", v & 0xFFFF)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def readable(data):
    """A device-readable buffer holding `data`."""
    return u8(0) + u16(len(data)) + bytes(data)


def writable(length):
    """A device-writable buffer of `length` bytes."""
    return u8(WRITABLE) + u16(length)


def wild(addr, length, write=False):
    """A descriptor with an arbitrary address (outside RAM, wrapping...)."""
    return u8(WILD | (WRITABLE if write else 0)) + u64(addr) + u32(length)


def empty(write=False):
    """A zero-length descriptor."""
    return u8(EMPTY | (WRITABLE if write else 0))


def chain(*descriptors, indirect=False):
    assert 1 <= len(descriptors) <= 8
    return u8((len(descriptors) - 1) | (0x80 if indirect else 0)) + b"".join(descriptors)


def write_corpus(script_file, name, seeds):
    out_dir = os.path.join(os.path.dirname(os.path.abspath(script_file)), name)
    os.makedirs(out_dir, exist_ok=True)
    for seed_name, data in seeds:
        with open(os.path.join(out_dir, seed_name), "wb") as f:
            f.write(data)
