// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "skiff/error.h"

namespace skiff {

// A whole file mapped read-only (kernel images, initrds): no copy into a heap buffer.
class MappedFile {
 public:
  // `what` names the file in errors, e.g. `boot.kernel`.
  static Result<MappedFile> open(const std::filesystem::path& path, const std::string& what);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace skiff
