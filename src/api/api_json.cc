// SPDX-License-Identifier: Apache-2.0
#include "api/api_json.h"

namespace skiff::api {

using nlohmann::json;

json vm_info_to_json(VmState state, const VmSpec& spec, double uptime_s) {
  // spec_to_json() is the one serialiser of specs; parsing its output back cannot fail,
  // but a discarded value (instead of an exception) keeps the server safe if it ever did.
  json spec_json = json::parse(spec_to_json(spec), nullptr, /*allow_exceptions=*/false);
  return json{{"state", to_string(state)}, {"uptime_s", uptime_s}, {"spec", std::move(spec_json)}};
}

namespace {

json disk_to_json(const DiskStats& disk) {
  json out{{"id", disk.id},
           {"reads", disk.reads},
           {"writes", disk.writes},
           {"read_bytes", disk.read_bytes},
           {"write_bytes", disk.write_bytes},
           {"flushes", disk.flushes},
           {"discards", disk.discards},
           {"write_zeroes", disk.write_zeroes},
           {"errors", disk.errors},
           {"unsupported", disk.unsupported},
           {"throttled", disk.throttled}};
  if (disk.latency) {
    out["latency"] = json{{"requests", disk.latency->requests},
                          {"total_ns", disk.latency->total_ns},
                          {"max_ns", disk.latency->max_ns}};
  }
  if (disk.polling) {
    out["polling"] = json{{"episodes", disk.polling->episodes},
                          {"hits", disk.polling->hits},
                          {"contended", disk.polling->contended},
                          {"window_ns", disk.polling->window_ns}};
  }
  return out;
}

json net_to_json(const NetStats& net) {
  return json{{"id", net.id},
              {"rx_bytes", net.rx_bytes},
              {"rx_packets", net.rx_packets},
              {"rx_dropped", net.rx_dropped},
              {"tx_bytes", net.tx_bytes},
              {"tx_packets", net.tx_packets},
              {"tx_dropped", net.tx_dropped}};
}

json balloon_to_json(const BalloonStats& balloon) {
  json out{{"target_mib", balloon.target_mib},
           {"actual_mib", balloon.actual_mib},
           {"bytes_released", balloon.bytes_released},
           {"guest_stats", balloon.guest_stats},
           {"guest_stats_sets", balloon.guest_stats_sets}};
  if (balloon.guest_stats_age_s) out["guest_stats_age_s"] = *balloon.guest_stats_age_s;
  return out;
}

json vsock_to_json(const VsockStats& vsock) {
  json connections = json::array();
  for (const VsockConnectionStats& c : vsock.connections) {
    connections.push_back(json{{"host_port", c.host_port},
                               {"guest_port", c.guest_port},
                               {"initiator", c.initiator},
                               {"state", c.state},
                               {"bytes_to_guest", c.bytes_to_guest},
                               {"bytes_to_host", c.bytes_to_host}});
  }
  return json{{"guest_cid", vsock.guest_cid},
              {"host_connections", vsock.host_connections},
              {"guest_connections", vsock.guest_connections},
              {"refused", vsock.refused},
              {"resets_sent", vsock.resets_sent},
              {"resets_received", vsock.resets_received},
              {"bytes_to_guest", vsock.bytes_to_guest},
              {"bytes_to_host", vsock.bytes_to_host},
              {"bad_packets", vsock.bad_packets},
              {"connections", std::move(connections)}};
}

}  // namespace

json stats_to_json(const VmStats& stats) {
  json vcpus = json::array();
  for (const VcpuStats& vcpu : stats.vcpus) vcpus.push_back(json{{"id", vcpu.id}, {"exits", vcpu.exits}});
  json disks = json::array();
  for (const DiskStats& disk : stats.disks) disks.push_back(disk_to_json(disk));
  json nets = json::array();
  for (const NetStats& net : stats.nets) nets.push_back(net_to_json(net));
  json out{{"state", to_string(stats.state)},
           {"uptime_s", stats.uptime_s},
           {"vcpus", std::move(vcpus)},
           {"disks", std::move(disks)},
           {"nets", std::move(nets)}};
  out["balloon"] = stats.balloon ? balloon_to_json(*stats.balloon) : json(nullptr);
  out["vsock"] = stats.vsock ? vsock_to_json(*stats.vsock) : json(nullptr);
  return out;
}

std::string error_body(std::string_view message) {
  // Messages may quote request bytes: replace invalid UTF-8 rather than throw.
  return json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace skiff::api
