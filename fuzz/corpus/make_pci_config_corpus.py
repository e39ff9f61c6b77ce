#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/pci_config_fuzzer.cc into fuzz/corpus/pci_config/.

Each seed is the fuzzer's input format (see the comment at the top of pci_config_fuzzer.cc):
the generic function's BARs and MSI-X layout (slot 1), firmware BAR addresses, then
operations. The virtio-pci function sits in slot 2 with BAR 0 (64-bit, 16 KiB) at 0xe0000000.
"""
import sys
sys.dont_write_bytecode = True  # no __pycache__ next to the corpora
from seedlib import u8, u16, u32, u64, write_corpus

MEM32, MEM64, IO = range(3)
S1, S2, S4 = 0, 1, 2          # size selectors (1, 2, 4 bytes); 4 and 5 are invalid sizes
W1, W2, W4, W8 = range(4)     # BAR access widths
GENERIC, VIRTIO = 0, 1


def generic(bars=(), msix=None, extended=False, assign=()):
    flags = len(bars) | (4 if extended else 0) | (8 if msix else 0)
    out = u8(flags) + b"".join(u8(i) + u8(k) + u8(log) + u8(p) for i, k, log, p in bars)
    if msix:
        vectors, tbar, toff, pbar, poff = msix
        out += u16(vectors - 1) + u8(tbar) + u32(toff) + u8(pbar) + u32(poff)
    mask = 0
    for index, _ in assign:
        mask |= 1 << index
    return out + u8(mask) + b"".join(u64(a) for _, a in sorted(assign))


def io_write(port, size, value):
    return u8(0) + u8(port) + u8(size) + u64(value)


def io_read(port, size):
    return u8(1) + u8(port) + u8(size)


def mech1(slot, reg, size, value):
    return u8(2) + u8(slot) + u8(reg) + u8(size) + u32(value)


def ecam_write(offset, size, value, beyond=False):
    return u8(3) + u32(offset) + u8(1 if beyond else 0) + u8(size) + u64(value)


def ecam_read(offset, size):
    return u8(4) + u32(offset) + u8(size)


def cfg_write(slot, reg, size, value):
    return u8(5) + u8(slot) + u16(reg) + u8(size) + u32(value)


def cfg_read(slot, reg, size):
    return u8(6) + u8(slot) + u16(reg) + u8(size)


def bar_write(device, pick, offset, width, value):
    return u8(7) + u8(0) + u8(device) + u8(pick) + u16(offset) + u8(width) + u64(value)


def bar_read(device, pick, offset, width):
    return u8(7) + u8(1) + u8(device) + u8(pick) + u16(offset) + u8(width) + u64(0)


def irq(what, vector=0):
    return u8(9) + u8(what) + u16(vector)


def sizing(slot, reg):
    return cfg_write(slot, reg, S4, 0xFFFFFFFF) + cfg_read(slot, reg, S4)


def seeds():
    msix_device = generic(bars=[(0, MEM64, 14, 0), (2, IO, 5, 0)], msix=(4, 0, 0, 0, 0x2000),
                          assign=[(0, 0xC0000000), (2, 0xC000)])
    yield "msix_enable_signal", msix_device + b"".join([
        cfg_write(1, 0x04, S2, 0x0007),
        sizing(1, 0x10), sizing(1, 0x14), cfg_write(1, 0x10, S4, 0xC0000000), cfg_write(1, 0x14, S4, 0),
        cfg_write(1, 0x42, S2, 0x8000),
        bar_write(GENERIC, 0, 0x0, W8, 0xFEE00000), bar_write(GENERIC, 0, 0x8, W4, 0x41),
        irq(0, 0), bar_write(GENERIC, 0, 0xC, W4, 0), irq(0, 0), bar_read(GENERIC, 0, 0x2000, W8),
        cfg_write(1, 0x42, S2, 0xC000), irq(0, 1), cfg_write(1, 0x42, S2, 0x8000), bar_write(GENERIC, 0, 0x2000, W4, 1),
        cfg_write(1, 0x04, S2, 0)])
    yield "io_bar_and_extended", generic(bars=[(1, IO, 8, 0), (3, MEM32, 12, 1), (4, MEM64, 33, 1)], extended=True,
                                         assign=[(1, 0xC100), (3, 0xD0000000)]) + b"".join([
        cfg_write(1, 0x04, S2, 0x3), sizing(1, 0x14), cfg_write(1, 0x14, S4, 0xC200), sizing(1, 0x20),
        sizing(1, 0x24), cfg_write(1, 0x24, S4, 1), cfg_write(1, 0x20, S4, 0),
        ecam_read(1 << 15 | 0x100, S4), ecam_write(1 << 15 | 0xFFC, S4, 0x12345678), cfg_read(1, 0xFFE, S2)])
    common = lambda off, width, value: bar_write(VIRTIO, 0, off, width, value)
    yield "virtio_driver_init", generic() + b"".join([
        cfg_write(2, 0x04, S2, 0x0006), sizing(2, 0x10), cfg_write(2, 0x10, S4, 0xE0000004),
        common(0x14, W1, 1), common(0x14, W1, 3), common(0x00, W4, 1), bar_read(VIRTIO, 0, 0x04, W4),
        common(0x08, W4, 1), common(0x0C, W4, 1), common(0x08, W4, 0), common(0x0C, W4, 0x30000000),
        common(0x14, W1, 0x0B), common(0x16, W2, 0), common(0x18, W2, 16), common(0x20, W8, 0x100000),
        common(0x28, W8, 0x100100), common(0x30, W8, 0x100200), common(0x1A, W2, 1), common(0x1C, W2, 1),
        common(0x10, W2, 0), common(0x14, W1, 0x0F), irq(3), bar_read(VIRTIO, 0, 0x800, W1),
        bar_write(VIRTIO, 0, 0x2000, W2, 0), bar_read(VIRTIO, 0, 0x1000, W4), bar_write(VIRTIO, 0, 0x1004, W4, 7),
        cfg_write(2, 0x04, S2, 0x0000), cfg_write(2, 0x04, S2, 0x0002), cfg_write(2, 0x10, S4, 0xE0004004),
        common(0x14, W1, 0), irq(4)])
    yield "virtio_msix_and_pci_cfg", generic() + b"".join([
        cfg_write(2, 0x04, S2, 0x0006), cfg_read(2, 0x34, S1), cfg_read(2, 0x40, S4), cfg_read(2, 0x98, S4),
        cfg_write(2, 0x9A, S2, 0x8000), bar_write(VIRTIO, 0, 0x3000, W8, 0xFEE00000),
        bar_write(VIRTIO, 0, 0x300C, W4, 0), common(0x10, W2, 0), common(0x14, W1, 0x0F), irq(1),
        cfg_write(2, 0x88, S1, 0), cfg_write(2, 0x8C, S4, 0x14), cfg_write(2, 0x90, S4, 1), cfg_read(2, 0x94, S4),
        cfg_write(2, 0x94, S1, 0), cfg_write(2, 0x90, S4, 4), cfg_read(2, 0x94, S4)])
    yield "mechanism1", generic(bars=[(0, MEM32, 20, 0)]) + b"".join([
        io_write(0, S4, 0x80000800), io_read(4, S4), io_read(6, S2), io_read(7, S1), io_read(5, S2),
        io_write(0, S4, 0x80001010), io_write(4, S4, 0xFFFFFFFF), io_read(4, S4), io_read(0, S4),
        io_write(0, S2, 0x1234), io_read(1, S1), io_write(0, S4, 0x7F001010), io_read(4, S4),
        io_write(0, S4, 0x80010000), io_read(4, S4), io_write(4, 4, 0), io_write(4, 5, 0),
        mech1(1, 0x04, S2, 2), mech1(1, 0x10, S4, 0x80000000), mech1(1, 0x3C, S1, 11), mech1(3, 0, S4, 0)])
    yield "ecam", generic(bars=[(4, MEM64, 12, 0)]) + b"".join([
        ecam_read(0, S4), ecam_read(1 << 15, S2), ecam_write(1 << 15 | 0x04, S2, 0x2),
        ecam_write(1 << 15 | 0x20, S4, 0xFFFFFFFF), ecam_write(1 << 15 | 0x24, S4, 0xFFFFFFFF),
        ecam_read(1 << 15 | 0x24, S4), ecam_write(1 << 15 | 0x20, S4, 0xF0000000), ecam_write(1 << 15 | 0x24, S4, 8),
        ecam_write(1 << 20 | 0x04, S2, 2), ecam_write(0x0FFFFFFC, S4, 1), ecam_write(0, S4, 1, beyond=True),
        ecam_read(1 << 15 | 0x02, 4), ecam_write(1 << 15 | 0x06, S2, 0xFFFF), ecam_read(2 << 15 | 0x06, S2)])


if __name__ == "__main__":
    write_corpus(__file__, "pci_config", seeds())
