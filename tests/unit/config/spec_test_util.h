// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the spec tests: a temporary directory and spec-text builders.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace skiff::testing_util {

// A fresh directory under $TMPDIR, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "skiff-spec-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed";
    }
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }

  const std::filesystem::path& path() const { return path_; }

  // Writes `content` to `name` inside the directory and returns its full path.
  std::filesystem::path write(const std::string& name, std::string_view content) const {
    std::filesystem::path file = path_ / name;
    std::ofstream stream(file, std::ios::binary);
    stream << content;
    return file;
  }

 private:
  std::filesystem::path path_;
};

// A complete spec with `machine_body` as the members of "machine".
inline std::string spec_with_machine(std::string_view machine_body) {
  return fmt::format(R"({{"boot": {{"kernel": "vmlinuz"}}, "machine": {{{}}}}})", machine_body);
}

// A complete spec with `boot_body` as the members of "boot".
inline std::string spec_with_boot(std::string_view boot_body) {
  return fmt::format(R"({{"boot": {{{}}}}})", boot_body);
}

// A complete spec with `serial_body` as the members of "serial".
inline std::string spec_with_serial(std::string_view serial_body) {
  return fmt::format(R"({{"boot": {{"kernel": "vmlinuz"}}, "serial": {{{}}}}})", serial_body);
}

// A complete spec with extra top-level members.
inline std::string spec_with_top(std::string_view members) {
  return fmt::format(R"({{"boot": {{"kernel": "vmlinuz"}}, {}}})", members);
}

}  // namespace skiff::testing_util
