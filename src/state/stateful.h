// SPDX-License-Identifier: Apache-2.0
// The device-state seam: anything whose state a guest can observe (legacy devices, virtio
// devices and their transports, queues, the in-kernel interrupt controller and timer, each
// vCPU) can be asked for it as a StateBlob and rebuilt from one.
//
// Contract:
//  - save_state() describes the object completely enough that restore_state() on a fresh
//    object built from the same spec makes it behave identically from then on: same
//    register values, same pending interrupts, same progress through the guest's rings.
//    What the spec already says (a disk's path, a MAC address) is not saved; what the
//    guest or the host changed since creation is.
//  - An object with worker threads is quiesced by its owner before save_state() (virtio
//    devices: VirtioDevice::pause(), which completes requests in flight), so the blob
//    never describes a half-done request.
//  - restore_state() is called on an object that has not run yet. It checks the blob
//    (kind, version, every field's range: the blob is untrusted input) and either applies
//    all of it or returns an error and leaves the object unusable for the restore; it
//    never crashes or reads out of range on a bad blob.
//  - Each kind writes its current layout version; restore accepts that and every older
//    one it still knows.
#pragma once

#include "skiff/error.h"
#include "state/state_blob.h"

namespace skiff::state {

class Stateful {
 public:
  virtual ~Stateful() = default;
  virtual Result<StateBlob> save_state() const = 0;
  virtual Result<void> restore_state(const StateBlob& blob) = 0;
};

}  // namespace skiff::state
