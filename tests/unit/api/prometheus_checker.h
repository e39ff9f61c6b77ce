// SPDX-License-Identifier: Apache-2.0
// A small checker of the Prometheus text format 0.0.4 for tests: every sample line is
// `name{label="value",...} value`, its family has a # TYPE line before it, counters end in
// _total, no series appears twice. Returns the samples by series (name plus labels as
// written).
#pragma once

#include <cctype>
#include <cstdlib>
#include <expected>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

namespace skiff::api::testing {

inline bool is_metric_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != ':') return false;
  }
  return true;
}

// Parses `{a="b",c="d"}` from the start of `text`; returns its length or 0 when malformed.
inline size_t parse_labels(std::string_view text) {
  size_t i = 1;  // past '{'
  if (i < text.size() && text[i] == '}') return i + 1;
  for (;;) {
    size_t name_start = i;
    while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_')) ++i;
    if (i == name_start || i + 1 >= text.size() || text[i] != '=' || text[i + 1] != '"') return 0;
    i += 2;
    while (i < text.size() && text[i] != '"') {
      if (text[i] == '\n') return 0;
      if (text[i] == '\\') {
        if (i + 1 >= text.size() || (text[i + 1] != '\\' && text[i + 1] != '"' && text[i + 1] != 'n')) return 0;
        ++i;
      }
      ++i;
    }
    if (i >= text.size()) return 0;
    ++i;  // closing quote
    if (i < text.size() && text[i] == ',') {
      ++i;
      continue;
    }
    if (i < text.size() && text[i] == '}') return i + 1;
    return 0;
  }
}

inline std::expected<std::map<std::string, double>, std::string> parse_prometheus_text(std::string_view text) {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;  // family -> type
  if (!text.empty() && text.back() != '\n') return std::unexpected("the text does not end with a newline");
  size_t line_number = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_number;
    auto fail = [&](std::string_view why) {
      return std::unexpected("line " + std::to_string(line_number) + ": " + std::string(why) + ": " +
                             std::string(line));
    };
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words{std::string(line)};
      std::string hash, keyword, name, rest;
      words >> hash >> keyword >> name;
      if (keyword == "TYPE") {
        words >> rest;
        static const std::set<std::string> kTypes = {"counter", "gauge", "summary", "histogram", "untyped"};
        if (!is_metric_name(name) || kTypes.count(rest) == 0) return fail("bad TYPE line");
        if (types.count(name) != 0) return fail("second TYPE for a family");
        if (rest == "counter" && !name.ends_with("_total")) return fail("counter name without _total");
        types[name] = rest;
      } else if (keyword == "HELP" && !is_metric_name(name)) {
        return fail("bad HELP line");
      }
      continue;
    }
    size_t name_end = 0;
    while (name_end < line.size() && line[name_end] != '{' && line[name_end] != ' ') ++name_end;
    std::string name(line.substr(0, name_end));
    if (!is_metric_name(name)) return fail("bad metric name");
    size_t value_start = name_end;
    if (value_start < line.size() && line[value_start] == '{') {
      size_t length = parse_labels(line.substr(value_start));
      if (length == 0) return fail("bad labels");
      value_start += length;
    }
    if (value_start >= line.size() || line[value_start] != ' ') return fail("no value");
    std::string series(line.substr(0, value_start));
    std::string value_text(line.substr(value_start + 1));
    char* parse_end = nullptr;
    double value = std::strtod(value_text.c_str(), &parse_end);
    if (value_text.empty() || parse_end != value_text.c_str() + value_text.size()) return fail("bad value");
    std::string family = name;
    if (types.count(family) == 0) {
      for (std::string_view suffix : {"_sum", "_count", "_bucket"}) {
        if (name.ends_with(suffix)) {
          std::string base = name.substr(0, name.size() - suffix.size());
          if (types.count(base) != 0 && (types[base] == "summary" || types[base] == "histogram")) family = base;
        }
      }
    }
    if (types.count(family) == 0) return fail("sample without a TYPE line");
    if (!samples.emplace(series, value).second) return fail("series repeated");
  }
  return samples;
}

}  // namespace skiff::api::testing
