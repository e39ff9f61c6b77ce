// SPDX-License-Identifier: Apache-2.0
// skiff_bench_balloon: how fast a balloon inflation gives memory back to the host, skiff
// beside QEMU's virtio-balloon-pci, both running the same guest payload (tests/guest/balloon.c
// with skiff.balloon=<region>,once) in one run.
//
// The guest writes every page of a region (so the VMM has it resident), waits for the
// balloon target, sends that many pages' PFNs on the inflate queue (2048 per buffer, polling
// the used ring) and reports. skiff gets the target from the spec (balloon.target_mib);
// QEMU through QMP's `balloon` command, sent when the guest says the region is touched.
// Either way the clock runs from the guest's `target=` line (it has seen the target) to the
// first byte of its `inflated=` line, and the VMM's resident guest memory is read from
// /proc/<pid>/smaps at both moments:
//
//   MiB/s reclaimed = (RSS of guest RAM at the start - at the end) / elapsed
//   MiB/s inflated  = balloon size / elapsed (what the guest handed over, released or not)
//
// Not a ctest test: numbers for docs/benchmarks.md.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_process.h"
#include "smaps.h"

namespace skiff::bench {
namespace {

struct Options {
  std::string skiff = "skiff";
  std::string qemu = "qemu-system-x86_64";
  std::string guest;
  uint64_t region_mib = 256;
  uint64_t inflate_mib = 192;
  unsigned runs = 3;
  double timeout_s = 120;
  std::string qemu_cpu = "host,-arch-capabilities";
  std::optional<std::string> json_path;
  std::vector<std::string> only;
};

uint64_t memory_mib(const Options& options) { return options.region_mib + 48; }

std::string guest_cmdline(const Options& options) {
  return fmt::format("console=ttyS0 skiff.virtio=1 skiff.balloon={},once skiff.exit=0", options.region_mib);
}

// The VMM process: our only child.
std::optional<pid_t> child_pid() {
  const pid_t self = getpid();
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text;
    std::getline(stat, text);
    // pid (comm) state ppid ...: comm may hold spaces, so parse after the last ')'.
    auto close = text.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(text.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == self) {
      return static_cast<pid_t>(std::stoi(name));
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> guest_rss_kib(pid_t pid, uint64_t guest_bytes) {
  auto mappings = read_smaps(pid);
  if (!mappings) return std::nullopt;
  auto split = split_guest_memory(*mappings, guest_bytes);
  if (!split) return std::nullopt;
  return split->rss_guest_kib;
}

// QMP (QEMU Machine Protocol): one JSON object per line each way.
class Qmp {
 public:
  static std::expected<Qmp, std::string> connect(const std::string& path) {
    Qmp qmp;
    qmp.fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (qmp.fd_.get() < 0) return std::unexpected(errno_text("socket"));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
    // SAFETY: sockaddr_un is a sockaddr for AF_UNIX.
    if (::connect(qmp.fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      return std::unexpected(errno_text("connect " + path));
    }
    if (auto greeting = qmp.read_reply(); !greeting) return std::unexpected(greeting.error());
    if (auto caps = qmp.execute({{"execute", "qmp_capabilities"}}); !caps) return std::unexpected(caps.error());
    return qmp;
  }

  std::expected<nlohmann::json, std::string> execute(const nlohmann::json& command) {
    const std::string line = command.dump() + "\n";
    if (::write(fd_.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      return std::unexpected(errno_text("QMP write"));
    }
    // Events may come before the reply.
    for (int i = 0; i < 32; ++i) {
      auto reply = read_reply();
      if (!reply) return reply;
      if (reply->contains("return")) return reply;
      if (reply->contains("error")) return std::unexpected(fmt::format("QMP: {}", reply->dump()));
    }
    return std::unexpected("QMP: no reply");
  }

 private:
  std::expected<nlohmann::json, std::string> read_reply() {
    for (;;) {
      auto newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        auto parsed = nlohmann::json::parse(line, nullptr, false);
        if (parsed.is_discarded()) return std::unexpected("QMP: not JSON: " + line);
        return parsed;
      }
      char chunk[4096];
      ssize_t n = ::read(fd_.get(), chunk, sizeof(chunk));
      if (n <= 0) return std::unexpected(n == 0 ? std::string("QMP: closed") : errno_text("QMP read"));
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  UniqueFd fd_;
  std::string buffer_;
};

struct Sample {
  std::string error;
  double seconds = 0;
  uint64_t rss_start_kib = 0;
  uint64_t rss_end_kib = 0;
  uint64_t inflated_pages = 0;
  std::map<std::string, ThreadStat> threads;
  double reclaimed_mib() const {
    return rss_start_kib > rss_end_kib ? static_cast<double>(rss_start_kib - rss_end_kib) / 1024 : 0;
  }
};

Sample run_one(const std::string& vmm, const Options& options, const std::filesystem::path& work) {
  Sample sample;
  const uint64_t guest_bytes = memory_mib(options) << 20;
  const uint64_t target_pages = options.inflate_mib * 256;
  std::string program;
  std::vector<std::string> argv;
  const std::string qmp_path = (work / "qmp.sock").string();
  if (vmm == "skiff") {
    program = options.skiff;
    const auto spec_path = work / "balloon-bench.json";
    nlohmann::json spec = {
        {"name", "balloonbench"},
        {"machine", {{"vcpus", 1}, {"memory_mib", memory_mib(options)}}},
        {"boot", {{"kernel", options.guest}, {"cmdline", guest_cmdline(options)}}},
        {"serial", {{"mode", "stdout"}, {"input", false}}},
        {"balloon", {{"target_mib", options.inflate_mib}}},
    };
    std::ofstream(spec_path) << spec.dump(2);
    argv = {program, "run", spec_path.string()};
  } else {
    program = options.qemu;
    std::filesystem::remove(qmp_path);
    argv = {program, "-M", "pc", "-accel", "kvm", "-cpu", options.qemu_cpu, "-m",
            fmt::format("{}M", memory_mib(options)), "-smp", "1", "-nodefaults", "-no-user-config", "-nographic",
            "-serial", "stdio", "-no-reboot", "-name", "balloonbench,debug-threads=on", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel",
            options.guest, "-append", guest_cmdline(options), "-device", "virtio-balloon-pci,disable-legacy=on",
            "-qmp", fmt::format("unix:{},server=on,wait=off", qmp_path)};
  }

  std::optional<pid_t> pid;
  bool target_sent = vmm == "skiff";  // skiff's comes from the spec
  std::string hook_error;
  MarkedRunHooks hooks;
  hooks.on_output = [&](const std::string& console) {
    if (target_sent || console.find("virtio-balloon touched=") == std::string::npos) return;
    target_sent = true;
    auto qmp = Qmp::connect(qmp_path);
    if (!qmp) {
      hook_error = qmp.error();
      return;
    }
    // QEMU's `balloon` takes the guest's new size, not the balloon's.
    auto reply = qmp->execute(
        {{"execute", "balloon"}, {"arguments", {{"value", (memory_mib(options) - options.inflate_mib) << 20}}}});
    if (!reply) hook_error = reply.error();
  };
  hooks.on_start = [&] {
    pid = child_pid();
    if (auto rss = pid ? guest_rss_kib(*pid, guest_bytes) : std::nullopt) sample.rss_start_kib = *rss;
  };
  hooks.on_end = [&] {
    if (auto rss = pid ? guest_rss_kib(*pid, guest_bytes) : std::nullopt) sample.rss_end_kib = *rss;
  };
  const std::string start_line = fmt::format("SKIFF-GUEST virtio-balloon target={} held=0\n", target_pages);
  MarkedRun run = run_marked(program, argv, start_line, "SKIFF-GUEST virtio-balloon inflated=", options.timeout_s,
                             hooks);
  sample.error = !hook_error.empty() ? hook_error : run.error;
  if (!sample.error.empty()) {
    sample.error += fmt::format("\n--- console ---\n{}\n--- stderr ---\n{}", tail(run.console, 1500),
                                tail(run.stderr_text, 1500));
  }
  if (sample.error.empty() && (sample.rss_start_kib == 0 || sample.rss_end_kib == 0)) {
    sample.error = "could not read the guest RAM mapping's RSS from /proc/<pid>/smaps";
  }
  sample.seconds = run.wall_s;
  sample.threads = run.threads;
  sample.inflated_pages = field_u64(fields_of(run.end_line), "inflated");
  if (sample.error.empty() && sample.inflated_pages != target_pages) {
    sample.error = fmt::format("the guest inflated {} pages, not {}", sample.inflated_pages, target_pages);
  }
  return sample;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

int run(const Options& options) {
  char dir_template[] = "/tmp/skiff-balloon-bench-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    fmt::print(stderr, "skiff_bench_balloon: {}\n", errno_text("mkdtemp"));
    return 1;
  }
  const std::filesystem::path work = dir_template;
  std::vector<std::string> vmms = {"skiff", "qemu"};
  if (!options.only.empty()) vmms = options.only;

  fmt::print("virtio-balloon inflation: {} MiB of a touched {} MiB region, guest RAM {} MiB, anonymous memory\n",
             options.inflate_mib, options.region_mib, memory_mib(options));
  fmt::print("host: {}; {} run(s) each (median)\n\n", describe_host(), options.runs);

  nlohmann::json report = {{"host", describe_host()},
                           {"inflate_mib", options.inflate_mib},
                           {"region_mib", options.region_mib},
                           {"results", nlohmann::json::object()}};
  struct Row {
    std::string vmm;
    double seconds = 0, reclaimed_mib = 0, reclaimed_rate = 0, inflate_rate = 0;
    std::string error;
    std::map<std::string, ThreadStat> threads;
  };
  std::vector<Row> rows;
  for (const std::string& vmm : vmms) {
    std::vector<double> seconds, reclaimed, reclaim_rates, inflate_rates;
    Row row;
    row.vmm = vmm;
    for (unsigned i = 0; i < options.runs; ++i) {
      Sample s = run_one(vmm, options, work);
      if (!s.error.empty()) {
        row.error = s.error;
        fmt::print(stderr, "{} run {}: {}\n", vmm, i + 1, s.error);
        continue;
      }
      seconds.push_back(s.seconds);
      reclaimed.push_back(s.reclaimed_mib());
      reclaim_rates.push_back(s.reclaimed_mib() / s.seconds);
      inflate_rates.push_back(static_cast<double>(options.inflate_mib) / s.seconds);
      row.threads = s.threads;
      fmt::print("  {} run {}: {:.1f} ms, guest RSS {} -> {} KiB ({:.1f} MiB released)\n", vmm, i + 1,
                 s.seconds * 1000, s.rss_start_kib, s.rss_end_kib, s.reclaimed_mib());
    }
    if (!seconds.empty()) {
      row.error.clear();
      row.seconds = median(seconds);
      row.reclaimed_mib = median(reclaimed);
      row.reclaimed_rate = median(reclaim_rates);
      row.inflate_rate = median(inflate_rates);
    }
    report["results"][vmm] = {{"seconds", row.seconds},
                              {"reclaimed_mib", row.reclaimed_mib},
                              {"reclaimed_mib_per_s", row.reclaimed_rate},
                              {"inflated_mib_per_s", row.inflate_rate},
                              {"error", row.error}};
    rows.push_back(row);
  }

  fmt::print("\n| VMM | inflate time (ms) | guest RSS released (MiB) | MiB/s reclaimed | MiB/s inflated |\n");
  fmt::print("|---|---|---|---|---|\n");
  for (const Row& row : rows) {
    if (!row.error.empty()) {
      fmt::print("| {} | failed: {} | | | |\n", row.vmm, first_line(row.error));
      continue;
    }
    fmt::print("| {} | {:.1f} | {:.1f} | {:.0f} | {:.0f} |\n", row.vmm, row.seconds * 1000, row.reclaimed_mib,
               row.reclaimed_rate, row.inflate_rate);
  }
  // QEMU serves the balloon's queues on the vCPU thread (CPU 0/KVM), skiff on skiff-balloon.
  fmt::print("\nwhere the time goes (CPU time between the markers, 10 ms resolution; voluntary switches):\n");
  for (const Row& row : rows) {
    for (const auto& [name, stat] : row.threads) {
      if (stat.cpu_s < 0.0005 && stat.voluntary == 0) continue;
      fmt::print("  {}: {} {:.1f} ms CPU, {} voluntary switches\n", row.vmm, name, stat.cpu_s * 1000, stat.voluntary);
    }
  }
  if (rows.size() == 2 && rows[0].error.empty() && rows[1].error.empty() && rows[1].reclaimed_rate > 0) {
    fmt::print("\nskiff / QEMU, MiB/s reclaimed: {:.2f}x\n", rows[0].reclaimed_rate / rows[1].reclaimed_rate);
  }
  if (options.json_path) std::ofstream(*options.json_path) << report.dump(2) << "\n";
  std::filesystem::remove_all(work);
  bool failed = std::any_of(rows.begin(), rows.end(), [](const Row& row) { return !row.error.empty(); });
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace skiff::bench

int main(int argc, char** argv) {
  skiff::bench::Options options;
  CLI::App app{"skiff virtio-balloon benchmark: MiB/s of guest memory reclaimed during inflation, skiff beside "
               "QEMU virtio-balloon-pci, same guest payload"};
  app.add_option("--skiff", options.skiff, "the skiff binary")->capture_default_str();
  app.add_option("--qemu", options.qemu, "the QEMU binary")->capture_default_str();
  app.add_option("--guest", options.guest, "the test guest's PVH ELF (tests/guest)")->required()->check(CLI::ExistingFile);
  app.add_option("--region-mib", options.region_mib, "MiB the guest touches first")
      ->check(CLI::Range(uint64_t{16}, uint64_t{2048}))
      ->capture_default_str();
  app.add_option("--inflate-mib", options.inflate_mib, "MiB the balloon takes (at most the region)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{2048}))
      ->capture_default_str();
  app.add_option("--runs", options.runs, "runs per VMM (median reported)")
      ->check(CLI::Range(1u, 100u))
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_s, "seconds one VM run may take")->capture_default_str();
  app.add_option("--qemu-cpu", options.qemu_cpu, "QEMU -cpu")->capture_default_str();
  app.add_option("--only", options.only, "VMMs to run: skiff, qemu")->check(CLI::IsMember({"skiff", "qemu"}));
  app.add_option("--json", options.json_path, "also write the results as JSON to this file");
  CLI11_PARSE(app, argc, argv);
  if (options.inflate_mib > options.region_mib) {
    fmt::print(stderr, "--inflate-mib ({}) must not exceed --region-mib ({})\n", options.inflate_mib,
               options.region_mib);
    return 2;
  }
  options.guest = std::filesystem::absolute(options.guest).string();  // the spec lives elsewhere
  if (auto skiff = skiff::bench::resolve_program(options.skiff); skiff) options.skiff = *skiff;
  if (auto qemu = skiff::bench::resolve_program(options.qemu); qemu) options.qemu = *qemu;
  return skiff::bench::run(options);
}
