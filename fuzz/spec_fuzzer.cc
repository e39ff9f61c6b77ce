// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the user-facing spec: skiff::parse_spec() (src/config/spec_json.cc)
// and the host-independent rules it applies (spec_rules.cc, device_rules.cc), plus the small
// text parsers the spec and the CLI use: parse_mac/format_mac, parse_memory_size
// (spec_overrides.cc), parse_cpu_list, printable, escape_pointer_token and closest_key.
// validate_spec() is left out: it looks at the host (files, CPUs, NUMA nodes).
//
// Input: the JSON text itself, so the seeds are plain spec files (configs/*.json and the
// examples of docs/config.md, copied by fuzz/corpus/make_spec_corpus.py). The same bytes
// also go to the small parsers.
// Invariants: a spec that parses satisfies the rules again, serialises with spec_to_json()
// into JSON that parses back to the same serialisation (a fixed point), errors name a JSON
// pointer, a parsed MAC formats back to the text (lower-cased), and printable() leaves no
// control character.

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "config/spec_overrides.h"
#include "config/spec_rules.h"
#include "fuzz_support.h"
#include "skiff/spec.h"

namespace {

using skiff::fuzz::check;

void fuzz_spec(std::string_view text) {
  const std::filesystem::path base_dir = "/fuzz/base";
  auto spec = skiff::parse_spec(text, base_dir);
  if (!spec) {
    check(!spec.error().message().empty());
    return;
  }
  check(skiff::config::check_spec_rules(*spec).has_value());
  check(skiff::config::check_device_rules(*spec).has_value());
  const std::string json = skiff::spec_to_json(*spec);
  auto again = skiff::parse_spec(json, base_dir);
  if (!again) {
    // Printed so a reproducer says which field did not survive the round trip.
    fprintf(stderr, "spec_to_json output does not parse: %s\n%s\n", again.error().message().c_str(), json.c_str());
    check(false);
  }
  check(skiff::spec_to_json(*again) == json);
}

void fuzz_text_parsers(std::string_view text) {
  if (auto mac = skiff::parse_mac(text)) {
    std::string lower(text);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    check(skiff::format_mac(*mac) == lower);
  }
  if (auto mib = skiff::config::parse_memory_size(text)) check(*mib != 0);
  if (auto cpus = skiff::config::parse_cpu_list(text)) check(cpus->size() <= 1024 * 1024);
  for (char c : skiff::config::printable(text)) check(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
  const std::string token = skiff::config::escape_pointer_token(text);
  check(token.find('/') == std::string::npos);
  static constexpr std::string_view kKeys[] = {"name", "machine", "boot", "serial", "rng", "disks", "nets",
                                               "balloon", "api", "memory_mib", "hugepages"};
  if (auto key = skiff::config::closest_key(text.substr(0, 64), kKeys)) check(!key->empty());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  skiff::fuzz::quiet_logs_unless_verbose();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SAFETY: libFuzzer's bytes viewed as chars; same size, no alignment requirement.
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz_spec(text);
  fuzz_text_parsers(text);
  return 0;
}
