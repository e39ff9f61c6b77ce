#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Merges the JSON files the benchmarks wrote (tools/bench.sh) into one bench.json and one
Markdown report, bench.md, with the commit, host, CPU count, load average and date. With
--update-docs FILE, the part of FILE between the bench-results markers is replaced by the
report: docs/benchmarks.md carries no hand-copied figures.

Exit code: 0 when every benchmark that was asked for produced its table (targets met or not),
1 when one is missing or failed, 2 for bad arguments."""

import argparse
import json
import os
import sys

BEGIN = "<!-- bench-results:begin (tools/bench.sh --update-docs writes this part) -->"
END = "<!-- bench-results:end -->"
NET_TARGET = 1.5


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        return {"_error": f"{os.path.basename(path)}: {error}"}


def num(value, digits):
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.{digits}f}"


def verdict_lines(verdicts):
    lines = []
    if isinstance(verdicts, dict):  # startup: name -> {result, detail}
        for name, v in verdicts.items():
            lines.append(f"- **{v.get('result', 'n/a')}** {name}: {v.get('detail', '')}")
    else:  # blk: [{name, pass, text}]
        for v in verdicts or []:
            result = "n/a" if v.get("pass") is None else ("PASS" if v["pass"] else "MISS")
            lines.append(f"- **{result}** {v['name']}: {v['text']}")
    return lines


# ---- start-up -------------------------------------------------------------------------------

def startup_section(runs):
    """runs: [(memory_mib, json)]"""
    out = ["### Start-up, exit and memory (`skiff_bench_startup`)", ""]
    out.append("Medians over the measured runs; exec → first guest output and RSS with the guest halted, "
               "exec → exit with the guest writing to the debug-exit port (process reaped by its parent).")
    out.append("")
    out.append("| guest RAM | skiff first output (ms) | QEMU (ms) | skiff/QEMU | skiff exec→exit (ms) | QEMU (ms) "
               "| skiff/QEMU | skiff RSS beyond guest (MiB) | QEMU (MiB) |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    ok = True
    first_256 = None
    firsts = {}
    for memory, data in runs:
        if "_error" in data:
            out.append(f"| {memory} MiB | failed: {data['_error']} | | | | | | | |")
            ok = False
            continue
        vmms = data.get("vmms", {})
        for key in ("skiff", "qemu"):
            if key in vmms and "failure" in vmms[key]:
                ok = False
        def med(vmm, metric):
            return vmms.get(vmm, {}).get("summary", {}).get(metric, {}).get("median")
        s_first, q_first = med("skiff", "first_output_ms"), med("qemu", "first_output_ms")
        s_exit, q_exit = med("skiff", "process_exit_ms"), med("qemu", "process_exit_ms")
        s_rss, q_rss = med("skiff", "rss_beyond_guest_mib"), med("qemu", "rss_beyond_guest_mib")
        if s_first is None:
            ok = False
        firsts[memory] = s_first
        out.append(f"| {memory} MiB | {num(s_first, 2)} | {num(q_first, 2)} | {ratio(s_first, q_first, 3)} "
                   f"| {num(s_exit, 2)} | {num(q_exit, 2)} | {ratio(s_exit, q_exit, 3)} | {num(s_rss, 2)} "
                   f"| {num(q_rss, 2)} |")
    out.append("")
    for memory, data in runs:
        for line in verdict_lines(data.get("verdicts", {})):
            out.append(line.replace("- **", f"- {memory} MiB: **", 1))
    first_256 = firsts.get(256)
    largest = max(firsts) if firsts else None
    if first_256 is not None and largest and largest != 256 and firsts.get(largest) is not None:
        growth = firsts[largest] - first_256
        result = "PASS" if growth <= 1.0 else "MISS"
        out.append(f"- **{result}** start-up flat in guest memory: skiff at {largest} MiB is {growth:+.2f} ms "
                   f"from its 256 MiB time (target within 1 ms)")
    out.append("")
    return out, ok


def median_cells(test, keys, rate_key, rate_digits, cpu_key, cpu_digits):
    """The median run's rate and CPU figure of each configuration in `keys`, as table cells
    ("failed" where every run failed, "-" where it did not run), and whether one failed."""
    rates, cpus, failed = [], [], False
    for key in keys:
        result = test.get("results", {}).get(key, {})
        median = result.get("median")
        if median is None:
            rates.append("failed" if result else "-")
            cpus.append("-")
            failed |= bool(result)
            continue
        rates.append(num(median.get(rate_key), rate_digits))
        cpus.append(num(median.get(cpu_key), cpu_digits))
    return rates, cpus, failed


# ---- virtio-blk -----------------------------------------------------------------------------

BLK_CONFIGS = [("skiff-io_uring", "skiff io_uring"), ("skiff-sync", "skiff sync"), ("qemu", "QEMU"),
               ("qemu-iothread", "QEMU iothread"), ("fio", "host fio")]


def blk_section(placements):
    out = ["### virtio-blk (`skiff_bench_blk`)", ""]
    ok = True
    for placement, data in placements:
        if "_error" in data:
            out += [f"**{placement}**: failed: {data['_error']}", ""]
            ok = False
            continue
        opts = data.get("options", {})
        out.append(f"**{placement}** — {opts.get('placement', '')}; file {opts.get('file_mib')} MiB, "
                   f"cache={opts.get('cache')}, QEMU aio={opts.get('qemu_aio')}, {opts.get('runs')} run(s), median")
        out.append("")
        present = [(k, label) for k, label in BLK_CONFIGS
                   if any(k in t.get("results", {}) for t in data.get("tests", {}).values())]
        header = ["test"] + [label for _, label in present] + ["skiff/better QEMU", "skiff/fio"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * len(header)) + "|")
        cpu_rows = []
        for key, test in data.get("tests", {}).items():
            iops = test.get("unit") == "IOPS"
            row = [f"{key} ({test.get('unit')})"]
            cpu = [f"{key}: host CPU µs/request"]
            rates, cpus, failed = median_cells(test, [k for k, _ in present], "iops" if iops else "mib_per_s",
                                               0 if iops else 1, "cpu_us_per_request", 1)
            row += rates
            cpu += cpus
            ok &= not failed
            r = test.get("skiff_io_uring_over_qemu")
            row.append(num(r, 2) + (f" ({test.get('better_qemu')})" if r is not None else ""))
            row.append(num(test.get("skiff_io_uring_over_fio"), 2))
            out.append("| " + " | ".join(row) + " |")
            cpu_rows.append("| " + " | ".join(cpu + ["", ""]) + " |")
        out += cpu_rows
        out.append("")
        out += verdict_lines(data.get("verdicts"))
        out.append("")
    return out, ok


# ---- virtio-net -----------------------------------------------------------------------------

def net_section(placements):
    out = ["### virtio-net (`skiff_bench_net`)", ""]
    ok = True
    for placement, data in placements:
        if "_error" in data:
            out += [f"**{placement}**: failed: {data['_error']}", ""]
            ok = False
            continue
        cpus = data.get("options", {}).get("cpus") or ""
        where = f"every VMM on CPU(s) {cpus}" if cpus else "unpinned"
        out.append(f"**{placement}** — {where}; tap, no vhost; median")
        out.append("")
        out.append("| test | skiff | QEMU | skiff/QEMU | skiff CPU µs/frame | QEMU CPU µs/frame |")
        out.append("|---|---|---|---|---|---|")
        for key, test in data.get("tests", {}).items():
            mib = test.get("unit") == "MiB/s"
            cells, cpus_per, failed = median_cells(test, ["skiff", "qemu"], "mib_per_s" if mib else "frames_per_s",
                                                   1 if mib else 0, "cpu_us_per_frame", 2)
            ok &= not failed
            out.append(f"| {key} ({test.get('unit')}) | {cells[0]} | {cells[1]} | "
                       f"{num(test.get('skiff_over_qemu'), 2)} | {cpus_per[0]} | {cpus_per[1]} |")
        out.append("")
        # The target: 64-byte frames at 1.5 x QEMU's rate, both directions, every placement.
        for key in ("tx64", "rx64"):
            r = data.get("tests", {}).get(key, {}).get("skiff_over_qemu")
            if r is None:
                out.append(f"- **n/a** {placement}: {key} skiff vs QEMU: not measured")
            else:
                result = "PASS" if r >= NET_TARGET else "MISS"
                out.append(f"- **{result}** {placement}: {key} skiff vs QEMU: {r:.2f}x (target >= {NET_TARGET}x)")
        out.append("")
    return out, ok


# ---- virtio-balloon -------------------------------------------------------------------------

def balloon_section(data):
    out = ["### virtio-balloon (`skiff_bench_balloon`)", ""]
    if "_error" in data:
        return out + [f"failed: {data['_error']}", ""], False
    ok = True
    out.append("| VMM | inflate time (ms) | guest RSS released (MiB) | MiB/s reclaimed |")
    out.append("|---|---|---|---|")
    for vmm, r in data.get("results", {}).items():
        if r.get("error"):
            out.append(f"| {vmm} | failed: {r['error'].splitlines()[0] if r['error'] else ''} | | |")
            ok = False
            continue
        out.append(f"| {vmm} | {num(r.get('seconds', 0) * 1000, 1)} | {num(r.get('reclaimed_mib'), 1)} "
                   f"| {num(r.get('reclaimed_mib_per_s'), 0)} |")
    out.append("")
    return out, ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="the directory tools/bench.sh wrote (meta.json and the benchmarks' JSON)")
    parser.add_argument("--update-docs", metavar="FILE", help="replace the bench-results part of FILE")
    args = parser.parse_args()

    meta = load(os.path.join(args.dir, "meta.json"))
    if "_error" in meta:
        print(f"bench_report: {meta['_error']}", file=sys.stderr)
        return 2
    asked = meta.get("benchmarks", [])
    merged = {"meta": meta}
    lines = ["## Latest results", "",
             f"Written by `{meta.get('command', 'tools/bench.sh')}` on {meta.get('date')} at commit "
             f"`{meta.get('commit')}`.", "",
             f"Host: {meta.get('host')}; {meta.get('cpus')} CPUs; load average {meta.get('load_before')} before, "
             f"{meta.get('load_after')} after; QEMU: {meta.get('qemu')}; fio: {meta.get('fio')}.", ""]
    if meta.get("smoke"):
        lines += ["**Smoke run** (tiny counts, one run): these figures only show that every benchmark works.", ""]
    all_ok = True

    def path(name):
        return os.path.join(args.dir, name)

    if "startup" in asked:
        runs = [(m, load(path(f"startup-{m}.json"))) for m in meta.get("startup_memory_mib", [])]
        merged["startup"] = {str(m): d for m, d in runs}
        section, ok = startup_section(runs)
        lines += section
        all_ok &= ok
    if "blk" in asked:
        placements = [(p, load(path(f"blk-{p}.json"))) for p in meta.get("placements", [])]
        merged["blk"] = dict(placements)
        section, ok = blk_section(placements)
        lines += section
        all_ok &= ok
    if "net" in asked:
        placements = [(p, load(path(f"net-{p}.json"))) for p in meta.get("placements", [])]
        merged["net"] = dict(placements)
        section, ok = net_section(placements)
        lines += section
        all_ok &= ok
    if "balloon" in asked:
        data = load(path("balloon.json"))
        merged["balloon"] = data
        section, ok = balloon_section(data)
        lines += section
        all_ok &= ok
    failed = meta.get("failed", [])
    if failed:
        lines += ["Benchmarks that exited with an error: " + ", ".join(failed) +
                  " (their logs are beside this report).", ""]
        all_ok = False

    report = "\n".join(lines).rstrip() + "\n"
    with open(path("bench.md"), "w") as f:
        f.write(report)
    with open(path("bench.json"), "w") as f:
        json.dump(merged, f, indent=2)
        f.write("\n")
    print(report)

    if args.update_docs:
        with open(args.update_docs) as f:
            text = f.read()
        if BEGIN not in text or END not in text:
            print(f"bench_report: {args.update_docs} has no '{BEGIN}' ... '{END}' part", file=sys.stderr)
            return 2
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(args.update_docs, "w") as f:
            f.write(head + BEGIN + "\n\n" + report + "\n" + END + tail)
        print(f"bench_report: updated {args.update_docs}", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
