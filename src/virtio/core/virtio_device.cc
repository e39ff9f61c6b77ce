// SPDX-License-Identifier: Apache-2.0
#include "virtio/core/virtio_device.h"

#include <algorithm>
#include <cstring>

namespace skiff::virtio {

void read_config_bytes(std::span<const uint8_t> config, uint64_t offset, std::span<uint8_t> out) {
  std::fill(out.begin(), out.end(), uint8_t{0});
  if (offset >= config.size()) return;
  size_t n = std::min<uint64_t>(out.size(), config.size() - offset);
  if (n != 0) std::memcpy(out.data(), config.data() + offset, n);
}

size_t write_config_bytes(std::span<uint8_t> config, uint64_t offset,
                          std::span<const uint8_t> data) {
  if (offset >= config.size()) return 0;
  size_t n = std::min<uint64_t>(data.size(), config.size() - offset);
  if (n != 0) std::memcpy(config.data() + offset, data.data(), n);
  return n;
}

}  // namespace skiff::virtio
