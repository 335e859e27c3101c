//! Just enough IPv4, TCP and UDP parsing to rewrite addresses and ports and to recompute
//! checksums after a change. Packets that are not IPv4, are truncated or are fragments are
//! reported as such, and callers pass them on untouched.

use std::net::Ipv4Addr;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Offsets of the parts of one IPv4 packet that carries a whole TCP or UDP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// IP protocol number.
    pub protocol: u8,
    /// Length of the IPv4 header in bytes.
    pub ip_header_len: usize,
    /// Offset of the first byte after the TCP or UDP header.
    pub payload_start: usize,
    /// Total length from the IPv4 header, which may be shorter than the buffer.
    pub total_len: usize,
}

/// Parses the layout of an unfragmented IPv4 packet carrying TCP or UDP.
///
/// Returns `None` for anything else (IPv6, ICMP, fragments, truncated headers), which the
/// caller forwards unchanged.
pub fn transport_layout(packet: &[u8]) -> Option<Layout> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ip_header_len = usize::from(packet[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if ip_header_len < 20 || total_len < ip_header_len || total_len > packet.len() {
        return None;
    }

    // A fragment other than the first has no transport header, and a first fragment carries
    // only part of the segment, so neither can be checksummed or rewritten here.
    let flags_offset = u16::from_be_bytes([packet[6], packet[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    if more_fragments || flags_offset & 0x1fff != 0 {
        return None;
    }

    let protocol = packet[9];
    let transport_header_len = match protocol {
        PROTO_TCP => {
            let offset = ip_header_len + 12;
            if total_len <= offset {
                return None;
            }
            usize::from(packet[offset] >> 4) * 4
        }
        PROTO_UDP => 8,
        _ => return None,
    };
    let payload_start = ip_header_len + transport_header_len;
    if transport_header_len < 8 || payload_start > total_len {
        return None;
    }
    Some(Layout {
        protocol,
        ip_header_len,
        payload_start,
        total_len,
    })
}

/// Returns the source address.
pub fn source(packet: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15])
}

/// Returns the destination address.
pub fn destination(packet: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19])
}

/// Overwrites the source address. Checksums must be recomputed afterwards.
pub fn set_source(packet: &mut [u8], address: Ipv4Addr) {
    packet[12..16].copy_from_slice(&address.octets());
}

/// Overwrites the destination address. Checksums must be recomputed afterwards.
pub fn set_destination(packet: &mut [u8], address: Ipv4Addr) {
    packet[16..20].copy_from_slice(&address.octets());
}

/// Returns the transport source port.
pub fn source_port(packet: &[u8], layout: &Layout) -> u16 {
    let at = layout.ip_header_len;
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

/// Returns the transport destination port.
pub fn destination_port(packet: &[u8], layout: &Layout) -> u16 {
    let at = layout.ip_header_len + 2;
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

/// Overwrites the transport source port. Checksums must be recomputed afterwards.
pub fn set_source_port(packet: &mut [u8], layout: &Layout, port: u16) {
    let at = layout.ip_header_len;
    packet[at..at + 2].copy_from_slice(&port.to_be_bytes());
}

/// Overwrites the transport destination port. Checksums must be recomputed afterwards.
pub fn set_destination_port(packet: &mut [u8], layout: &Layout, port: u16) {
    let at = layout.ip_header_len + 2;
    packet[at..at + 2].copy_from_slice(&port.to_be_bytes());
}

/// Recomputes the IPv4 header checksum and the TCP or UDP checksum (RFC 791, RFC 793, RFC 768).
///
/// A UDP checksum of zero means "no checksum" in IPv4 and is left at zero.
pub fn recompute_checksums(packet: &mut [u8], layout: &Layout) {
    let ihl = layout.ip_header_len;
    packet[10..12].copy_from_slice(&[0, 0]);
    let header_sum = fold(sum_words(&packet[..ihl], 0));
    packet[10..12].copy_from_slice(&(!header_sum).to_be_bytes());

    let checksum_at = match layout.protocol {
        PROTO_TCP => ihl + 16,
        PROTO_UDP => ihl + 6,
        _ => return,
    };
    if layout.protocol == PROTO_UDP && packet[checksum_at..checksum_at + 2] == [0, 0] {
        return;
    }
    packet[checksum_at..checksum_at + 2].copy_from_slice(&[0, 0]);
    let segment_len = layout.total_len - ihl;
    let mut sum = sum_words(&packet[12..20], 0);
    sum += u32::from(layout.protocol);
    sum += u32::try_from(segment_len).unwrap_or(u32::MAX);
    sum = sum_words(&packet[ihl..layout.total_len], sum);
    let mut checksum = !fold(sum);
    // RFC 768: a computed UDP checksum of zero is sent as all ones.
    if layout.protocol == PROTO_UDP && checksum == 0 {
        checksum = 0xffff;
    }
    packet[checksum_at..checksum_at + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// Returns true when the IPv4 header checksum and the TCP or UDP checksum are valid.
pub fn checksums_valid(packet: &[u8], layout: &Layout) -> bool {
    let ihl = layout.ip_header_len;
    if fold(sum_words(&packet[..ihl], 0)) != 0xffff {
        return false;
    }
    let mut sum = sum_words(&packet[12..20], 0);
    sum += u32::from(layout.protocol);
    sum += u32::try_from(layout.total_len - ihl).unwrap_or(u32::MAX);
    sum = sum_words(&packet[ihl..layout.total_len], sum);
    fold(sum) == 0xffff
}

fn sum_words(bytes: &[u8], mut sum: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).unwrap_or(0xffff)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an IPv4 UDP packet with valid checksums.
    pub(crate) fn udp_packet(
        source_addr: Ipv4Addr,
        source_port: u16,
        destination_addr: Ipv4Addr,
        destination_port: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut packet = vec![0u8; total];
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        packet[8] = 64;
        packet[9] = PROTO_UDP;
        set_source(&mut packet, source_addr);
        set_destination(&mut packet, destination_addr);
        packet[20..22].copy_from_slice(&source_port.to_be_bytes());
        packet[22..24].copy_from_slice(&destination_port.to_be_bytes());
        packet[24..26].copy_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        packet[26..28].copy_from_slice(&[0xff, 0xff]);
        packet[28..].copy_from_slice(payload);
        let layout = transport_layout(&packet).unwrap();
        recompute_checksums(&mut packet, &layout);
        packet
    }

    #[test]
    fn udp_checksum_matches_reference() {
        // Expected values computed independently with Python's struct module (RFC 1071 sum).
        let packet = udp_packet(
            Ipv4Addr::new(10, 77, 0, 2),
            40000,
            Ipv4Addr::new(10, 77, 1, 2),
            5000,
            b"hello",
        );
        let layout = transport_layout(&packet).unwrap();
        assert_eq!(&packet[10..12], &[0x65, 0x2f]);
        assert_eq!(&packet[26..28], &[0xf6, 0x9b]);
        assert!(checksums_valid(&packet, &layout));
        assert_eq!(layout.payload_start, 28);
    }

    #[test]
    fn rewrite_then_recompute_is_valid() {
        let mut packet = udp_packet(
            Ipv4Addr::new(10, 0, 0, 1),
            1,
            Ipv4Addr::new(10, 0, 0, 2),
            2,
            b"abc",
        );
        let layout = transport_layout(&packet).unwrap();
        set_source_port(&mut packet, &layout, 9999);
        assert!(!checksums_valid(&packet, &layout));
        recompute_checksums(&mut packet, &layout);
        assert!(checksums_valid(&packet, &layout));
        assert_eq!(source_port(&packet, &layout), 9999);
    }

    #[test]
    fn fragments_are_not_parsed() {
        let mut packet = udp_packet(
            Ipv4Addr::new(10, 0, 0, 1),
            1,
            Ipv4Addr::new(10, 0, 0, 2),
            2,
            b"abc",
        );
        packet[6] = 0x20;
        assert_eq!(transport_layout(&packet), None);
    }
}
