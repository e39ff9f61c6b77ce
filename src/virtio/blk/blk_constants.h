// SPDX-License-Identifier: Apache-2.0
// Numbers from the virtio 1.2 specification, §5.2 "Block Device", used by the virtio-blk
// device model. Every multi-byte field is little-endian (modern interface only).
#pragma once

#include <cstdint>

namespace skiff::virtio {

// ---- Feature bits (§5.2.3); bit numbers, use feature_mask(). ------------------------------
inline constexpr unsigned kBlkFeatureSizeMax = 1;      // size_max is valid
inline constexpr unsigned kBlkFeatureSegMax = 2;       // seg_max is valid
inline constexpr unsigned kBlkFeatureGeometry = 4;     // geometry is valid (not offered)
inline constexpr unsigned kBlkFeatureRo = 5;           // the device is read-only
inline constexpr unsigned kBlkFeatureBlkSize = 6;      // blk_size is valid
inline constexpr unsigned kBlkFeatureFlush = 9;        // VIRTIO_BLK_T_FLUSH is supported
inline constexpr unsigned kBlkFeatureTopology = 10;    // topology is valid
inline constexpr unsigned kBlkFeatureConfigWce = 11;   // writeback is writable (not offered)
inline constexpr unsigned kBlkFeatureMq = 12;          // num_queues is valid
inline constexpr unsigned kBlkFeatureDiscard = 13;     // VIRTIO_BLK_T_DISCARD
inline constexpr unsigned kBlkFeatureWriteZeroes = 14; // VIRTIO_BLK_T_WRITE_ZEROES

// ---- Request types (§5.2.6). ----------------------------------------------------------------
inline constexpr uint32_t kBlkTypeIn = 0;
inline constexpr uint32_t kBlkTypeOut = 1;
inline constexpr uint32_t kBlkTypeFlush = 4;
inline constexpr uint32_t kBlkTypeGetId = 8;
inline constexpr uint32_t kBlkTypeGetLifetime = 10;  // not supported: answered UNSUPP
inline constexpr uint32_t kBlkTypeDiscard = 11;
inline constexpr uint32_t kBlkTypeWriteZeroes = 13;
inline constexpr uint32_t kBlkTypeSecureErase = 14;  // not supported: answered UNSUPP

// ---- Status byte (§5.2.6). ----------------------------------------------------------------
inline constexpr uint8_t kBlkStatusOk = 0;
inline constexpr uint8_t kBlkStatusIoErr = 1;
inline constexpr uint8_t kBlkStatusUnsupp = 2;

// struct virtio_blk_req header: le32 type, le32 reserved, le64 sector.
inline constexpr uint64_t kBlkHeaderSize = 16;
// struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags.
inline constexpr uint64_t kBlkSegmentSize = 16;
// flags.unmap (bit 0); the other 31 bits are reserved (§5.2.6.2: unknown flag → UNSUPP).
inline constexpr uint32_t kBlkSegmentFlagUnmap = 1;

// The protocol's sector is always 512 bytes, whatever blk_size says (§5.2.5).
inline constexpr uint64_t kSectorSize = 512;
inline constexpr unsigned kSectorShift = 9;
// GET_ID answers with a NUL-padded string of at most this many bytes (§5.2.6).
inline constexpr uint32_t kBlkIdBytes = 20;

// ---- struct virtio_blk_config (§5.2.4): byte offsets. ---------------------------------------
inline constexpr uint32_t kBlkConfigCapacity = 0;            // le64
inline constexpr uint32_t kBlkConfigSizeMax = 8;             // le32
inline constexpr uint32_t kBlkConfigSegMax = 12;             // le32
inline constexpr uint32_t kBlkConfigGeometry = 16;           // le16 cylinders, u8 heads, u8 sectors
inline constexpr uint32_t kBlkConfigBlkSize = 20;            // le32
inline constexpr uint32_t kBlkConfigPhysicalBlockExp = 24;   // u8
inline constexpr uint32_t kBlkConfigAlignmentOffset = 25;    // u8
inline constexpr uint32_t kBlkConfigMinIoSize = 26;          // le16, in logical blocks
inline constexpr uint32_t kBlkConfigOptIoSize = 28;          // le32, in logical blocks
inline constexpr uint32_t kBlkConfigWriteback = 32;          // u8
inline constexpr uint32_t kBlkConfigNumQueues = 34;          // le16
inline constexpr uint32_t kBlkConfigMaxDiscardSectors = 36;  // le32
inline constexpr uint32_t kBlkConfigMaxDiscardSeg = 40;      // le32
inline constexpr uint32_t kBlkConfigDiscardAlignment = 44;   // le32, in 512-byte sectors
inline constexpr uint32_t kBlkConfigMaxWriteZeroesSectors = 48;  // le32
inline constexpr uint32_t kBlkConfigMaxWriteZeroesSeg = 52;      // le32
inline constexpr uint32_t kBlkConfigWriteZeroesMayUnmap = 56;    // u8, then unused1[3]
// Up to and including unused1: secure erase and zoned fields are not offered.
inline constexpr uint32_t kBlkConfigSize = 60;

}  // namespace skiff::virtio
