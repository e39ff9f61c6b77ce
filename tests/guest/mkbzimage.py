#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Wrap the test guest's flat image into a bzImage (Linux x86 boot protocol 2.15).

Input: the real-mode setup area (setup.S: boot sector + setup header at 0x1f1 + setup
code, linked at 0) and the protected-mode image (head.S + C, linked at 0x100000,
`objcopy -O binary`). Output: setup area padded to whole sectors, then the image.
Fills the size-dependent header fields (setup_sects, syssize, init_size) and checks
the fixed ones, so a malformed image fails the build rather than the boot.
"""
import argparse
import struct
import sys

SECTOR = 512
SETUP_AREA = 0x3000  # setup.S keeps boot_params at 0x1000 and its stack below 0x3000

# Setup header offsets (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header").
OFF_SETUP_SECTS = 0x1F1
OFF_SYSSIZE = 0x1F4
OFF_BOOT_FLAG = 0x1FE
OFF_JUMP = 0x200
OFF_HEADER = 0x202
OFF_VERSION = 0x206
OFF_LOADFLAGS = 0x211
OFF_CODE32_START = 0x214
OFF_KERNEL_ALIGNMENT = 0x230
OFF_RELOCATABLE = 0x234
OFF_XLOADFLAGS = 0x236
OFF_CMDLINE_SIZE = 0x238
OFF_PREF_ADDRESS = 0x258
OFF_INIT_SIZE = 0x260
OFF_KERNEL_INFO_OFFSET = 0x268

LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01
IMAGE_LOAD_ADDR = 0x100000

# head.S fixed layout.
KERNEL_INFO_OFFSET = 0x1C0
SKIFF_INFO_OFFSET = 0x1D0
ENTRY64_OFFSET = 0x200


def fail(message):
    sys.exit(f"mkbzimage.py: {message}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--setup", required=True, help="flat real-mode setup area")
    parser.add_argument("--image", required=True, help="flat protected-mode image")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    with open(args.setup, "rb") as f:
        setup = bytearray(f.read())
    with open(args.image, "rb") as f:
        image = f.read()

    if len(setup) > SETUP_AREA:
        fail(f"setup is {len(setup)} bytes, more than the {SETUP_AREA:#x}-byte setup area")
    setup += bytes(SETUP_AREA - len(setup))
    setup_sects = SETUP_AREA // SECTOR - 1

    def u16(off):
        return struct.unpack_from("<H", setup, off)[0]

    def u32(off):
        return struct.unpack_from("<I", setup, off)[0]

    if setup[OFF_HEADER:OFF_HEADER + 4] != b"HdrS":
        fail('setup header lacks "HdrS" at 0x202')
    if u16(OFF_BOOT_FLAG) != 0xAA55:
        fail("boot_flag is not 0xAA55")
    if setup[OFF_JUMP] != 0xEB:
        fail("no short jump at 0x200")
    if u16(OFF_VERSION) < 0x020C:
        fail(f"protocol version {u16(OFF_VERSION):#x} < 2.12")
    if not setup[OFF_LOADFLAGS] & LOADED_HIGH:
        fail("LOADED_HIGH not set")
    if u32(OFF_CODE32_START) != IMAGE_LOAD_ADDR:
        fail("code32_start is not 0x100000")
    if setup[OFF_RELOCATABLE] != 0:
        fail("image must not be marked relocatable")
    if not u16(OFF_XLOADFLAGS) & XLF_KERNEL_64:
        fail("XLF_KERNEL_64 not set")
    if struct.unpack_from("<Q", setup, OFF_PREF_ADDRESS)[0] != IMAGE_LOAD_ADDR:
        fail("pref_address is not 0x100000")
    if u32(OFF_KERNEL_INFO_OFFSET) != KERNEL_INFO_OFFSET:
        fail("kernel_info_offset does not match head.S")

    if len(image) < ENTRY64_OFFSET + 16:
        fail("protected-mode image too small")
    if image[0] != 0xE9 or image[ENTRY64_OFFSET] != 0xE9:
        fail("image lacks the jumps at +0 and +0x200 (head.S)")
    if image[KERNEL_INFO_OFFSET:KERNEL_INFO_OFFSET + 4] != b"LToP":
        fail('image lacks "LToP" kernel_info at +0x1c0')
    magic, init_size, file_size = struct.unpack_from("<4sII", image, SKIFF_INFO_OFFSET)
    if magic != b"SKFG":
        fail('image lacks the "SKFG" record at +0x1d0')
    if file_size != len(image):
        fail(f"image is {len(image)} bytes but head.S says {file_size}")
    if init_size < len(image):
        fail("init_size smaller than the image")
    # init_size: memory the kernel needs from code32_start, 4 KiB-granular.
    init_size = (init_size + 0xFFF) & ~0xFFF
    alignment = u32(OFF_KERNEL_ALIGNMENT)
    if alignment == 0 or alignment & (alignment - 1):
        fail("kernel_alignment is not a power of two")
    if u32(OFF_CMDLINE_SIZE) == 0:
        fail("cmdline_size is 0")

    setup[OFF_SETUP_SECTS] = setup_sects
    struct.pack_into("<I", setup, OFF_SYSSIZE, (len(image) + 15) // 16)
    struct.pack_into("<I", setup, OFF_INIT_SIZE, init_size)

    with open(args.output, "wb") as f:
        f.write(setup)
        f.write(image)


if __name__ == "__main__":
    main()
