//! Gzip-compressed IDX files, the format of (Fashion-)MNIST.
//!
//! The Debian package's `.gz` bytes differ from upstream, so upstream md5 sums cannot be used; instead
//! every structural fact is checked (magic, counts, dimensions, exact payload length, label range) and a
//! failure names the file and the fact that did not hold.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{Error, Result};

/// Magic of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// The images of one IDX file, row-major: image `i` is `pixels[i*rows*cols..(i+1)*rows*cols]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads and decompresses a whole gzip file.
pub fn read_gz(path: &Path) -> Result<Vec<u8>> {
    let compressed = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // The gzip trailer's ISIZE (length mod 2^32) sizes the buffer up front, so a 47 MB file is not
    // regrown a dozen times. It is only a hint: capped, and a lie in it is caught by the parsers.
    let hint = compressed
        .len()
        .checked_sub(4)
        .and_then(|i| <[u8; 4]>::try_from(&compressed[i..]).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize)
        .min(256 << 20);
    let mut out = Vec::with_capacity(hint);
    GzDecoder::new(&compressed[..]).read_to_end(&mut out).map_err(|e| {
        Error::data(path, format!("corrupt or truncated gzip stream after {} decompressed bytes: {e}", out.len()))
    })?;
    Ok(out)
}

fn be32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

fn check_header(path: &Path, bytes: &[u8], len: usize, magic: u32, what: &str) -> Result<()> {
    if bytes.len() < len {
        return Err(Error::data(
            path,
            format!("truncated: {} bytes, shorter than the {len}-byte IDX {what} header", bytes.len()),
        ));
    }
    let found = be32(bytes, 0);
    if found != magic {
        return Err(Error::data(path, format!("bad magic 0x{found:08x}, expected 0x{magic:08x} (IDX u8 {what})")));
    }
    Ok(())
}

fn check_count(path: &Path, found: usize, expected: Option<usize>, what: &str) -> Result<()> {
    match expected {
        Some(e) if e != found => Err(Error::data(path, format!("header says {found} {what}, expected {e}"))),
        _ => Ok(()),
    }
}

/// Exact payload length: a short file is truncated, a long one is not what its header claims.
fn check_payload(path: &Path, found: usize, need: usize, what: &str) -> Result<()> {
    if found < need {
        return Err(Error::data(path, format!("truncated: expected {need} {what} bytes, found {found}")));
    }
    if found > need {
        return Err(Error::data(
            path,
            format!("{} trailing bytes after the {need} {what} bytes the header announces", found - need),
        ));
    }
    Ok(())
}

/// Parses decompressed IDX image bytes. `expected_count` and `expected_dims` (rows, cols) are checked
/// when given.
pub fn parse_images(
    path: &Path,
    mut bytes: Vec<u8>,
    expected_count: Option<usize>,
    expected_dims: Option<(usize, usize)>,
) -> Result<IdxImages> {
    check_header(path, &bytes, IMAGES_HEADER, IMAGES_MAGIC, "images")?;
    let count = be32(&bytes, 4) as usize;
    let rows = be32(&bytes, 8) as usize;
    let cols = be32(&bytes, 12) as usize;
    check_count(path, count, expected_count, "images")?;
    if let Some((r, c)) = expected_dims {
        if (rows, cols) != (r, c) {
            return Err(Error::data(path, format!("images are {rows}x{cols}, expected {r}x{c}")));
        }
    }
    let need = count
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| Error::data(path, format!("header size {count}x{rows}x{cols} overflows")))?;
    check_payload(path, bytes.len() - IMAGES_HEADER, need, "image")?;
    // Shifting the payload down in place is one memmove, cheaper than a second 47 MB buffer.
    bytes.drain(..IMAGES_HEADER);
    Ok(IdxImages { count, rows, cols, pixels: bytes })
}

/// Parses decompressed IDX label bytes; every label must be in `0..num_classes`.
pub fn parse_labels(
    path: &Path,
    mut bytes: Vec<u8>,
    expected_count: Option<usize>,
    num_classes: u8,
) -> Result<Vec<u8>> {
    check_header(path, &bytes, LABELS_HEADER, LABELS_MAGIC, "labels")?;
    let count = be32(&bytes, 4) as usize;
    check_count(path, count, expected_count, "labels")?;
    check_payload(path, bytes.len() - LABELS_HEADER, count, "label")?;
    bytes.drain(..LABELS_HEADER);
    if let Some((i, &l)) = bytes.iter().enumerate().find(|(_, &l)| l >= num_classes) {
        return Err(Error::data(path, format!("label {l} at index {i} is out of range 0..{num_classes}")));
    }
    Ok(bytes)
}

/// Reads a gzip IDX image file.
pub fn load_images(
    path: &Path,
    expected_count: Option<usize>,
    expected_dims: Option<(usize, usize)>,
) -> Result<IdxImages> {
    parse_images(path, read_gz(path)?, expected_count, expected_dims)
}

/// Reads a gzip IDX label file.
pub fn load_labels(path: &Path, expected_count: Option<usize>, num_classes: u8) -> Result<Vec<u8>> {
    parse_labels(path, read_gz(path)?, expected_count, num_classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;
    use std::path::PathBuf;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).expect("gzip to memory");
        enc.finish().expect("gzip to memory")
    }

    fn idx_images(magic: u32, n: u32, rows: u32, cols: u32, payload: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [magic, n, rows, cols] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..payload).map(|i| (i % 251) as u8));
        b
    }

    fn idx_labels(n: u32, labels: &[u8]) -> Vec<u8> {
        let mut b = LABELS_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(labels);
        b
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write temp file");
        p
    }

    fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn roundtrip_small_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "ok.gz", &gz(&idx_images(IMAGES_MAGIC, 3, 2, 2, 12)));
        let im = load_images(&p, Some(3), Some((2, 2))).expect("valid file");
        assert_eq!((im.count, im.rows, im.cols), (3, 2, 2));
        assert_eq!(im.pixels, (0..12u8).collect::<Vec<_>>());
        let p = write(&dir, "l.gz", &gz(&idx_labels(4, &[0, 9, 3, 1])));
        assert_eq!(load_labels(&p, Some(4), 10).expect("valid labels"), vec![0, 9, 3, 1]);
    }

    #[test]
    fn truncated_gzip_stream_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let full = gz(&idx_images(IMAGES_MAGIC, 50, 28, 28, 50 * 784));
        let p = write(&dir, "cut.gz", &full[..full.len() / 2]);
        let msg = err_text(load_images(&p, None, None));
        assert!(msg.contains("cut.gz") && msg.contains("truncated gzip"), "{msg}");
    }

    #[test]
    fn truncated_idx_payload_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "short.gz", &gz(&idx_images(IMAGES_MAGIC, 60000, 28, 28, 1000)));
        let msg = err_text(load_images(&p, Some(60000), Some((28, 28))));
        assert!(msg.contains("short.gz"), "{msg}");
        assert!(msg.contains("truncated: expected 47040000 image bytes, found 1000"), "{msg}");
        // Short even of a header.
        let p = write(&dir, "tiny.gz", &gz(&[0, 0, 8]));
        let msg = err_text(load_labels(&p, None, 10));
        assert!(msg.contains("tiny.gz") && msg.contains("shorter than the 8-byte"), "{msg}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "long.gz", &gz(&idx_images(IMAGES_MAGIC, 2, 2, 2, 9)));
        let msg = err_text(load_images(&p, None, None));
        assert!(msg.contains("long.gz") && msg.contains("1 trailing bytes"), "{msg}");
    }

    #[test]
    fn bad_magic_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "magic.gz", &gz(&idx_images(0x804, 1, 2, 2, 4)));
        let msg = err_text(load_images(&p, None, None));
        assert!(msg.contains("magic.gz"), "{msg}");
        assert!(msg.contains("bad magic 0x00000804, expected 0x00000803 (IDX u8 images)"), "{msg}");
        // An image file passed where labels are expected.
        let msg = err_text(load_labels(&p, None, 10));
        assert!(msg.contains("expected 0x00000801 (IDX u8 labels)"), "{msg}");
    }

    #[test]
    fn wrong_counts_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Header says 10 labels, data holds 9.
        let p = write(&dir, "nine.gz", &gz(&idx_labels(10, &[1; 9])));
        let msg = err_text(load_labels(&p, None, 10));
        assert!(msg.contains("nine.gz") && msg.contains("truncated: expected 10 label bytes, found 9"));
        // Self-consistent file, but not the count the caller knows the file must have.
        let p = write(&dir, "ten.gz", &gz(&idx_labels(10, &[1; 10])));
        let msg = err_text(load_labels(&p, Some(10000), 10));
        assert!(msg.contains("ten.gz") && msg.contains("header says 10 labels, expected 10000"));
        let p = write(&dir, "im.gz", &gz(&idx_images(IMAGES_MAGIC, 2, 28, 28, 2 * 784)));
        let msg = err_text(load_images(&p, Some(60000), None));
        assert!(msg.contains("header says 2 images, expected 60000"), "{msg}");
        let msg = err_text(load_images(&p, None, Some((25, 25))));
        assert!(msg.contains("im.gz") && msg.contains("images are 28x28, expected 25x25"));
    }

    #[test]
    fn labels_out_of_range_are_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "range.gz", &gz(&idx_labels(4, &[0, 9, 10, 2])));
        let msg = err_text(load_labels(&p, Some(4), 10));
        assert!(msg.contains("range.gz"), "{msg}");
        assert!(msg.contains("label 10 at index 2 is out of range 0..10"), "{msg}");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let msg = err_text(load_labels(Path::new("/nonexistent/x-labels.gz"), None, 10));
        assert!(msg.contains("/nonexistent/x-labels.gz"), "{msg}");
    }
}
