#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/state_fuzzer.cc into fuzz/corpus/state/.

Structured mode (first byte < 0x80 picks the kind, in the order of kinds() in the target):
each kind's real blob unchanged, with its first field set to the largest integer, and with
its second field set to a 200-byte string of 0x41. Raw mode (first byte >= 0x80): bytes
that are not CBOR.
"""
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the corpora
from seedlib import write_corpus

KINDS = ["virtqueue", "serial", "i8042", "cmos-rtc", "acpi-pm", "msix-table", "pci-config", "virtio-transport"]


def mutation(field, what, value, length):
    return bytes([field, what]) + value.to_bytes(8, "little") + bytes([length])


def seeds():
    for index, kind in enumerate(KINDS):
        yield kind, bytes([index])
        yield kind + "-int", bytes([index]) + mutation(0, 0, 0xFFFFFFFFFFFFFFFF, 0)
        yield kind + "-bytes", bytes([index]) + mutation(1, 2, 0x41, 200)
    yield "raw-not-cbor", bytes([0x80, 0xDE, 0xAD])


if __name__ == "__main__":
    write_corpus(__file__, "state", seeds())
