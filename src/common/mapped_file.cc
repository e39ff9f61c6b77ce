// SPDX-License-Identifier: Apache-2.0
#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "common/unique_fd.h"

namespace skiff {

Result<MappedFile> MappedFile::open(const std::filesystem::path& path, const std::string& what) {
  auto fail = [&](const std::string& reason, int err) {
    return std::unexpected(Error(ErrorKind::kConfig,
                                 fmt::format("{} \"{}\": {}", what, path.string(), reason), err));
  };
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return fail(std::strerror(errno), errno);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return fail(std::strerror(errno), errno);
  if (!S_ISREG(st.st_mode)) return fail("not a regular file", EINVAL);
  if (st.st_size == 0) return fail("the file is empty", EINVAL);
  // SAFETY: a private read-only mapping of the whole file, unmapped in the destructor.
  void* data = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (data == MAP_FAILED) return fail(fmt::format("mmap: {}", std::strerror(errno)), errno);
  MappedFile file;
  file.data_ = static_cast<const uint8_t*>(data);
  file.size_ = static_cast<size_t>(st.st_size);
  return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace skiff
