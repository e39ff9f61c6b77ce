// SPDX-License-Identifier: Apache-2.0
// Numbers from the virtio 1.2 specification's network device section (§5.1) used by
// VirtioNet and its tests. Modern interface only: every multi-byte field is little-endian.
#pragma once

#include <cstdint>

namespace skiff::virtio::net {

// ---- Feature bits (§5.1.3) ------------------------------------------------------------------
// Bit numbers; use feature_mask() from virtio_constants.h for masks.
inline constexpr unsigned kFeatureCsum = 0;               // device takes partial checksums (TX)
inline constexpr unsigned kFeatureGuestCsum = 1;          // driver takes partial checksums (RX)
inline constexpr unsigned kFeatureCtrlGuestOffloads = 2;  // not offered
inline constexpr unsigned kFeatureMtu = 3;                // config.mtu is valid
inline constexpr unsigned kFeatureMac = 5;                // config.mac is valid
inline constexpr unsigned kFeatureGuestTso4 = 7;          // driver takes TSOv4 frames (RX)
inline constexpr unsigned kFeatureGuestTso6 = 8;          // driver takes TSOv6 frames (RX)
inline constexpr unsigned kFeatureGuestEcn = 9;           // driver takes TSO frames with ECN
inline constexpr unsigned kFeatureGuestUfo = 10;          // not offered
inline constexpr unsigned kFeatureHostTso4 = 11;          // device takes TSOv4 frames (TX)
inline constexpr unsigned kFeatureHostTso6 = 12;          // device takes TSOv6 frames (TX)
inline constexpr unsigned kFeatureHostEcn = 13;           // device takes TSO frames with ECN
inline constexpr unsigned kFeatureHostUfo = 14;           // not offered
inline constexpr unsigned kFeatureMrgRxbuf = 15;          // RX frames may span several chains
inline constexpr unsigned kFeatureStatus = 16;            // config.status is valid
inline constexpr unsigned kFeatureCtrlVq = 17;            // control queue present
inline constexpr unsigned kFeatureCtrlRx = 18;            // RX mode / MAC filter commands
inline constexpr unsigned kFeatureCtrlVlan = 19;          // not offered
inline constexpr unsigned kFeatureGuestAnnounce = 21;     // not offered
inline constexpr unsigned kFeatureMq = 22;                // several queue pairs
inline constexpr unsigned kFeatureCtrlMacAddr = 23;       // not offered
inline constexpr unsigned kFeatureHostUso = 56;           // not offered
inline constexpr unsigned kFeatureHashReport = 57;        // not offered
inline constexpr unsigned kFeatureGuestHdrLen = 59;       // not offered
inline constexpr unsigned kFeatureRss = 60;               // not offered
inline constexpr unsigned kFeatureRscExt = 61;            // not offered
inline constexpr unsigned kFeatureStandby = 62;           // not offered
inline constexpr unsigned kFeatureSpeedDuplex = 63;       // not offered

// ---- Device configuration layout (§5.1.4) ---------------------------------------------------
inline constexpr uint32_t kConfigMacOffset = 0;       // u8 mac[6]
inline constexpr uint32_t kConfigStatusOffset = 6;    // le16 status
inline constexpr uint32_t kConfigMaxPairsOffset = 8;  // le16 max_virtqueue_pairs
inline constexpr uint32_t kConfigMtuOffset = 10;      // le16 mtu
inline constexpr uint32_t kConfigSize = 12;           // up to and including mtu

inline constexpr uint16_t kStatusLinkUp = 1;    // VIRTIO_NET_S_LINK_UP
inline constexpr uint16_t kStatusAnnounce = 2;  // VIRTIO_NET_S_ANNOUNCE (not used)

// §5.1.4.1: max_virtqueue_pairs lies in 1..0x8000.
inline constexpr uint32_t kMaxVirtqueuePairsLimit = 0x8000;
// §5.1.4.1: the MTU offered lies in 68..65535.
inline constexpr uint32_t kMinMtu = 68;
inline constexpr uint32_t kMaxMtu = 65535;

// ---- struct virtio_net_hdr (§5.1.6) --------------------------------------------------------
// With VIRTIO_F_VERSION_1 the header always carries num_buffers: 12 bytes.
inline constexpr uint32_t kNetHeaderSize = 12;
inline constexpr uint32_t kHeaderNumBuffersOffset = 10;  // le16 num_buffers

inline constexpr uint8_t kHeaderFlagNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
inline constexpr uint8_t kHeaderFlagDataValid = 2;  // VIRTIO_NET_HDR_F_DATA_VALID
inline constexpr uint8_t kGsoNone = 0;              // VIRTIO_NET_HDR_GSO_NONE
inline constexpr uint8_t kGsoTcpv4 = 1;             // VIRTIO_NET_HDR_GSO_TCPV4
inline constexpr uint8_t kGsoUdp = 3;               // VIRTIO_NET_HDR_GSO_UDP
inline constexpr uint8_t kGsoTcpv6 = 4;             // VIRTIO_NET_HDR_GSO_TCPV6
inline constexpr uint8_t kGsoEcn = 0x80;            // VIRTIO_NET_HDR_GSO_ECN

// ---- Control virtqueue (§5.1.6.5) ----------------------------------------------------------
// struct virtio_net_ctrl { u8 class; u8 command; u8 command-specific-data[]; u8 ack; }
inline constexpr uint8_t kCtrlOk = 0;   // VIRTIO_NET_OK
inline constexpr uint8_t kCtrlErr = 1;  // VIRTIO_NET_ERR

inline constexpr uint8_t kCtrlClassRx = 0;  // VIRTIO_NET_CTRL_RX (§5.1.6.5.1)
inline constexpr uint8_t kCtrlRxPromisc = 0;
inline constexpr uint8_t kCtrlRxAllmulti = 1;
inline constexpr uint8_t kCtrlClassMac = 1;  // VIRTIO_NET_CTRL_MAC (§5.1.6.5.2)
inline constexpr uint8_t kCtrlMacTableSet = 0;
inline constexpr uint8_t kCtrlMacAddrSet = 1;
inline constexpr uint8_t kCtrlClassVlan = 2;      // VIRTIO_NET_CTRL_VLAN (not offered)
inline constexpr uint8_t kCtrlClassAnnounce = 3;  // VIRTIO_NET_CTRL_ANNOUNCE (not offered)
inline constexpr uint8_t kCtrlClassMq = 4;        // VIRTIO_NET_CTRL_MQ (§5.1.6.5.5)
inline constexpr uint8_t kCtrlMqVqPairsSet = 0;
inline constexpr uint8_t kCtrlClassGuestOffloads = 5;  // not offered

// ---- Frame limits ---------------------------------------------------------------------------
// Ethernet header plus one VLAN tag.
inline constexpr uint32_t kEthernetHeaderWithVlan = 18;
// The largest frame either direction carries: a 64 KiB GSO frame plus its Ethernet/VLAN
// header. A TX chain with more than kNetHeaderSize + kMaxFrameSize readable bytes is dropped.
inline constexpr uint32_t kMaxFrameSize = 65536 + kEthernetHeaderWithVlan;

}  // namespace skiff::virtio::net
