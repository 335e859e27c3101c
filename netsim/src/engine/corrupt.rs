//! Corruption of one byte so that the packet still reaches the transport.
//!
//! For IPv4 packets the byte is taken from the TCP or UDP payload and the checksums are
//! recomputed afterwards, so the kernel delivers the segment and the damage is left to
//! QUIC's packet protection or TLS's record protection to detect. Other IP packets and
//! segments without payload pass unchanged.

use super::PacketFormat;
use super::rng::StageRng;
use crate::ipv4;

/// Flips bits in one byte; returns whether the packet was changed.
pub(crate) fn corrupt_one_byte(bytes: &mut [u8], format: PacketFormat, rng: &mut StageRng) -> bool {
    match format {
        PacketFormat::Datagram => {
            if bytes.is_empty() {
                return false;
            }
            let at = rng.below(bytes.len());
            bytes[at] ^= flip_mask(rng);
            true
        }
        PacketFormat::Ipv4 => {
            let Some(layout) = ipv4::transport_layout(bytes) else {
                return false;
            };
            let payload_len = layout.total_len - layout.payload_start;
            if payload_len == 0 {
                return false;
            }
            let at = layout.payload_start + rng.below(payload_len);
            bytes[at] ^= flip_mask(rng);
            ipv4::recompute_checksums(bytes, &layout);
            true
        }
    }
}

fn flip_mask(rng: &mut StageRng) -> u8 {
    // 1..=255, so the byte always changes.
    u8::try_from(rng.below(255) + 1).unwrap_or(0xff)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::engine::rng::{Direction, Stage};
    use crate::ipv4::tests::udp_packet;

    #[test]
    fn ipv4_corruption_keeps_checksums_valid() {
        let mut rng = StageRng::new(1, Direction::Uplink, Stage::Corrupt);
        let payload = [0x55u8; 100];
        for _ in 0..1000 {
            let original = udp_packet(
                Ipv4Addr::new(10, 0, 0, 1),
                1000,
                Ipv4Addr::new(10, 0, 0, 2),
                2000,
                &payload,
            );
            let mut packet = original.clone();
            assert!(corrupt_one_byte(&mut packet, PacketFormat::Ipv4, &mut rng));
            let layout = ipv4::transport_layout(&packet).unwrap();
            assert!(ipv4::checksums_valid(&packet, &layout));

            // Exactly one payload byte differs; header bytes other than checksums are intact.
            let changed: Vec<usize> = (28..packet.len())
                .filter(|&i| packet[i] != original[i])
                .collect();
            assert_eq!(changed.len(), 1);
            assert_eq!(packet[..10], original[..10]);
            assert_eq!(packet[12..26], original[12..26]);
        }
    }

    #[test]
    fn empty_payload_not_corrupted() {
        let mut rng = StageRng::new(1, Direction::Uplink, Stage::Corrupt);
        let mut packet = udp_packet(
            Ipv4Addr::new(10, 0, 0, 1),
            1,
            Ipv4Addr::new(10, 0, 0, 2),
            2,
            &[],
        );
        let original = packet.clone();
        assert!(!corrupt_one_byte(&mut packet, PacketFormat::Ipv4, &mut rng));
        assert_eq!(packet, original);
    }

    #[test]
    fn datagram_corruption_changes_one_byte() {
        let mut rng = StageRng::new(2, Direction::Downlink, Stage::Corrupt);
        let original = vec![7u8; 64];
        let mut datagram = original.clone();
        assert!(corrupt_one_byte(
            &mut datagram,
            PacketFormat::Datagram,
            &mut rng
        ));
        let changed = datagram
            .iter()
            .zip(&original)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 1);
    }
}
