#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/vsock_fuzzer.cc into fuzz/corpus/vsock/.

Each seed is the fuzzer's input format (see the comment at the top of vsock_fuzzer.cc): a list
of operations, each a code byte and its arguments: guest packets, host clients connecting to
the device's socket "v.sock", the program on "v.sock_1000" accepting, host fds written, shut
down, closed and read, pumps of packets for the guest and clock ticks. Host fds are numbered
in the order they were created (clients and accepted programs together); closing one
renumbers those after it. Host-initiated connections get host ports kFirstHostPort, +1, ...
in the order the muxer reads their CONNECT lines (HP0, HP1, ... below).
"""
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the corpora
from seedlib import u8, u16, u32, u64, write_corpus

GUEST, CONNECT, ACCEPT, WRITE, SHUT, PUMP, CLOCK, READ = range(8)
BURST = 0xFF
REQUEST, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST = range(1, 8)
RCV, SEND = 1, 2
BUF_ALLOC = 256 * 1024
MAX_PAYLOAD = 64 * 1024
# Host port indexes of the guest packet's sel byte (kHostPorts in the fuzzer).
P1000, P1001, HP0, HP1, HP2, HP3 = range(6)
FIRST_HOST_PORT = 1 << 30


def guest(op, host=P1000, gport=1, data=None, fill=None, flags=0, buf_alloc=None, fwd=None, ports=None,
          cids=None, raw_op=None, raw_flags=None, short=None, extra=None, control_len=False, len32=None,
          clamp=False):
    """One guest packet. buf_alloc: None (kBufAlloc), 0, an int (u16 or u32 field); fwd: None
    (everything received consumed), ("lag", n), ("raw", v) or "same"; the payload: `data`
    bytes, or `fill` filler bytes (with `short` / `extra`: carried shorter / longer than len)."""
    sel = host | ((gport - 1) << 3)
    if ports is not None:
        sel |= 0x20
    if cids is not None:
        sel |= 0x40
    if raw_flags is not None:
        sel |= 0x80
    opb = (op & 7) | ((flags & 3) << 3) | (0x80 if raw_op is not None else 0)
    if buf_alloc is None:
        credit, buf_field = 0, b""
    elif buf_alloc == 0:
        credit, buf_field = 3, b""
    elif buf_alloc < 0x10000:
        credit, buf_field = 1, u16(buf_alloc)
    else:
        credit, buf_field = 2, u32(buf_alloc)
    if fwd is None:
        fwd_field = b""
    elif fwd == "same":
        credit |= 3 << 2
        fwd_field = b""
    elif fwd[0] == "lag":
        credit |= 1 << 2
        fwd_field = u16(fwd[1])
    else:
        credit |= 2 << 2
        fwd_field = u32(fwd[1])
    if data is not None:
        mode, length, tail = 0, len(data), bytes(data)
    elif fill is not None and short is not None:
        mode, length, tail = 2, fill, u8(short)
    elif fill is not None and extra is not None:
        mode, length, tail = 3, fill, u8(extra)
    elif fill is not None:
        mode, length, tail = 1, fill, b""
    else:
        mode, length, tail = 0, 0, b""
    if control_len:
        mode |= 4
    if len32 is not None:
        mode |= 8
    if clamp:
        mode |= 0x10
    out = u8(GUEST) + u8(sel) + u8(opb) + u8(credit) + u8(mode) + u16(length)
    if ports is not None:
        out += u32(ports[0]) + u32(ports[1])
    if cids is not None:
        out += u64(cids[0]) + u64(cids[1]) + u16(cids[2])
    if raw_op is not None:
        out += u16(raw_op)
    if raw_flags is not None:
        out += u32(raw_flags)
    out += buf_field + fwd_field
    if len32 is not None:
        out += u32(len32)
    return out + tail


def connect(port=1, variant=0, raw=None):
    """A host client connects to v.sock and sends "CONNECT <port>\\n" (variant 1: "\\r\\n",
    2: extra spaces) or `raw` bytes."""
    if raw is not None:
        return u8(CONNECT) + u8(3) + u8(len(raw)) + raw
    if 1 <= port <= 4:
        return u8(CONNECT) + u8(variant | ((port - 1) << 2))
    return u8(CONNECT) + u8(variant | 0x10) + u32(port)


def accept(count=1):
    return u8(ACCEPT) + u8(count - 1)


def write(fd, data=None, fill=None, shift=0):
    if data is not None:
        return u8(WRITE) + u8(fd) + u8(0) + u16(len(data)) + data
    return u8(WRITE) + u8(fd) + u8(1 | (shift << 1)) + u16(fill)


def shut_wr(fd):
    return u8(SHUT) + u8(fd) + u8(0)


def close(fd):
    return u8(SHUT) + u8(fd) + u8(1)


def shut_rd(fd):
    return u8(SHUT) + u8(fd) + u8(2)


def shut_rdwr(fd):
    return u8(SHUT) + u8(fd) + u8(3)


def pump(capacity=None, count=255, drain=False, no_host=False, tiny=None, below=None):
    """Packets for the guest: receive buffers of 44 + 64 KiB (default), 44 + `capacity`,
    44 + `tiny` (u8), or `below` (% 45: under a header)."""
    mode = (4 if drain else 0) | (8 if no_host else 0)
    if capacity is not None:
        return u8(PUMP) + u8(mode | 1) + u8(count - 1) + u16(capacity)
    if tiny is not None:
        return u8(PUMP) + u8(mode | 2) + u8(count - 1) + u8(tiny)
    if below is not None:
        return u8(PUMP) + u8(mode | 3) + u8(count - 1) + u8(below)
    return u8(PUMP) + u8(mode) + u8(count - 1)


def drain(**kwargs):
    return pump(drain=True, **kwargs)


def clock(ms):
    return u8(CLOCK) + u16(ms)


def read(fd, limit=0):
    return u8(READ) + u8(fd) + u16(limit)


def burst(refused=False, extra=0):
    """257 + `extra` well-formed guest REQUESTs from guest ports 2^20 + i to host port 1000
    (past the connection limit), or 1025 + `extra` to 1001 (`refused`: one RST each, past the
    RST queue's limit). One per seed: the fuzzer ignores a second one."""
    return u8(BURST) + u8((1 if refused else 0) | (extra << 1))


def seq(*ops):
    return b"".join(ops)


def accept_and_read():
    """Two pumps after host clients connect: the muxer accepts them on the first (new sockets
    join its epoll set) and reads their CONNECT lines on the second (the guest's REQUESTs)."""
    return seq(pump(), pump())


def host_established(port=1, hp=HP0, fd=0, buf_alloc=None):
    """A host client asks for guest port `port`, the guest accepts, the client reads its OK."""
    return seq(connect(port), accept_and_read(), guest(RESPONSE, host=hp, gport=port, buf_alloc=buf_alloc), read(fd))


def guest_established(gport=1, buf_alloc=None):
    """The guest connects to host port 1000 and the program there accepts (as the next fd)."""
    return seq(guest(REQUEST, host=P1000, gport=gport, buf_alloc=buf_alloc), pump(), accept())


def seeds():
    # Host-initiated: handshake, data both ways, the guest closes.
    yield "host_connect_data_both_ways", seq(
        host_established(1), write(0, b"hello guest"), pump(), guest(RW, host=HP0, gport=1, data=b"hello host"),
        read(0), write(0, fill=3000), pump(capacity=1000), guest(CREDIT_UPDATE, host=HP0, gport=1),
        guest(SHUTDOWN, host=HP0, gport=1, flags=RCV | SEND), pump(), read(0), clock(2500), drain())
    yield "host_connect_variants", seq(
        connect(2, variant=1), connect(3, variant=2), connect(0xFFFFFFFF), connect(raw=b"CONNECT 4\nearly data"),
        accept_and_read(), guest(RESPONSE, host=HP0, gport=2), guest(RESPONSE, host=HP1, gport=3),
        guest(RESPONSE, host=HP3, gport=4), pump(), read(0), read(1), read(3), write(3, b"more"), pump(),
        guest(RW, host=HP3, gport=4, data=b"to the raw client"), read(3), drain())
    yield "host_connect_refused_by_guest", seq(
        connect(1), connect(2), accept_and_read(), guest(RST, host=HP0, gport=1), read(0), pump(),
        guest(RESPONSE, host=HP1, gport=2, buf_alloc=0), write(1, b"no credit"), pump(),
        guest(CREDIT_UPDATE, host=HP1, gport=2, buf_alloc=4), pump(), drain())
    yield "host_connect_timeout", seq(
        connect(1), accept_and_read(), clock(1999), clock(1), drain(), read(0),
        connect(raw=b"CONNE"), pump(), clock(2001), pump(), read(1))
    yield "host_connect_bad_lines", seq(
        connect(raw=b"HELLO 5\n"), connect(raw=b"CONNECT\n"), connect(raw=b"CONNECT 99999999999\n"),
        connect(raw=b"CONNECT 7x\n"), connect(raw=b"CONNECT " + b" " * 40), connect(raw=b"CONNECT 5\r\r\n"),
        accept_and_read(), drain(), read(0), read(1), read(2), read(3), read(4), read(5))
    yield "host_hangs_up_while_connecting", seq(
        connect(1), accept_and_read(), close(0), pump(), guest(RESPONSE, host=HP0, gport=1), drain())
    yield "host_connect_line_then_eof", seq(
        connect(raw=b"CONNECT 1"), shut_wr(0), accept_and_read(), connect(raw=b""), close(1), accept_and_read(),
        drain())

    # Guest-initiated to port 1000: data both ways, shutdowns.
    yield "guest_connect_data_both_ways", seq(
        guest_established(1), guest(RW, host=P1000, gport=1, data=b"ping"), read(0), write(0, b"pong"), pump(),
        guest(RW, host=P1000, gport=1, fill=20000), read(0), write(0, fill=40000), pump(capacity=4096),
        guest(CREDIT_UPDATE, host=P1000, gport=1), pump(), guest(SHUTDOWN, host=P1000, gport=1, flags=SEND),
        read(0), shut_wr(0), pump(), guest(SHUTDOWN, host=P1000, gport=1, flags=RCV | SEND), pump(), drain())
    yield "guest_connect_refused", seq(
        guest(REQUEST, host=P1001, gport=1), guest(REQUEST, host=HP0, gport=2),
        guest(REQUEST, ports=(7, 123456)), pump(), drain())
    yield "guest_connect_program_closes", seq(
        guest_established(2), write(0, b"bye"), close(0), pump(), guest(RW, host=P1000, gport=2, data=b"late"),
        pump(), drain())
    yield "guest_shutdown_rcv_then_host_writes", seq(
        guest_established(3), guest(SHUTDOWN, host=P1000, gport=3, flags=RCV), write(0, b"unwanted"), pump(),
        guest(RW, host=P1000, gport=3, data=b"still sending"), read(0), shut_rd(0), pump(), drain())
    yield "guest_closes_with_data_pending", seq(
        guest_established(1), guest(RW, host=P1000, gport=1, fill=60000, clamp=True),
        guest(RW, host=P1000, gport=1, fill=60000, clamp=True), guest(RW, host=P1000, gport=1, fill=60000,
                                                                       clamp=True),
        guest(RW, host=P1000, gport=1, fill=60000, clamp=True),
        guest(SHUTDOWN, host=P1000, gport=1, flags=RCV | SEND), pump(), read(0, 30000), pump(), read(0),
        pump(), clock(2001), drain())
    yield "four_guest_connections", seq(
        guest_established(1), guest_established(2), guest_established(3), guest_established(4),
        write(0, b"a" * 10), write(1, b"b" * 20), write(2, b"c" * 30), write(3, b"d" * 40), pump(tiny=7),
        pump(), guest(RW, host=P1000, gport=4, data=b"four"), read(3), close(1), pump(), drain())

    # Credit exhaustion, both directions.
    yield "guest_small_buf_alloc", seq(
        guest_established(1, buf_alloc=100), write(0, fill=5000), pump(), pump(),
        guest(CREDIT_UPDATE, host=P1000, gport=1, buf_alloc=100), pump(),
        guest(CREDIT_UPDATE, host=P1000, gport=1, buf_alloc=1000, fwd=("lag", 50)), pump(),
        guest(CREDIT_REQUEST, host=P1000, gport=1, buf_alloc=3000), pump(), drain())
    yield "guest_fills_host_socket", seq(
        guest_established(1), *[guest(RW, host=P1000, gport=1, fill=65535, clamp=True) for _ in range(6)],
        pump(), read(0), pump(), *[guest(RW, host=P1000, gport=1, fill=65535, clamp=True) for _ in range(3)],
        read(0), pump(), drain())
    # A guest within its credit and a program reading a little slower than it writes: the
    # muxer's buffer for the host never empties while megabytes pass through it.
    yield "host_reads_slowly", seq(
        guest_established(1),
        *[seq(guest(RW, host=P1000, gport=1, fill=65535, clamp=True), read(0, 48 * 1024), pump())
          for _ in range(40)], drain())
    # The program shuts both directions down without closing while the muxer holds data for
    # it: HUP without EPOLLOUT (its socket buffer is still full), the data cannot be written.
    yield "program_hangs_up_with_data_pending", seq(
        guest_established(1), *[guest(RW, host=P1000, gport=1, fill=65535, clamp=True) for _ in range(5)],
        shut_rdwr(0), pump(), drain())
    yield "guest_beyond_credit", seq(
        guest_established(1), *[guest(RW, host=P1000, gport=1, fill=65535) for _ in range(10)], pump(), drain())
    yield "host_fills_guest_credit", seq(
        host_established(1, buf_alloc=4096), write(0, fill=65535, shift=2), pump(capacity=1000), pump(),
        guest(CREDIT_UPDATE, host=HP0, gport=1, buf_alloc=4096), pump(), guest(CREDIT_UPDATE, host=HP0, gport=1,
                                                                               buf_alloc=0x80000000),
        drain(capacity=65535))
    yield "fwd_cnt_wraps", seq(
        guest_established(1, buf_alloc=10), write(0, b"x" * 64),
        guest(CREDIT_UPDATE, host=P1000, gport=1, buf_alloc=0xFFFFFFFF, fwd=("raw", 0xFFFFFFF0)), pump(),
        guest(CREDIT_UPDATE, host=P1000, gport=1, buf_alloc=20, fwd=("raw", 0x10)), pump(), drain())

    # Resets and protocol violations.
    yield "resets", seq(
        guest_established(1), guest(RST, host=P1000, gport=1), guest(RW, host=P1000, gport=1, data=b"gone"),
        guest(RST, host=P1000, gport=2), guest_established(2), guest(REQUEST, host=P1000, gport=2),
        guest_established(3), guest(RESPONSE, host=P1000, gport=3), host_established(4, hp=HP0, fd=3),
        guest(RESPONSE, host=HP0, gport=4), pump(), drain())
    yield "rw_before_handshake", seq(
        connect(1), accept_and_read(), guest(RW, host=HP0, gport=1, data=b"too early"),
        connect(2), accept_and_read(), guest(SHUTDOWN, host=HP1, gport=2, flags=SEND), pump(), drain())
    yield "rw_after_shutdown_send", seq(
        guest_established(1), guest(SHUTDOWN, host=P1000, gport=1, flags=SEND),
        guest(RW, host=P1000, gport=1, data=b"after"), pump(), drain())

    # Bad headers: each problem of check_guest_header, on a live connection and on none.
    yield "bad_headers", seq(
        guest_established(1),
        guest(RW, host=P1000, gport=1, data=b"x", cids=(4, 2, 1)),
        guest(RW, host=P1000, gport=1, data=b"x", cids=(3, 5, 1)),
        guest(RW, host=P1000, gport=2, data=b"x", cids=(3, 1 << 40, 1)),
        guest(RW, host=P1000, gport=2, data=b"x", cids=(3, 2, 2)),
        guest(0, host=P1000, gport=2, raw_op=0), guest(0, host=P1000, gport=2, raw_op=8),
        guest(RW, host=P1000, gport=2, fill=0, len32=MAX_PAYLOAD + 1),
        guest(RW, host=P1000, gport=2, fill=100, short=10),
        guest(CREDIT_UPDATE, host=P1000, gport=2, fill=8, control_len=True),
        guest(RST, host=P1000, gport=2, cids=(3, 9, 1)),
        guest(RW, host=P1000, gport=3, fill=200, extra=30), pump(), drain())
    yield "bad_header_kills_connection", seq(
        guest_established(1), guest(CREDIT_REQUEST, host=P1000, gport=1, cids=(3, 2, 7)), pump(), read(0), drain())
    yield "wild_ports_and_flags", seq(
        guest(REQUEST, ports=(0xFFFFFFFF, 1000)), pump(), accept(),
        guest(SHUTDOWN, ports=(0xFFFFFFFF, 1000), raw_flags=0xFFFFFFFF), pump(),
        guest(SHUTDOWN, ports=(0xFFFFFFFF, 1000), raw_flags=0), pump(), drain())

    # Receive buffers: exactly a header, one byte of room, under a header.
    yield "tiny_receive_buffers", seq(
        guest_established(1), write(0, b"0123456789"), pump(tiny=0), pump(below=43), pump(tiny=1),
        pump(tiny=1, count=3), pump(below=44), drain(tiny=0), drain(tiny=3))
    yield "many_resets_queued", seq(
        *[guest(RW, host=P1001, gport=1 + i % 4, data=b"?") for i in range(40)], drain(no_host=True))
    yield "connection_limit", seq(
        burst(extra=3), guest(REQUEST, host=P1000, gport=1), connect(1), accept_and_read(), accept(4), read(0),
        drain(), guest(RST, ports=(1 << 20, 1000)), connect(2), accept_and_read(), drain())
    # The guest's RST leaves a closed connection queued for the guest: has_packet_for_guest()
    # stays true after the 1024 RSTs, and next_packet_for_guest() gives 0.
    yield "reset_queue_full", seq(
        guest(REQUEST, host=P1000, gport=1), guest(RST, host=P1000, gport=1), burst(refused=True),
        *[guest(RW, host=P1001, gport=1 + i % 4, data=b"?") for i in range(8)],
        drain(no_host=True), guest(REQUEST, host=P1001, gport=2), drain())
    # The program closes with the guest's data unread: its socket reports ECONNRESET, seen by
    # recv() while the muxer reads what the program wrote (the pump under a header lets
    # on_host_events() note the data without taking any packet).
    yield "program_closes_with_unread_data", seq(
        guest_established(1), guest(RW, host=P1000, gport=1, data=b"never read"), write(0, b"x" * 100),
        pump(below=0), close(0), pump(no_host=True, tiny=10, count=20), pump(no_host=True), pump(), drain())
    # Data waits for the guest when its credit drops to 0: a CREDIT_REQUEST.
    yield "credit_request_sent", seq(
        guest_established(1), write(0, b"y" * 300), pump(below=0),
        guest(CREDIT_UPDATE, host=P1000, gport=1, buf_alloc=0), pump(), pump(),
        guest(CREDIT_UPDATE, host=P1000, gport=1, buf_alloc=200), pump(), drain())
    yield "credit_request_answered", seq(
        guest_established(1), guest(CREDIT_REQUEST, host=P1000, gport=1), pump(),
        guest(RW, host=P1000, gport=1, fill=1000), guest(CREDIT_REQUEST, host=P1000, gport=1, fwd="same"),
        pump(), drain())
    yield "empty", b""


if __name__ == "__main__":
    write_corpus(__file__, "vsock", seeds())
