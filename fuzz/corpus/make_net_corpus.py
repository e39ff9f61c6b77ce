#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/net_fuzzer.cc into fuzz/corpus/net/.

Each seed is the fuzzer's input format (see the comment at the top of net_fuzzer.cc): the NIC's
shape and features, chains for the RX/TX/control queues, frames the tap delivers, then the
MAC / feature / config-read trailer. Queue indexes: one pair = rx 0, tx 1, ctrl 2; two pairs =
rx0 0, tx0 1, rx1 2, tx1 3, ctrl 4.
"""
import sys
sys.dont_write_bytecode = True  # no __pycache__ next to the corpora
from seedlib import chain, readable, u8, u16, u64, wild, writable, write_corpus

CSUM, GUEST_CSUM, GUEST_TSO4, HOST_TSO4 = 0, 1, 7, 11
MRG_RXBUF, CTRL_VQ, CTRL_RX, MQ, INDIRECT, EVENT_IDX = 15, 17, 18, 22, 28, 29
HEADER = bytes(12)
TWO_PAIRS, SPEC_MTU, OFFLOADS, RX_LIMIT, TX_LIMIT = 1, 0x10, 0x20, 0x40, 0x80


def features(*bits):
    value = 0
    for bit in bits:
        value |= 1 << bit
    return value


def shape(flags=0, size_log=2):
    return u8(flags | (size_log << 1))


def seed(flags, feats, chains, frames=(), mtu=1500, offloads=0x0F, size_log=2):
    out = shape(flags, size_log) + u16(mtu) + u8(offloads) + u16(mtu) + u64(feats)
    out += u8(len(chains)) + b"".join(u8(queue) + c for queue, c in chains)
    out += u8(len(frames))
    for pair, payload, extra in frames:
        frame = HEADER + payload
        out += u8(pair) + u16(len(frame)) + u8(extra) + frame
    return out + u8(3) + b"vm1" + u8(4) + b"net0" + u64(features(MQ, CTRL_RX)) + u8(0) + u8(12)


ETH = bytes.fromhex("ffffffffffff525400123456 0800".replace(" ", "")) + bytes(46)


def ctrl(cls, cmd, data=b""):
    return chain(readable(bytes([cls, cmd]) + data), writable(1))


def seeds():
    base = features(EVENT_IDX, INDIRECT, CTRL_VQ, CTRL_RX)
    yield "rx_one_frame", seed(0, base, [(0, chain(writable(2048)))], [(0, ETH, 0)])
    yield "rx_mergeable", seed(0, base | features(MRG_RXBUF),
                               [(0, chain(writable(600))), (0, chain(writable(600))), (0, chain(writable(600)))],
                               [(0, ETH * 24, 0)])
    yield "rx_chain_too_small", seed(0, base, [(0, chain(writable(100)))], [(0, ETH * 4, 0)])
    yield "rx_unusable_chains", seed(0, base | features(MRG_RXBUF),
                                     [(0, chain(writable(8))), (0, chain(readable(b"x" * 20), writable(64))),
                                      (0, chain(wild(0x10, 64, True))), (0, chain(writable(64), writable(64)))],
                                     [(0, ETH, 0)])
    yield "rx_bounce", seed(0, base | features(MRG_RXBUF), [(0, chain(writable(256))), (0, chain(writable(256)))],
                            [(0, ETH * 40, 0), (0, ETH, 0)])
    yield "rx_frame_larger_than_ring", seed(0, base | features(MRG_RXBUF), [(0, chain(writable(64)))] * 4,
                                            [(0, ETH * 10, 0), (0, ETH, 0)], size_log=0)
    yield "rx_truncated_frame", seed(0, base, [(0, chain(writable(2048)))], [(0, ETH, 200)])
    yield "rx_runt_frame", seed(0, base, [(0, chain(writable(2048)))], [(0, b"", 0)])
    yield "rx_gso_offloads", seed(OFFLOADS, base | features(GUEST_CSUM, GUEST_TSO4, CSUM, HOST_TSO4, MRG_RXBUF),
                                  [(0, chain(writable(4096), indirect=True))], [(0, ETH * 3, 0)])
    yield "tx_frame", seed(0, base, [(1, chain(readable(HEADER), readable(ETH)))])
    yield "tx_bad_chains", seed(0, base, [(1, chain(readable(b"short"))), (1, chain(readable(HEADER + ETH),
                                                                                   writable(4))),
                                          (1, chain(wild(0xFFFFFFFFFFFFFFF0, 0x100)))])
    yield "tx_rate_limited", seed(TX_LIMIT, base, [(1, chain(readable(HEADER + ETH)))] * 4)
    yield "rx_rate_limited", seed(RX_LIMIT, base, [(0, chain(writable(2048)))] * 3, [(0, ETH * 20, 0)] * 3)
    yield "ctrl_rx_commands", seed(0, base, [(2, ctrl(0, 0, b"\x01")), (2, ctrl(0, 1, b"\x00")), (2, ctrl(0, 0)),
                                             (2, ctrl(1, 0, bytes(8))), (2, ctrl(9, 9)),
                                             (2, chain(readable(b"\x00")))])
    two = features(EVENT_IDX, CTRL_VQ, MQ, MRG_RXBUF)
    yield "mq_pairs_set", seed(TWO_PAIRS, two, [(4, ctrl(4, 0, u16(2))), (2, chain(writable(2048))),
                                                (3, chain(readable(HEADER + ETH))), (4, ctrl(4, 0, u16(3))),
                                                (4, ctrl(4, 0, u16(0)))],
                               [(1, ETH, 0), (0, ETH, 0)])
    yield "mq_without_ctrl", seed(TWO_PAIRS | SPEC_MTU, features(MQ), [(0, chain(writable(1600)))], [(0, ETH, 0)],
                                  mtu=9000)


if __name__ == "__main__":
    write_corpus(__file__, "net", seeds())
