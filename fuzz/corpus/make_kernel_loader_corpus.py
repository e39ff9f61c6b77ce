#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/kernel_loader_fuzzer.cc into fuzz/corpus/kernel_loader/.

Each seed is the fuzzer's input format (see the comment at the top of kernel_loader_fuzzer.cc):
memory shape flags, RSDP address, initrd size, command line, then a small kernel image: a
bzImage with a real setup header (Documentation/arch/x86/boot.rst) and tiny protected-mode
code, or an ELF64 x86_64 executable with or without a Xen PVH entry note.
"""
import sys
import struct

sys.dont_write_bytecode = True  # no __pycache__ next to the corpora
from seedlib import u8, u16, u32, write_corpus

RAM_1M, RAM_2M, RAM_4M, RAM_16M = range(4)
HIGH_REGION, NOT_AT_ZERO = 4, 8


def input_bytes(image, flags=RAM_16M, initrd_units=0, cmdline=b"console=ttyS0", rsdp=0xE0000):
    return u8(flags) + u32(rsdp) + u16(initrd_units) + u8(len(cmdline)) + cmdline + image


def bzimage(setup_sects=1, syssize_paragraphs=64, version=0x020F, loadflags=0x01, xloadflags=0x01,
            relocatable=1, kernel_alignment=0x200000, pref_address=0x200000, init_size=0x200000,
            cmdline_size=2048, initrd_addr_max=0x7FFFFFFF, header_len=0x6A, extra_payload=0):
    setup = bytearray((max(setup_sects, 1) if setup_sects else 4) * 512 + 512)
    struct.pack_into("<B", setup, 0x1F1, setup_sects)
    struct.pack_into("<I", setup, 0x1F4, syssize_paragraphs)
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    struct.pack_into("<BB", setup, 0x200, 0xEB, header_len)
    struct.pack_into("<I", setup, 0x202, 0x53726448)
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<B", setup, 0x211, loadflags)
    struct.pack_into("<I", setup, 0x22C, initrd_addr_max)
    struct.pack_into("<I", setup, 0x230, kernel_alignment)
    struct.pack_into("<B", setup, 0x234, relocatable)
    struct.pack_into("<H", setup, 0x236, xloadflags)
    struct.pack_into("<I", setup, 0x238, cmdline_size)
    struct.pack_into("<Q", setup, 0x250, 0xDEADBEEF)  # setup_data: the loader must clear it
    struct.pack_into("<Q", setup, 0x258, pref_address)
    struct.pack_into("<I", setup, 0x260, init_size)
    code = bytes((i * 13) & 0xFF for i in range(syssize_paragraphs * 16 + extra_payload))
    return bytes(setup) + code


def elf(segments, entry, notes=b"", phentsize=56, e_type=2, machine=62):
    """segments: (paddr, file bytes, memsz)."""
    phnum = len(segments) + (1 if notes else 0)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, entry, 64, 0, 0, 64, phentsize, phnum, 64, 0, 0)
    offset = 64 + phentsize * phnum
    phdrs = b""
    data = b""
    for paddr, content, memsz in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 5, offset + len(data), paddr, paddr, len(content), memsz, 0x1000)
        phdrs += bytes(phentsize - 56)
        data += content
    if notes:
        phdrs += struct.pack("<IIQQQQQQ", 4, 4, offset + len(data), 0, 0, len(notes), len(notes), 4)
        phdrs += bytes(phentsize - 56)
        data += notes
    return header + phdrs + data


def note(name, note_type, desc):
    pad = lambda b: b + bytes((4 - len(b) % 4) % 4)
    return struct.pack("<III", len(name), len(desc), note_type) + pad(name) + pad(desc)


PVH = 18
CODE = bytes(range(256)) * 4


def seeds():
    yield "bzimage", input_bytes(bzimage())
    yield "bzimage_initrd", input_bytes(bzimage(), initrd_units=64)
    yield "bzimage_initrd_too_big", input_bytes(bzimage(), flags=RAM_4M, initrd_units=0x4000)
    yield "bzimage_setup_sects_0", input_bytes(bzimage(setup_sects=0))
    yield "bzimage_fixed_pref_address", input_bytes(bzimage(relocatable=0, pref_address=0x100000, init_size=0x100000),
                                                    flags=RAM_4M, initrd_units=16)
    yield "bzimage_huge_init_size", input_bytes(bzimage(pref_address=0xFFFFFFFFFFFFF000, init_size=0xFFFFFFFF))
    yield "bzimage_bad_alignment", input_bytes(bzimage(kernel_alignment=0x300000))
    yield "bzimage_old_protocol", input_bytes(bzimage(version=0x0204))
    yield "bzimage_32bit", input_bytes(bzimage(xloadflags=0))
    yield "bzimage_zimage", input_bytes(bzimage(loadflags=0))
    yield "bzimage_truncated", input_bytes(bzimage()[:0x300])
    yield "bzimage_short_header", input_bytes(bzimage(header_len=0x10), cmdline=b"quiet")
    yield "bzimage_cmdline_nul", input_bytes(bzimage(), cmdline=b"a\0b")
    yield "bzimage_cmdline_too_long", input_bytes(bzimage(cmdline_size=4), cmdline=b"console=ttyS0")
    yield "bzimage_not_at_zero", input_bytes(bzimage(), flags=RAM_4M | NOT_AT_ZERO)
    yield "elf_64bit", input_bytes(elf([(0x100000, CODE, 0x2000)], 0x100000), initrd_units=4)
    yield "elf_pvh", input_bytes(elf([(0x100000, CODE, 0x1000)], 0xFFFFFFFF81000000,
                                     notes=note(b"Xen\0", PVH, struct.pack("<Q", 0x100010))))
    yield "elf_pvh_4byte_no_nul", input_bytes(elf([(0x100000, CODE, 0x1000)], 0,
                                                  notes=note(b"GNU\0", 3, b"abcd") + note(b"Xen", PVH, u32(0x100004))))
    yield "elf_pvh_bad_desc", input_bytes(elf([(0x100000, CODE, 0x1000)], 0, notes=note(b"Xen\0", PVH, b"\1\2")))
    yield "elf_high_region", input_bytes(elf([(0x100000, CODE, 0x1000), (4 << 30, CODE, 0x8000)], 0x100000),
                                         flags=RAM_2M | HIGH_REGION)
    yield "elf_below_1m", input_bytes(elf([(0x8000, CODE, 0x1000)], 0x8000))
    yield "elf_outside_ram", input_bytes(elf([(0x100000, CODE, 0x10000000)], 0x100000), flags=RAM_1M)
    yield "elf_wrapping", input_bytes(elf([(0xFFFFFFFFFFFFF000, CODE, 0x2000)], 0))
    yield "elf_entry_outside", input_bytes(elf([(0x100000, CODE, 0x1000)], 0x200000))
    yield "elf_big_phentsize", input_bytes(elf([(0x100000, CODE, 0x1000)], 0x100000, phentsize=64))
    yield "elf_not_exec", input_bytes(elf([(0x100000, CODE, 0x1000)], 0x100000, e_type=3))
    yield "not_a_kernel", input_bytes(b"MZ" + bytes(100))
    yield "empty", input_bytes(b"")


if __name__ == "__main__":
    write_corpus(__file__, "kernel_loader", seeds())
