#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus for fuzz/spec_fuzzer.cc into fuzz/corpus/spec/.

The input is the spec's JSON text, so the seeds are the example specs: configs/*.json (not the
schema), every ```json block of docs/*.md and README.md, and a few hand-written edge cases
(wrong types, unknown keys, deep nesting, MAC/size strings for the small parsers).
"""
import sys
import glob
import os
import re

sys.dont_write_bytecode = True  # no __pycache__ next to the corpora
from seedlib import write_corpus

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

EXTRA = {
    "edge_wrong_type": b'{"boot": {"kernel": "k"}, "machine": {"vcpus": "two"}}',
    "edge_unknown_key": b'{"boot": {"kernel": "k"}, "machin": {}}',
    "edge_no_boot": b'{"name": "x"}',
    "edge_nets": b'{"boot": {"kernel": "k"}, "nets": [{"id": "n0", "tap": "tap0", "mac": "52:54:00:AB:cd:EF",'
                 b' "mtu": 9000, "queues": 2, "queue_size": 256}, {"id": "n0", "tap": "bad/name"}]}',
    "edge_disks": b'{"boot": {"kernel": "k"}, "disks": [{"id": "d0", "path": "disk.img", "read_only": true,'
                  b' "serial": "0123456789012345678901", "queues": 0}]}',
    "edge_balloon_api_null": b'{"boot": {"kernel": "k", "initrd": "i", "cmdline": "a\\u0000b"}, "rng": null,'
                             b' "balloon": {"target_mib": 99999999}, "api": null}',
    "edge_vsock": b'{"boot": {"kernel": "k"}, "vsock": {"guest_cid": 2, "socket": "v.sock", "transport": "mmio"},'
                  b' "api": {"socket": "v.sock_1024"}}',
    "edge_deep": b"[" * 600 + b"]" * 600,
    "edge_numbers": b'{"boot": {"kernel": "k"}, "machine": {"memory_mib": 1e400, "vcpus": -1}}',
    "text_mac": b"52:54:00:12:34:56",
    "text_memory": b"512MiB",
    "text_cpus": b"0-3,8,10-11\n",
}


def seeds():
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.json"))):
        if path.endswith("schema.json"):
            continue
        with open(path, "rb") as f:
            yield "config_" + os.path.basename(path)[:-5], f.read()
    docs = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]
    for path in docs:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            blocks = re.findall(r"```json\n(.*?)```", f.read(), re.S)
        for i, block in enumerate(blocks):
            yield f"doc_{os.path.basename(path)[:-3]}_{i}", block.encode()
    yield from EXTRA.items()


if __name__ == "__main__":
    write_corpus(__file__, "spec", seeds())
