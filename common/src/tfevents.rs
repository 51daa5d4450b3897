//! TensorBoard event files, written and read by hand: the format is small, stable and documented.
//!
//! A file is a sequence of TFRecords, each
//!
//! ```text
//! u64 length (little-endian) | u32 masked CRC-32C of those 8 bytes | data | u32 masked CRC-32C of data
//! ```
//!
//! with `mask(c) = ((c >> 15) | (c << 17)) + 0xa282_ead8` (wrapping). Each record's data is an
//! `Event` protobuf; only the fields scalars need are written:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! The first event of a file carries `file_version = "brain.Event:2"`. The reader verifies both CRCs
//! of every record and skips fields it does not know, so it also reads files other writers made.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What the first event of every file says.
pub const FILE_VERSION: &str = "brain.Event:2";

/// One event: a file-version marker or a set of scalars at one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    /// (tag, value) pairs of the event's summary.
    pub scalars: Vec<(String, f32)>,
}

impl Event {
    pub fn scalars(wall_time: f64, step: u64, scalars: Vec<(String, f32)>) -> Event {
        Event { wall_time, step: step as i64, file_version: None, scalars }
    }

    fn version(wall_time: f64) -> Event {
        Event { wall_time, step: 0, file_version: Some(FILE_VERSION.into()), scalars: Vec::new() }
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

pub fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The records of a file's bytes, every CRC checked, up to the first damaged or torn one; the
/// second value says what was wrong there (None: the bytes ended cleanly after a record).
pub fn records(bytes: &[u8]) -> (Vec<&[u8]>, Option<String>) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 12) else {
            return (out, Some(format!("record at byte {at}: torn header")));
        };
        let (len_bytes, len_crc) = head.split_at(8);
        if masked_crc(len_bytes) != u32_le(len_crc) {
            return (out, Some(format!("record at byte {at}: length CRC mismatch")));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
        let end = usize::try_from(len).ok().and_then(|l| (at + 12).checked_add(l)).and_then(|e| e.checked_add(4));
        let Some(data_end) = end.filter(|&e| e <= bytes.len()).map(|e| e - 4) else {
            return (out, Some(format!("record at byte {at}: torn data ({len} bytes announced)")));
        };
        let data = &bytes[at + 12..data_end];
        if masked_crc(data) != u32_le(&bytes[data_end..data_end + 4]) {
            return (out, Some(format!("record at byte {at}: data CRC mismatch")));
        }
        out.push(data);
        at = data_end + 4;
    }
    (out, None)
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The protobuf encoding of an event.
pub fn encode(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    key(&mut out, 1, 1);
    out.extend_from_slice(&event.wall_time.to_le_bytes());
    key(&mut out, 2, 0);
    varint(&mut out, event.step as u64);
    if let Some(version) = &event.file_version {
        bytes_field(&mut out, 3, version.as_bytes());
    }
    if !event.scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in &event.scalars {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            key(&mut v, 2, 5);
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        bytes_field(&mut out, 5, &summary);
    }
    out
}

/// A protobuf field: its number and value.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// The fields of one protobuf message, in order.
fn fields(mut b: &[u8]) -> std::result::Result<Vec<(u64, Field<'_>)>, String> {
    fn read_varint(b: &mut &[u8]) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn take<'a>(b: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if b.len() < n {
            return Err(format!("truncated field: {n} bytes wanted, {} left", b.len()));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let k = read_varint(&mut b)?;
        let field = match k & 7 {
            0 => Field::Varint(read_varint(&mut b)?),
            1 => Field::Fixed64(take(&mut b, 8)?.try_into().map_err(|_| "fixed64")?),
            2 => {
                let n = usize::try_from(read_varint(&mut b)?).map_err(|_| "length overflows")?;
                Field::Bytes(take(&mut b, n)?)
            }
            5 => Field::Fixed32(take(&mut b, 4)?.try_into().map_err(|_| "fixed32")?),
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((k >> 3, field));
    }
    Ok(out)
}

/// An event from its protobuf encoding; summary values without a simple_value are skipped.
pub fn decode(bytes: &[u8]) -> std::result::Result<Event, String> {
    let mut event = Event { wall_time: 0.0, step: 0, file_version: None, scalars: Vec::new() };
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Fixed64(b)) => event.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => event.step = v as i64,
            (3, Field::Bytes(b)) => event.file_version = Some(String::from_utf8_lossy(b).into_owned()),
            (5, Field::Bytes(summary)) => {
                for (n, value) in fields(summary)? {
                    let (1, Field::Bytes(value)) = (n, value) else { continue };
                    let (mut tag, mut simple) = (None, None);
                    for (n, f) in fields(value)? {
                        match (n, f) {
                            (1, Field::Bytes(t)) => tag = Some(String::from_utf8_lossy(t).into_owned()),
                            (2, Field::Fixed32(v)) => simple = Some(f32::from_le_bytes(v)),
                            _ => {}
                        }
                    }
                    if let (Some(tag), Some(v)) = (tag, simple) {
                        event.scalars.push((tag, v));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(event)
}

/// Every event of a file; any damaged record is an error.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (recs, damage) = records(&bytes);
    if let Some(damage) = damage {
        return Err(Error::data(path, damage));
    }
    recs.into_iter().map(|r| decode(r).map_err(|e| Error::data(path, e))).collect()
}

/// The events of a file up to its first damaged record (a run killed mid-write tears the last one).
pub fn read_intact_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (recs, damage) = records(&bytes);
    if let Some(damage) = damage {
        tracing::warn!(path = %path.display(), "event file: {damage}; the events after it are dropped");
    }
    recs.into_iter().filter_map(|r| decode(r).ok()).map(Ok).collect()
}

/// The event files of a directory (names containing `tfevents`), in name order: TensorBoard's order,
/// which is creation order for the names `EventWriter::create` gives.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && path.file_name().is_some_and(|n| n.to_string_lossy().contains("tfevents")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Appends events to one file, each record flushed as it is written.
#[derive(Debug)]
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// A new file `dir/events.out.tfevents.<seconds>.<host>.<pid>` starting with the version event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let now = wall_time();
        let host = hostname();
        let mut path = dir.join(format!("events.out.tfevents.{:010}.{host}.{}", now as u64, std::process::id()));
        // Two writers of one process within a second (a run restarted in place): a fresh name.
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("events.out.tfevents.{:010}.{host}.{}.{n}", now as u64, std::process::id()));
            n += 1;
        }
        let file = OpenOptions::new().create_new(true).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let mut writer = EventWriter { file, path };
        writer.write(&Event::version(now))?;
        Ok(writer)
    }

    /// Continues an existing event file.
    pub fn append(path: &Path) -> Result<EventWriter> {
        let file = OpenOptions::new().append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(EventWriter { file, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, event: &Event) -> Result<()> {
        self.file.write_all(&frame(&encode(event))).map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Seconds since the Unix epoch.
pub fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// This host's name for event file names (TensorBoard's convention), reduced to safe characters.
fn hostname() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_else(|| "localhost".into());
    let clean: String =
        raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

#[cfg(test)]
#[path = "tfevents_tests.rs"]
mod tests;
