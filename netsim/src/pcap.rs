//! A pcap file of the emulated link: every packet as it leaves the engine, in both
//! directions, with the time it left.
//!
//! The format is classic pcap (version 2.4, microsecond timestamps, native byte order)
//! with link type `LINKTYPE_RAW` (101): each record is one IPv4 packet with no link-layer
//! header, which Wireshark and tshark open as they are.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Magic number of a pcap file with microsecond timestamps.
pub const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// `LINKTYPE_RAW`: raw IPv4 or IPv6 packets, no link-layer header.
pub const LINKTYPE_RAW: u32 = 101;
/// Maximum captured length of a packet; longer packets are cut to it.
const SNAPLEN: u32 = 65_535;
/// Buffer of the writer, so the forwarding thread rarely waits on the disk.
const BUFFER_BYTES: usize = 1 << 20;

/// Writes packets to a pcap file.
#[derive(Debug)]
pub struct PcapWriter {
    out: BufWriter<File>,
    /// Wall-clock time that corresponds to `origin`, so timestamps follow the monotonic
    /// clock of the engine and never step back.
    wall_origin: SystemTime,
    origin: Instant,
    written: u64,
}

impl PcapWriter {
    /// Creates `path` and writes the file header.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(BUFFER_BYTES, File::create(path)?);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&PCAP_MAGIC.to_ne_bytes());
        header.extend_from_slice(&2u16.to_ne_bytes());
        header.extend_from_slice(&4u16.to_ne_bytes());
        // Time zone offset and timestamp accuracy, both zero by convention.
        header.extend_from_slice(&0i32.to_ne_bytes());
        header.extend_from_slice(&0u32.to_ne_bytes());
        header.extend_from_slice(&SNAPLEN.to_ne_bytes());
        header.extend_from_slice(&LINKTYPE_RAW.to_ne_bytes());
        out.write_all(&header)?;
        Ok(Self {
            out,
            wall_origin: SystemTime::now(),
            origin: Instant::now(),
            written: 0,
        })
    }

    /// Appends one packet that left the link at `at`.
    pub fn write(&mut self, at: Instant, packet: &[u8]) -> std::io::Result<()> {
        let wall = self.wall_origin + at.saturating_duration_since(self.origin);
        let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let seconds = u32::try_from(since_epoch.as_secs()).unwrap_or(u32::MAX);
        let stored = &packet[..packet.len().min(SNAPLEN as usize)];
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&seconds.to_ne_bytes());
        record[4..8].copy_from_slice(&since_epoch.subsec_micros().to_ne_bytes());
        record[8..12].copy_from_slice(&(stored.len() as u32).to_ne_bytes());
        record[12..16].copy_from_slice(&(packet.len() as u32).to_ne_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(stored)?;
        self.written += 1;
        Ok(())
    }

    /// Returns the number of packets written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes out the buffer.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records_follow_the_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.pcap");
        let mut writer = PcapWriter::create(&path).unwrap();
        let start = Instant::now();
        writer.write(start, &[0x45, 0, 0, 20]).unwrap();
        writer
            .write(start + Duration::from_millis(1500), &[0x45; 30])
            .unwrap();
        assert_eq!(writer.written(), 2);
        writer.flush().unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(word(0), PCAP_MAGIC);
        assert_eq!(word(20), LINKTYPE_RAW);
        assert_eq!(bytes.len(), 24 + 16 + 4 + 16 + 30);
        assert_eq!(word(24 + 8), 4, "captured length of the first record");
        let second = 24 + 16 + 4;
        assert_eq!(word(second + 8), 30);
        let first_time = f64::from(word(24)) + f64::from(word(28)) / 1e6;
        let second_time = f64::from(word(second)) + f64::from(word(second + 4)) / 1e6;
        assert!((second_time - first_time - 1.5).abs() < 0.01);
    }
}
