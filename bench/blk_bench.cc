// SPDX-License-Identifier: Apache-2.0
// skiff_bench_blk: virtio-blk throughput from a raw file, skiff (io_uring and sync engines)
// beside qemu-system-x86_64 with virtio-blk-pci, the same guest payload (tests/guest,
// skiff.blkbench=: a ring-3 polling loop) and the same file, plus fio on the host file as
// the ceiling. Tests: 4 KiB random read at queue depth 1 and 32 (IOPS), 128 KiB sequential
// read (MiB/s). QEMU runs twice: its I/O on the main loop, and on an iothread (how its users
// deploy it). --cpus confines every VMM (all its threads, the vCPU included) and fio to the
// given CPUs; the report gives host CPU time per request beside the rates. Targets (the
// better of the two QEMU set-ups): with a spare CPU, skiff >= 1.5x QEMU at QD1, >= 90% of
// host fio at QD32 and >= host fio sequentially; on one CPU, skiff >= QEMU on all three with
// no more CPU per request. See docs/benchmarks.md.
//
// Both VMMs and fio are child processes; nothing of libskiff is linked in. Exit code 0 when
// every run worked, whether the targets are met or not; 1 when a run failed.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "bench_process.h"

namespace skiff::bench {
namespace {

constexpr std::string_view kStartLine = "SKIFF-GUEST blkbench-start\n";
constexpr std::string_view kEndLine = "SKIFF-GUEST blkbench-end";
constexpr double kQemuTargetRatio = 1.5;      // spare CPU: skiff at QD1 at least 1.5x QEMU
constexpr double kFioTargetRatio = 0.9;       // spare CPU: skiff at QD32 at least 90% of host fio
constexpr double kFioSeqTargetRatio = 1.0;    // spare CPU: skiff sequential at least host fio
constexpr double kOneCpuTargetRatio = 1.0;    // one CPU: skiff at least QEMU on every test
constexpr size_t kStderrTailBytes = 2000;

struct Options {
  std::string skiff = "skiff";
  std::string qemu = "qemu-system-x86_64";
  std::string fio = "fio";
  std::string guest;
  std::string file;
  unsigned file_mib = 256;
  bool keep_file = false;
  std::string cache = "none";
  std::string qemu_aio = "io_uring";
  std::string qemu_machine = "pc";
  std::string qemu_cpu = "host,-arch-capabilities";
  std::vector<std::string> only;
  std::string cpus;  // --cpus: where every VMM and fio run; empty: anywhere
  std::string qemu_blk_opts;   // extra ",key=value" options of QEMU's virtio-blk-pci device
  std::string skiff_disk_json;  // a JSON object merged into skiff's disk section
  uint64_t count_qd1 = 10000;
  uint64_t count_qd32 = 50000;
  uint64_t count_seq = 8000;  // 1 GiB: four passes over the default file
  unsigned seq_depth = 8;
  unsigned runs = 1;
  unsigned fio_seconds = 5;
  unsigned memory_mib = 256;
  double timeout_s = 300;
  std::string json_path;
  std::string keep_logs;
};

// ---- what is measured ----------------------------------------------------------------------

struct Test {
  std::string key;    // JSON key and guest test name
  std::string label;  // table row
  std::string guest_test;
  unsigned block_bytes;
  unsigned depth;
  uint64_t count;
  bool random;
  bool iops;  // IOPS (else MiB/s) is the figure
};

std::vector<Test> tests_of(const Options& options) {
  return {
      {"randread4k_qd1", "4 KiB random read, QD1 (IOPS)", "randread4k", 4096, 1, options.count_qd1, true, true},
      {"randread4k_qd32", "4 KiB random read, QD32 (IOPS)", "randread4k", 4096, 32, options.count_qd32, true, true},
      {"seqread128k", fmt::format("128 KiB seq. read, QD{} (MiB/s)", options.seq_depth), "seqread128k", 128 * 1024,
       options.seq_depth, options.count_seq, false, false},
  };
}

struct Config {
  std::string key;    // skiff-io_uring, skiff-sync, qemu, fio
  std::string label;  // table column
};

const std::vector<Config>& all_configs() {
  static const std::vector<Config> configs = {
      {"skiff-io_uring", "skiff io_uring"}, {"skiff-sync", "skiff sync"}, {"qemu", "QEMU"},
      {"qemu-iothread", "QEMU iothread"},   {"fio", "host fio"}};
  return configs;
}

struct Measurement {
  bool ok = false;
  std::string error;
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t notifies = 0;
  double wall_s = 0;        // host clock, start marker to end marker
  double tsc_s = 0;         // the guest's RDTSC delta / host TSC rate (0 when unknown)
  double iops = 0;          // from wall_s
  double mib_s = 0;
  double tsc_iops = 0;      // from tsc_s, cross-check
  double total_run_s = 0;   // the VMM process from spawn to exit
  double cpu_s = 0;         // host CPU time of all the VMM's threads (fio: its jobs) in the run
  double cpu_us_per_request = 0;
  std::map<std::string, ThreadStat> threads;  // between the markers, by thread name
  std::string console;
  std::string stderr_text;
};

// Runs one VMM to its end, timing the guest's markers as their bytes arrive on the pipe.
Measurement run_vmm(const std::string& program, const std::vector<std::string>& argv, const Test& test,
                    const Options& options, double tsc_hz) {
  Measurement m;
  MarkedRun run = run_marked(program, argv, kStartLine, kEndLine, options.timeout_s);
  m.console = std::move(run.console);
  m.stderr_text = std::move(run.stderr_text);
  m.total_run_s = run.total_run_s;
  m.threads = std::move(run.threads);
  if (!run.error.empty()) {
    m.error = run.error;
    return m;
  }
  auto fields = fields_of(run.end_line);
  if (fields.count("failed") != 0 || field_u64(fields, "timed-out") != 0 || field_u64(fields, "bad-ids") != 0) {
    m.error = "guest: " + run.end_line;
    return m;
  }
  m.requests = field_u64(fields, "completed");
  m.errors = field_u64(fields, "errors");
  m.notifies = field_u64(fields, "notifies");
  if (m.requests != test.count || m.errors != 0) {
    m.error = "guest: " + run.end_line;
    return m;
  }
  m.wall_s = run.wall_s;
  if (tsc_hz > 0) m.tsc_s = static_cast<double>(field_u64(fields, "tsc-cycles")) / tsc_hz;
  double requests = static_cast<double>(m.requests);
  m.iops = requests / m.wall_s;
  m.mib_s = m.iops * static_cast<double>(test.block_bytes) / (1024.0 * 1024.0);
  if (m.tsc_s > 0) m.tsc_iops = requests / m.tsc_s;
  for (const auto& [name, t] : m.threads) m.cpu_s += t.cpu_s;
  m.cpu_us_per_request = m.cpu_s * 1e6 / requests;
  m.ok = true;
  return m;
}

std::string guest_cmdline(const Test& test) {
  return fmt::format("console=ttyS0 skiff.blkbench={},qd={},count={},warmup={}", test.guest_test, test.depth,
                     test.count, std::max<uint64_t>(test.count / 20, test.depth));
}

std::vector<std::string> skiff_argv(const std::string& program, const std::string& spec_path) {
  return {program, "run", spec_path};
}

std::expected<std::string, std::string> write_skiff_spec(const Options& options, const Test& test,
                                                         const std::string& engine, const std::string& dir) {
  nlohmann::json spec = {
      {"name", "blkbench"},
      {"machine", {{"memory_mib", options.memory_mib}, {"vcpus", 1}}},
      {"boot", {{"kernel", options.guest}, {"cmdline", guest_cmdline(test)}}},
      {"disks", nlohmann::json::array({{{"id", "bench"},
                                        {"path", options.file},
                                        {"cache", options.cache},
                                        {"io_engine", engine},
                                        {"transport", "pci"}}})},
  };
  if (!options.skiff_disk_json.empty()) spec["disks"][0].update(nlohmann::json::parse(options.skiff_disk_json));
  std::string path = fmt::format("{}/skiff-{}-{}.json", dir, engine, test.key);
  std::ofstream out(path);
  out << spec.dump(2) << "\n";
  if (!out) return std::unexpected(fmt::format("{}: write failed", path));
  return path;
}

// With `iothread`, the disk's I/O runs on an iothread of its own instead of QEMU's main loop:
// how QEMU's users deploy virtio-blk (and its documentation recommends).
std::vector<std::string> qemu_argv(const std::string& program, const Options& options, const Test& test,
                                   bool iothread) {
  // -M pc: the guest finds virtio-pci through configuration mechanism #1 (ports 0xcf8/0xcfc),
  // which microvm lacks; SeaBIOS assigns the BARs and the guest boots through its PVH note.
  std::vector<std::string> argv = {program,
          "-M", options.qemu_machine,
          "-accel", "kvm",
          "-cpu", options.qemu_cpu,
          "-m", fmt::format("{}M", options.memory_mib),
          "-smp", "1",
          "-nodefaults", "-no-user-config", "-nographic",
          "-serial", "stdio",
          "-no-reboot",
          "-name", "blkbench,debug-threads=on",  // thread names for the per-thread profile
          "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
          "-kernel", options.guest,
          "-append", guest_cmdline(test),
          "-drive", fmt::format("file={},if=none,id=bench,format=raw,cache={},aio={}", options.file,
                                options.cache == "none" ? "none" : "writeback", options.qemu_aio),
          "-device", fmt::format("virtio-blk-pci,drive=bench,disable-legacy=on{}{}",
                                 iothread ? ",iothread=io0" : "",
                                 options.qemu_blk_opts.empty() ? "" : "," + options.qemu_blk_opts)};
  if (iothread) argv.insert(argv.end(), {"-object", "iothread,id=io0"});
  return argv;
}

Measurement run_fio(const std::string& program, const Options& options, const Test& test) {
  Measurement m;
  std::vector<std::string> argv = {program,
                                   "--name=blkbench",
                                   "--filename=" + options.file,
                                   test.random ? "--rw=randread" : "--rw=read",
                                   fmt::format("--bs={}", test.block_bytes),
                                   fmt::format("--iodepth={}", test.depth),
                                   "--ioengine=io_uring",
                                   fmt::format("--direct={}", options.cache == "none" ? 1 : 0),
                                   "--ramp_time=1",
                                   fmt::format("--runtime={}", options.fio_seconds),
                                   "--time_based",
                                   "--randrepeat=0",
                                   "--output-format=json"};
  auto output = capture(program, argv, options.fio_seconds + options.timeout_s);
  if (!output) {
    m.error = output.error();
    return m;
  }
  try {
    auto json = nlohmann::json::parse(output->substr(output->find('{')));
    const auto& read = json.at("jobs").at(0).at("read");
    m.iops = read.at("iops").get<double>();
    m.mib_s = read.at("bw_bytes").get<double>() / (1024.0 * 1024.0);
    m.requests = read.at("total_ios").get<uint64_t>();
    m.wall_s = static_cast<double>(read.at("runtime").get<uint64_t>()) / 1000.0;
    m.errors = json.at("jobs").at(0).at("error").get<uint64_t>();
    // usr_cpu and sys_cpu are percentages of the job's run time.
    const auto& job = json.at("jobs").at(0);
    m.cpu_s = (job.at("usr_cpu").get<double>() + job.at("sys_cpu").get<double>()) / 100.0 * m.wall_s;
    if (m.requests > 0) m.cpu_us_per_request = m.cpu_s * 1e6 / static_cast<double>(m.requests);
    m.ok = m.errors == 0;
    if (!m.ok) m.error = fmt::format("fio reported error {}", m.errors);
  } catch (const std::exception& error) {
    m.error = fmt::format("fio output: {}", error.what());
  }
  return m;
}

// ---- the test file -------------------------------------------------------------------------

// Every byte written (so no read is served from a hole) and synced.
std::expected<std::string, std::string> create_file(unsigned mib) {
  char name[] = "/var/tmp/skiff-blkbench-XXXXXX";
  int fd = mkstemp(name);
  if (fd < 0) return std::unexpected(errno_text("mkstemp /var/tmp"));
  UniqueFd file(fd);
  std::vector<uint8_t> chunk(1 << 20);
  uint64_t x = 0x243f6a8885a308d3ull;
  for (unsigned i = 0; i < mib; ++i) {
    for (size_t j = 0; j + 8 <= chunk.size(); j += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(&chunk[j], &x, 8);
    }
    if (write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size())) {
      std::string error = errno_text(fmt::format("{}: write", name));
      unlink(name);
      return std::unexpected(error);
    }
  }
  if (fsync(fd) != 0) {
    std::string error = errno_text(fmt::format("{}: fsync", name));
    unlink(name);
    return std::unexpected(error);
  }
  return std::string(name);
}

// ---- report --------------------------------------------------------------------------------

struct Cell {
  std::vector<Measurement> runs;
  std::optional<Measurement> best() const {  // the median run by throughput
    std::vector<const Measurement*> ok;
    for (const Measurement& m : runs) {
      if (m.ok) ok.push_back(&m);
    }
    if (ok.empty()) return std::nullopt;
    std::sort(ok.begin(), ok.end(), [](auto* a, auto* b) { return a->iops < b->iops; });
    return *ok[ok.size() / 2];
  }
};

using Results = std::map<std::string, std::map<std::string, Cell>>;  // test key -> config key -> runs

double figure(const Measurement& m, const Test& test) { return test.iops ? m.iops : m.mib_s; }

std::string figure_text(const std::optional<Measurement>& m, const Test& test) {
  if (!m) return "-";
  return test.iops ? fmt::format("{:.0f}", m->iops) : fmt::format("{:.1f}", m->mib_s);
}

std::optional<double> ratio(const Results& results, const Test& test, const std::string& a, const std::string& b) {
  auto test_it = results.find(test.key);
  if (test_it == results.end()) return std::nullopt;
  auto ia = test_it->second.find(a);
  auto ib = test_it->second.find(b);
  if (ia == test_it->second.end() || ib == test_it->second.end()) return std::nullopt;
  auto ma = ia->second.best();
  auto mb = ib->second.best();
  if (!ma || !mb || figure(*mb, test) <= 0) return std::nullopt;
  return figure(*ma, test) / figure(*mb, test);
}

std::string ratio_text(std::optional<double> value) { return value ? fmt::format("{:.2f}", *value) : "-"; }

struct Verdict {
  std::string name;
  std::optional<bool> pass;
  std::string text;
};

// The QEMU set-up with the higher figure on this test ("qemu" or "qemu-iothread"), if any ran.
std::optional<std::string> better_qemu(const Results& results, const Test& test) {
  std::optional<std::string> best;
  double best_figure = -1;
  auto test_it = results.find(test.key);
  if (test_it == results.end()) return best;
  for (const std::string key : {"qemu", "qemu-iothread"}) {
    auto it = test_it->second.find(key);
    if (it == test_it->second.end()) continue;
    auto m = it->second.best();
    if (m && figure(*m, test) > best_figure) {
      best_figure = figure(*m, test);
      best = key;
    }
  }
  return best;
}

std::optional<double> ratio_to_better_qemu(const Results& results, const Test& test, const std::string& a) {
  auto qemu = better_qemu(results, test);
  if (!qemu) return std::nullopt;
  return ratio(results, test, a, *qemu);
}

std::optional<Measurement> median_of(const Results& results, const Test& test, const std::string& key) {
  auto test_it = results.find(test.key);
  if (test_it == results.end()) return std::nullopt;
  auto it = test_it->second.find(key);
  if (it == test_it->second.end()) return std::nullopt;
  return it->second.best();
}

// The targets: with a spare CPU (no --cpus, or more CPUs than the one vCPU) rates
// against QEMU and host fio; with the whole VMM on one CPU, rates and CPU per request
// against QEMU. Both skiff engines are judged; io_uring is the default.
std::vector<Verdict> verdicts(const Results& results, const std::vector<Test>& tests, bool one_cpu) {
  std::vector<Verdict> out;
  auto versus = [&](const std::string& name, std::optional<double> r, double target, const std::string& what) {
    out.push_back({name, r ? std::optional(*r >= target) : std::nullopt,
                   r ? fmt::format("{:.2f}x {} (target >= {:.2f}x)", *r, what, target) : "not measured"});
  };
  for (const Test& test : tests) {
    for (const std::string engine : {"skiff-io_uring", "skiff-sync"}) {
      auto qemu = better_qemu(results, test);
      std::string qemu_name = qemu ? fmt::format("the better QEMU ({})", *qemu) : "QEMU";
      if (one_cpu) {
        versus(fmt::format("one CPU: {} {} vs QEMU", test.key, engine), ratio_to_better_qemu(results, test, engine),
               kOneCpuTargetRatio, qemu_name);
        auto mine = median_of(results, test, engine);
        auto theirs = qemu ? median_of(results, test, *qemu) : std::nullopt;
        std::string name = fmt::format("one CPU: {} {} CPU per request", test.key, engine);
        if (mine && theirs && theirs->cpu_us_per_request > 0) {
          out.push_back({name, mine->cpu_us_per_request <= theirs->cpu_us_per_request,
                         fmt::format("{:.1f} us vs {:.1f} us for {} (target: no more)", mine->cpu_us_per_request,
                                     theirs->cpu_us_per_request, qemu_name)});
        } else {
          out.push_back({name, std::nullopt, "not measured"});
        }
      } else if (test.key == "randread4k_qd1") {
        versus(fmt::format("{} {} vs QEMU", test.key, engine), ratio_to_better_qemu(results, test, engine),
               kQemuTargetRatio, qemu_name);
      } else if (test.key == "randread4k_qd32") {
        versus(fmt::format("{} {} vs host fio", test.key, engine), ratio(results, test, engine, "fio"),
               kFioTargetRatio, "host fio");
      } else {
        versus(fmt::format("{} {} vs host fio", test.key, engine), ratio(results, test, engine, "fio"),
               kFioSeqTargetRatio, "host fio");
      }
    }
  }
  return out;
}

std::string placement_text() {
  if (child_cpus().empty()) return "unpinned (a spare CPU for the VMM's threads)";
  return fmt::format("every VMM and fio confined to CPU{} {} (vCPU included)", child_cpu_count() == 1 ? "" : "s",
                     child_cpus());
}

void print_report(const Options& options, const std::vector<Test>& tests, const std::vector<Config>& configs,
                  const Results& results, const std::string& host, double tsc_hz) {
  fmt::print("\nvirtio-blk from a {} MiB file, cache={} ({}), guest ring-3 polling loop, 1 vCPU\n", options.file_mib,
             options.cache, options.cache == "none" ? "O_DIRECT" : "host page cache");
  fmt::print("host: {}; TSC {:.1f} MHz; QEMU -M {} aio={}; {} run(s) per cell (median)\n", host, tsc_hz / 1e6,
             options.qemu_machine, options.qemu_aio, options.runs);
  fmt::print("placement: {}\n\n", placement_text());
  std::vector<std::string> header = {"test"};
  for (const Config& c : configs) header.push_back(c.label);
  header.insert(header.end(), {"skiff/better QEMU", "skiff/fio"});
  fmt::print("| {} |\n", fmt::join(header, " | "));
  std::vector<std::string> rule(header.size(), "---");
  fmt::print("|{}|\n", fmt::join(rule, "|"));
  for (const Test& test : tests) {
    std::vector<std::string> row = {test.label};
    for (const Config& c : configs) {
      auto it = results.at(test.key).find(c.key);
      row.push_back(it == results.at(test.key).end() ? "-" : figure_text(it->second.best(), test));
    }
    row.push_back(ratio_text(ratio_to_better_qemu(results, test, "skiff-io_uring")));
    row.push_back(ratio_text(ratio(results, test, "skiff-io_uring", "fio")));
    fmt::print("| {} |\n", fmt::join(row, " | "));
  }
  for (const Test& test : tests) {
    std::vector<std::string> row = {fmt::format("{}: host CPU us/request", test.key)};
    for (const Config& c : configs) {
      auto m = median_of(results, test, c.key);
      row.push_back(m && m->cpu_us_per_request > 0 ? fmt::format("{:.1f}", m->cpu_us_per_request) : "-");
    }
    row.insert(row.end(), {"", ""});
    fmt::print("| {} |\n", fmt::join(row, " | "));
  }
  fmt::print("\n(skiff/better QEMU and skiff/fio use skiff io_uring; CPU per request is every thread of the VMM,\n"
             "vCPU included, between the guest's markers; for fio its job's user + system time.)\n"
             "notifications (MMIO notify writes) per request:\n");
  for (const Test& test : tests) {
    std::vector<std::string> parts;
    for (const Config& c : configs) {
      if (c.key == "fio") continue;
      auto it = results.at(test.key).find(c.key);
      if (it == results.at(test.key).end()) continue;
      auto m = it->second.best();
      if (m && m->requests > 0) {
        parts.push_back(fmt::format("{} {:.2f}", c.label, static_cast<double>(m->notifies) / static_cast<double>(m->requests)));
      }
    }
    fmt::print("  {}: {}\n", test.key, fmt::join(parts, ", "));
  }
  fmt::print("\nwhere the time goes (per thread, between the markers: CPU seconds / wall seconds, "
             "voluntary context switches per request):\n");
  for (const Test& test : tests) {
    for (const Config& c : configs) {
      if (c.key == "fio") continue;
      auto it = results.at(test.key).find(c.key);
      if (it == results.at(test.key).end()) continue;
      auto m = it->second.best();
      if (!m || m->threads.empty()) continue;
      std::vector<std::string> parts;
      for (const auto& [name, t] : m->threads) {
        if (t.cpu_s <= 0 && t.voluntary == 0) continue;
        parts.push_back(fmt::format("{} {:.0f}% {:.2f}/req", name, 100 * t.cpu_s / m->wall_s,
                                    static_cast<double>(t.voluntary) / static_cast<double>(m->requests)));
      }
      fmt::print("  {} {}: {}\n", test.key, c.label, fmt::join(parts, ", "));
    }
  }
  fmt::print("\n");
  for (const Verdict& v : verdicts(results, tests, child_cpu_count() == 1)) {
    fmt::print("{:<5} {}: {}\n", !v.pass ? "n/a" : (*v.pass ? "PASS" : "MISS"), v.name, v.text);
  }
}

nlohmann::json measurement_json(const Measurement& m) {
  nlohmann::json j = {{"ok", m.ok}};
  if (!m.ok) {
    j["error"] = m.error;
    return j;
  }
  j.update({{"requests", m.requests},
            {"seconds", m.wall_s},
            {"iops", m.iops},
            {"mib_per_s", m.mib_s},
            {"notifies", m.notifies},
            {"cpu_seconds", m.cpu_s},
            {"cpu_us_per_request", m.cpu_us_per_request}});
  if (m.tsc_s > 0) j.update({{"guest_tsc_seconds", m.tsc_s}, {"guest_tsc_iops", m.tsc_iops}});
  if (m.total_run_s > 0) j["process_seconds"] = m.total_run_s;
  for (const auto& [name, t] : m.threads) {
    j["threads"][name] = {{"cpu_seconds", t.cpu_s},
                          {"voluntary_switches", t.voluntary},
                          {"involuntary_switches", t.involuntary}};
  }
  return j;
}

nlohmann::json to_json(const Options& options, const std::vector<Test>& tests, const std::vector<Config>& configs,
                       const Results& results, const std::string& host, double tsc_hz,
                       const std::map<std::string, std::string>& versions) {
  nlohmann::json j;
  j["host"] = host;
  j["tsc_hz"] = tsc_hz;
  j["versions"] = versions;
  j["options"] = {{"file_mib", options.file_mib},     {"cache", options.cache},
                  {"qemu_aio", options.qemu_aio},     {"qemu_machine", options.qemu_machine},
                  {"runs", options.runs},             {"fio_seconds", options.fio_seconds},
                  {"memory_mib", options.memory_mib}, {"cpus", options.cpus},
                  {"placement", placement_text()}};
  for (const Test& test : tests) {
    nlohmann::json t = {{"block_bytes", test.block_bytes},
                        {"queue_depth", test.depth},
                        {"requests", test.count},
                        {"pattern", test.random ? "random" : "sequential"},
                        {"unit", test.iops ? "IOPS" : "MiB/s"}};
    for (const Config& c : configs) {
      auto it = results.at(test.key).find(c.key);
      if (it == results.at(test.key).end()) continue;
      nlohmann::json runs = nlohmann::json::array();
      for (const Measurement& m : it->second.runs) runs.push_back(measurement_json(m));
      auto best = it->second.best();
      t["results"][c.key] = {{"runs", runs}};
      if (best) t["results"][c.key]["median"] = measurement_json(*best);
    }
    if (auto q = better_qemu(results, test)) t["better_qemu"] = *q;
    if (auto r = ratio_to_better_qemu(results, test, "skiff-io_uring")) t["skiff_io_uring_over_qemu"] = *r;
    if (auto r = ratio_to_better_qemu(results, test, "skiff-sync")) t["skiff_sync_over_qemu"] = *r;
    if (auto r = ratio(results, test, "skiff-io_uring", "fio")) t["skiff_io_uring_over_fio"] = *r;
    j["tests"][test.key] = t;
  }
  for (const Verdict& v : verdicts(results, tests, child_cpu_count() == 1)) {
    j["verdicts"].push_back({{"name", v.name}, {"pass", v.pass ? nlohmann::json(*v.pass) : nlohmann::json()}, {"text", v.text}});
  }
  return j;
}

void keep_log(const Options& options, const std::string& name, const Measurement& m) {
  if (options.keep_logs.empty()) return;
  std::string base = fmt::format("{}/{}", options.keep_logs, name);
  std::ofstream(base + ".out") << m.console;
  std::ofstream(base + ".err") << m.stderr_text;
}

int run(Options options) {
  if (auto placed = set_child_cpus(options.cpus); !placed) {
    fmt::print(stderr, "skiff_bench_blk: {}\n", placed.error());
    return 2;
  }
  std::vector<Config> configs;
  for (const Config& c : all_configs()) {
    if (options.only.empty() || std::find(options.only.begin(), options.only.end(), c.key) != options.only.end()) {
      configs.push_back(c);
    }
  }
  // The skiff spec lives in a temporary directory: relative paths would resolve against it.
  options.guest = std::filesystem::absolute(options.guest).string();
  if (!options.file.empty()) options.file = std::filesystem::absolute(options.file).string();
  std::map<std::string, std::string> programs;
  std::map<std::string, std::string> versions;
  for (const Config& c : configs) {
    std::string want = c.key.starts_with("qemu") ? options.qemu : c.key == "fio" ? options.fio : options.skiff;
    auto program = resolve_program(want);
    if (!program) {
      if (c.key == "fio") {
        fmt::print(stderr, "fio: not available ({})\n", program.error());
        continue;
      }
      fmt::print(stderr, "skiff_bench_blk: {}: {}\n", c.key, program.error());
      return 1;
    }
    programs[c.key] = *program;
    std::vector<std::string> version_argv = {*program, c.key.starts_with("skiff") ? "version" : "--version"};
    auto version = capture(*program, version_argv, 10);
    versions[c.key.starts_with("skiff") ? "skiff" : c.key.starts_with("qemu") ? "qemu" : c.key] =
        version ? first_line(*version) : "?";
  }
  std::erase_if(configs, [&](const Config& c) { return programs.count(c.key) == 0; });

  bool own_file = options.file.empty();
  if (own_file) {
    fmt::print(stderr, "creating a {} MiB test file in /var/tmp...\n", options.file_mib);
    auto file = create_file(options.file_mib);
    if (!file) {
      fmt::print(stderr, "skiff_bench_blk: {}\n", file.error());
      return 1;
    }
    options.file = *file;
  } else {
    struct stat info {};
    if (stat(options.file.c_str(), &info) != 0) {
      fmt::print(stderr, "skiff_bench_blk: {}\n", errno_text(options.file));
      return 1;
    }
    options.file_mib = static_cast<unsigned>(info.st_size >> 20);
  }
  char dir_template[] = "/tmp/skiff-blkbench-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    fmt::print(stderr, "skiff_bench_blk: {}\n", errno_text("mkdtemp"));
    return 1;
  }
  const std::string dir = dir_template;
  const double tsc_hz = calibrate_tsc_hz();
  const std::string host = describe_host();
  const std::vector<Test> tests = tests_of(options);

  Results results;
  bool failed = false;
  for (const Test& test : tests) {
    results[test.key];
    for (unsigned round = 0; round < options.runs; ++round) {
      // The configurations alternate within a round so drift on the host hits all alike.
      for (const Config& c : configs) {
        Measurement m;
        const std::string& program = programs.at(c.key);
        if (c.key == "fio") {
          m = run_fio(program, options, test);
        } else if (c.key.starts_with("qemu")) {
          m = run_vmm(program, qemu_argv(program, options, test, c.key == "qemu-iothread"), test, options, tsc_hz);
        } else {
          std::string engine = c.key == "skiff-sync" ? "sync" : "io_uring";
          auto spec = write_skiff_spec(options, test, engine, dir);
          if (!spec) {
            m.error = spec.error();
          } else {
            m = run_vmm(program, skiff_argv(program, *spec), test, options, tsc_hz);
          }
        }
        keep_log(options, fmt::format("{}-{}-{}", test.key, c.key, round + 1), m);
        if (m.ok) {
          fmt::print(stderr, "{} {} run {}: {} ({:.2f} s{})\n", test.key, c.key, round + 1,
                     test.iops ? fmt::format("{:.0f} IOPS", m.iops) : fmt::format("{:.1f} MiB/s", m.mib_s), m.wall_s,
                     m.tsc_s > 0 ? fmt::format(", guest TSC: {:.2f} s", m.tsc_s) : "");
        } else {
          failed = true;
          fmt::print(stderr, "{} {} run {}: FAILED: {}\n", test.key, c.key, round + 1, m.error);
          if (!m.stderr_text.empty()) fmt::print(stderr, "  its stderr:\n{}\n", tail(m.stderr_text, kStderrTailBytes));
        }
        results[test.key][c.key].runs.push_back(std::move(m));
      }
    }
  }
  print_report(options, tests, configs, results, host, tsc_hz);
  if (!options.json_path.empty()) {
    std::ofstream json(options.json_path);
    json << to_json(options, tests, configs, results, host, tsc_hz, versions).dump(2) << "\n";
    if (!json) {
      fmt::print(stderr, "skiff_bench_blk: {}: write failed\n", options.json_path);
      failed = true;
    }
  }
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ignored)) std::filesystem::remove(entry, ignored);
  rmdir(dir.c_str());
  if (own_file && !options.keep_file) unlink(options.file.c_str());
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace skiff::bench

int main(int argc, char** argv) {
  using skiff::bench::Options;
  Options options;
  CLI::App app{
      "skiff virtio-blk benchmark: 4 KiB random-read IOPS at QD1/QD32 and 128 KiB sequential-read MiB/s from a "
      "file, skiff (io_uring, sync) beside QEMU virtio-blk-pci and host fio",
      "skiff_bench_blk"};
  app.add_option("--skiff", options.skiff, "the skiff binary")->capture_default_str();
  app.add_option("--qemu", options.qemu, "the QEMU binary")->capture_default_str();
  app.add_option("--fio", options.fio, "the fio binary (skipped with a note when missing)")->capture_default_str();
  app.add_option("--guest", options.guest, "the test guest's PVH ELF (tests/guest)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--file", options.file, "an existing raw file to read (default: a new one in /var/tmp)");
  app.add_option("--file-mib", options.file_mib, "size of the file created")->check(CLI::Range(16u, 65536u))->capture_default_str();
  app.add_flag("--keep-file", options.keep_file, "do not delete the created file");
  app.add_option("--cache", options.cache, "none (O_DIRECT) or writeback, for skiff, QEMU and fio alike")
      ->check(CLI::IsMember({"none", "writeback"}))
      ->capture_default_str();
  app.add_option("--qemu-aio", options.qemu_aio, "QEMU -drive aio=")
      ->check(CLI::IsMember({"io_uring", "native", "threads"}))
      ->capture_default_str();
  app.add_option("--qemu-machine", options.qemu_machine, "QEMU -M (needs PCI through ports 0xcf8/0xcfc)")
      ->capture_default_str();
  app.add_option("--qemu-cpu", options.qemu_cpu, "QEMU -cpu")->capture_default_str();
  app.add_option("--only", options.only, "configurations to run: skiff-io_uring, skiff-sync, qemu, qemu-iothread, fio")
      ->check(CLI::IsMember({"skiff-io_uring", "skiff-sync", "qemu", "qemu-iothread", "fio"}));
  app.add_option("--qemu-blk-opts", options.qemu_blk_opts,
                 "extra options of QEMU's virtio-blk-pci device, e.g. request-merging=off");
  app.add_option("--skiff-disk-json", options.skiff_disk_json,
                 "a JSON object merged into skiff's disk section, e.g. '{\"poll_max_us\": 0}'")
      ->check([](const std::string& text) {
        auto parsed = nlohmann::json::parse(text, nullptr, false);
        return parsed.is_object() ? std::string() : std::string("not a JSON object");
      });
  app.add_option("--cpus", options.cpus,
                 "confine every VMM (all its threads) and fio to these CPUs, e.g. 1 (the one-CPU placement)");
  app.add_option("--count-qd1", options.count_qd1, "requests in the QD1 random-read run")->capture_default_str();
  app.add_option("--count-qd32", options.count_qd32, "requests in the QD32 random-read run")->capture_default_str();
  app.add_option("--count-seq", options.count_seq, "requests in the sequential-read run")->capture_default_str();
  app.add_option("--seq-depth", options.seq_depth, "queue depth of the sequential read")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  app.add_option("--runs", options.runs, "runs per configuration and test (median reported)")
      ->check(CLI::Range(1u, 100u))
      ->capture_default_str();
  app.add_option("--fio-seconds", options.fio_seconds, "fio run time per test")->capture_default_str();
  app.add_option("--memory-mib", options.memory_mib, "guest RAM (the payload uses 64-80 MiB)")
      ->check(CLI::Range(128u, 65536u))
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_s, "seconds one VM run may take")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--json", options.json_path, "also write the results as JSON to this file");
  app.add_option("--keep-logs", options.keep_logs, "directory for each run's console output and stderr")
      ->check(CLI::ExistingDirectory);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  return skiff::bench::run(options);
}
