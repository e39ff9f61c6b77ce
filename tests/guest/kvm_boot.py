#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Boot the test guest's bzImage on /dev/kvm through the entries QEMU never uses.

QEMU enters a bzImage through its real-mode setup, so the smoke test cannot reach the
64-bit entry (image + 0x200) that skiff uses, nor the 32-bit code32_start entry. This
is a minimal single-vCPU loader for exactly those two: it follows the Linux x86 boot
protocol (boot_params "zero page" with the setup header copied in, e820 table, command
line, initrd; identity-mapped page tables for the 64-bit entry) and serves the two
ports the guest needs (COM1 and the 0xf4 debug-exit port). No ACPI or MP tables, so
the guest reports madt-cpus=none and starts no APs.

usage: kvm_boot.py BZIMAGE --entry 64|32 [--cmdline S] [--initrd FILE]
Prints the guest's serial output; exits with the guest's debug-exit byte, 77 if
/dev/kvm is unusable, 1 on any other failure.
"""
import argparse
import ctypes
import fcntl
import mmap
import os
import struct
import sys

KVMIO = 0xAE


def _ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


KVM_GET_API_VERSION = _ioc(0, 0x00, 0)
KVM_CREATE_VM = _ioc(0, 0x01, 0)
KVM_GET_VCPU_MMAP_SIZE = _ioc(0, 0x04, 0)
KVM_GET_SUPPORTED_CPUID = _ioc(3, 0x05, 8)
KVM_CREATE_VCPU = _ioc(0, 0x41, 0)
KVM_SET_USER_MEMORY_REGION = _ioc(1, 0x46, 32)
KVM_SET_TSS_ADDR = _ioc(0, 0x47, 0)
KVM_RUN = _ioc(0, 0x80, 0)
KVM_SET_REGS = _ioc(1, 0x82, 144)
KVM_GET_SREGS = _ioc(2, 0x83, 312)
KVM_SET_SREGS = _ioc(1, 0x84, 312)
KVM_SET_CPUID2 = _ioc(1, 0x90, 8)

KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_INTERNAL_ERROR = 17

MEM_SIZE = 64 << 20
BOOT_PARAMS = 0x7000
PML4 = 0x9000
CMDLINE = 0x20000
KERNEL = 0x100000
INITRD = 0x2000000
STACK = 0x8FF0

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def ioctl(fd, request, arg=None):
    if isinstance(arg, (ctypes.Array, ctypes.Structure)):
        ret = libc.ioctl(fd, request, ctypes.addressof(arg))
    else:
        ret = libc.ioctl(fd, request, ctypes.c_void_p(arg or 0))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ioctl {request:#x}: {os.strerror(err)}")
    return ret


def segment(base, limit, selector, type_, db, s, l, g):
    # struct kvm_segment: u64 base; u32 limit; u16 selector; u8 type, present, dpl,
    # db, s, l, g, avl, unusable, padding.
    return struct.pack("<QIHBBBBBBBBBB", base, limit, selector, type_, 1, 0, db, s, l, g, 0, 0, 0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bzimage")
    parser.add_argument("--entry", choices=["64", "32"], default="64")
    parser.add_argument("--cmdline", default="")
    parser.add_argument("--initrd")
    args = parser.parse_args()

    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        if ioctl(kvm, KVM_GET_API_VERSION) != 12:
            raise OSError("unexpected KVM API version")
    except OSError as e:
        print(f"SKIP: /dev/kvm unusable: {e}")
        return 77

    image = open(args.bzimage, "rb").read()
    setup_sects = image[0x1F1] or 4
    setup_size = (setup_sects + 1) * 512
    if image[0x202:0x206] != b"HdrS" or struct.unpack_from("<H", image, 0x206)[0] < 0x20C:
        raise SystemExit("not a bzImage with protocol >= 2.12")
    if args.entry == "64" and not struct.unpack_from("<H", image, 0x236)[0] & 1:
        raise SystemExit("XLF_KERNEL_64 not set")

    mem = mmap.mmap(-1, MEM_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    kernel = image[setup_size:]
    mem[KERNEL:KERNEL + len(kernel)] = kernel

    # boot_params: zero, then the setup header as found in the file (0x1f1 up to the
    # end given by the jump at 0x201), then what the loader fills in.
    header_end = 0x202 + image[0x201]
    bp = bytearray(4096)
    bp[0x1F1:header_end] = image[0x1F1:header_end]
    bp[0x210] = 0xFF  # type_of_loader: undefined
    bp[0x211] |= 0x80  # CAN_USE_HEAP
    cmdline = args.cmdline.encode() + b"\0"
    mem[CMDLINE:CMDLINE + len(cmdline)] = cmdline
    struct.pack_into("<I", bp, 0x228, CMDLINE)
    if args.initrd:
        initrd = open(args.initrd, "rb").read()
        mem[INITRD:INITRD + len(initrd)] = initrd
        struct.pack_into("<II", bp, 0x218, INITRD, len(initrd))
    e820 = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xE0000, 0x20000, 2), (KERNEL, MEM_SIZE - KERNEL, 1)]
    for i, (addr, size, kind) in enumerate(e820):
        struct.pack_into("<QQI", bp, 0x2D0 + 20 * i, addr, size, kind)
    bp[0x1E8] = len(e820)
    mem[BOOT_PARAMS:BOOT_PARAMS + 4096] = bytes(bp)

    # Identity map of the low 4 GiB with 2 MiB pages (PML4, PDPT, 4 PDs).
    struct.pack_into("<Q", mem, PML4, (PML4 + 0x1000) | 3)
    for i in range(4):
        struct.pack_into("<Q", mem, PML4 + 0x1000 + 8 * i, (PML4 + 0x2000 + 0x1000 * i) | 3)
    for i in range(2048):
        struct.pack_into("<Q", mem, PML4 + 0x2000 + 8 * i, (i << 21) | 0x83)

    vm = ioctl(kvm, KVM_CREATE_VM, 0)
    ioctl(vm, KVM_SET_TSS_ADDR, 0xFFFBD000)
    host = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    region = (ctypes.c_ubyte * 32).from_buffer_copy(struct.pack("<IIQQQ", 0, 0, 0, MEM_SIZE, host))
    ioctl(vm, KVM_SET_USER_MEMORY_REGION, region)
    vcpu = ioctl(vm, KVM_CREATE_VCPU, 0)

    nent = 256
    cpuid = (ctypes.c_ubyte * (8 + 40 * nent))()
    struct.pack_into("<I", cpuid, 0, nent)
    ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid)
    ioctl(vcpu, KVM_SET_CPUID2, cpuid)

    sregs = (ctypes.c_ubyte * 312)()
    ioctl(vcpu, KVM_GET_SREGS, sregs)
    raw = bytearray(sregs)
    if args.entry == "64":
        code = segment(0, 0xFFFFFFFF, 0x10, 0xB, 0, 1, 1, 1)
        data = segment(0, 0xFFFFFFFF, 0x18, 0x3, 1, 1, 0, 1)
        cr0, cr3, cr4, efer = 0x80000011, PML4, 0x20, 0x500  # PG|ET|PE; PAE; LME|LMA
        rip = KERNEL + 0x200
    else:
        code = segment(0, 0xFFFFFFFF, 0x10, 0xB, 1, 1, 0, 1)
        data = segment(0, 0xFFFFFFFF, 0x18, 0x3, 1, 1, 0, 1)
        cr0, cr3, cr4, efer = 0x11, 0, 0, 0
        rip = KERNEL
    raw[0:24] = code  # cs
    for i in (1, 2, 3, 4, 5):  # ds es fs gs ss
        raw[24 * i:24 * i + 24] = data
    struct.pack_into("<QQQQQQ", raw, 224, cr0, 0, cr3, cr4, 0, efer)
    ctypes.memmove(sregs, bytes(raw), 312)
    ioctl(vcpu, KVM_SET_SREGS, sregs)
    regs = [0] * 18  # rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags
    regs[4] = BOOT_PARAMS
    regs[6] = STACK
    regs[16] = rip
    regs[17] = 2
    ioctl(vcpu, KVM_SET_REGS, (ctypes.c_ubyte * 144).from_buffer_copy(struct.pack("<18Q", *regs)))

    run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)
    run = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    out = sys.stdout
    while True:
        ioctl(vcpu, KVM_RUN, 0)
        reason = struct.unpack_from("<I", run, 8)[0]
        if reason == KVM_EXIT_IO:
            direction, size, port, count, offset = struct.unpack_from("<BBHIQ", run, 32)
            if direction == 1:  # out
                value = int.from_bytes(run[offset:offset + size], "little")
                if port == 0x3F8:
                    out.write(chr(value))
                elif port == 0xF4:
                    out.flush()
                    return value
            else:
                value = 0x60 if port == 0x3FD else 0  # LSR: THRE | TEMT
                run[offset:offset + size] = value.to_bytes(size, "little")
        elif reason == KVM_EXIT_HLT:
            out.flush()
            print("kvm_boot.py: guest halted", file=sys.stderr)
            return 1
        else:
            out.flush()
            detail = struct.unpack_from("<II", run, 32) if reason == KVM_EXIT_INTERNAL_ERROR else ()
            print(f"kvm_boot.py: unexpected exit reason {reason} {detail}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
