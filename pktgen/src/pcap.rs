//! Writing generated frames to a classic pcap file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::error::{Error, Result};

/// Timestamp of the first record: the Unix epoch, so files depend only on
/// their arguments.
pub const START: Duration = Duration::ZERO;
/// Timestamp increment between consecutive records.
pub const STEP: Duration = Duration::from_micros(1);
/// Snapshot length written in the file header; every generated frame fits.
pub const SNAPLEN: u32 = 65535;

/// A pcap file being written: Ethernet link type, microsecond timestamps
/// (little-endian, so the bytes do not depend on the host), records
/// [`STEP`] apart starting at [`START`].
pub struct PcapSink<W: Write> {
    writer: PcapWriter<W>,
    path: PathBuf,
    packets: u64,
}

impl PcapSink<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|source| Error::Io {
            action: "create",
            path: path.to_owned(),
            source,
        })?;
        PcapSink::new(BufWriter::with_capacity(1 << 20, file), path)
    }
}

impl<W: Write> PcapSink<W> {
    /// Writes the file header to `writer`; `path` names it in errors.
    pub fn new(writer: W, path: &Path) -> Result<Self> {
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(writer, header).map_err(|e| pcap_error(path, e))?;
        Ok(PcapSink {
            writer,
            path: path.to_owned(),
            packets: 0,
        })
    }

    /// Appends one frame (without FCS) as a full-length record.
    pub fn write(&mut self, frame: &[u8]) -> Result<()> {
        let step_ns = u64::try_from(STEP.as_nanos()).unwrap_or(u64::MAX);
        let ts = START + Duration::from_nanos(step_ns.saturating_mul(self.packets));
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.writer
            .write_packet(&PcapPacket::new(ts, len, frame))
            .map_err(|e| pcap_error(&self.path, e))?;
        self.packets += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and closes the file, returning the number of records.
    pub fn finish(self) -> Result<u64> {
        let path = self.path;
        let packets = self.packets;
        self.writer
            .into_writer()
            .flush()
            .map_err(|source| Error::Io {
                action: "write",
                path,
                source,
            })?;
        Ok(packets)
    }
}

fn pcap_error(path: &Path, e: PcapError) -> Error {
    match e {
        PcapError::IoError(source) => Error::Io {
            action: "write",
            path: path.to_owned(),
            source,
        },
        source => Error::Pcap {
            path: path.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::PcapReader;

    #[test]
    fn header_and_timestamps() {
        let mut sink = PcapSink::new(Vec::new(), Path::new("mem")).unwrap();
        for i in 0..3u8 {
            sink.write(&[i; 60]).unwrap();
        }
        assert_eq!(sink.packets(), 3);
        let bytes = sink.writer.into_writer();
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let h = r.header();
        assert_eq!(h.datalink, DataLink::ETHERNET);
        assert_eq!(h.ts_resolution, TsResolution::MicroSecond);
        let mut i = 0u8;
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!(p.timestamp, Duration::from_micros(u64::from(i)));
            assert_eq!((p.orig_len, &p.data[..]), (60, &[i; 60][..]));
            i += 1;
        }
        assert_eq!(i, 3);
    }

    #[test]
    fn errors_name_the_file() {
        let e = PcapSink::create(Path::new("/nonexistent-dir/x.pcap"))
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent-dir/x.pcap"), "{msg}");
        assert!(msg.starts_with("cannot create"), "{msg}");
        assert_eq!(e.exit_code(), 1);
    }
}
