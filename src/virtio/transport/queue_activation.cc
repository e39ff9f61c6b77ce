// SPDX-License-Identifier: Apache-2.0
#include "virtio/transport/queue_activation.h"

namespace skiff::virtio {

Result<std::vector<Queue*>> activate_queues(const std::vector<std::unique_ptr<Queue>>& queues,
                                            const GuestMemory& memory, uint64_t driver_features,
                                            const std::function<void()>& on_fatal_error) {
  std::vector<Queue*> list;
  list.reserve(queues.size());
  for (const auto& queue : queues) {
    queue->set_fatal_error_handler([on_fatal_error](const Error&) { on_fatal_error(); });
    if (queue->ready()) {
      if (auto activated = queue->activate(memory, driver_features); !activated) {
        return std::unexpected(activated.error());
      }
    }
    list.push_back(queue.get());
  }
  return list;
}

}  // namespace skiff::virtio
