// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "skiff/vm.h"
#include "virtio/balloon/virtio_balloon.h"

namespace skiff {

// The public view of a balloon (Vm::balloon(), the stats and the API): target, actual,
// what reclaiming gave back to the host, and the guest's latest memory statistics.
BalloonStatus balloon_status(const virtio::balloon::VirtioBalloon& balloon);

}  // namespace skiff
