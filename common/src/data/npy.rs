//! NPY reader for little-endian f64, C-order arrays (what `lfw_subset.npy` is).
//!
//! Layout: `\x93NUMPY`, major and minor version bytes, header length (LE u16 in v1, LE u32 in v2/v3),
//! an ASCII Python dict literal with exactly the keys `descr`, `fortran_order`, `shape`, then the data.

use std::path::Path;

use md5::{Digest, Md5};

use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// md5 of scikit-image 0.26.0's `skimage/data/lfw_subset.npy` (also byte-identical in Debian's
/// `python3-skimage` 0.19.3-8).
pub const LFW_MD5: &str = "9ceb864b0352b4747a8c8d465f9b3e35";

/// A parsed f64 array; `data.len()` is the product of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyF64 {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Lower-case hex md5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

#[derive(Debug, Default)]
struct Header {
    descr: Option<String>,
    fortran_order: Option<bool>,
    shape: Option<Vec<usize>>,
}

/// A cursor over the header dict. NPY headers are written by `repr()` of a dict, so a small literal
/// parser suffices; anything it does not recognise is rejected rather than guessed at.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.pos += hit as usize;
        hit
    }
    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at header byte {}", c as char, self.pos))
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = self.peek().filter(|&q| q == b'\'' || q == b'"');
        let q = q.ok_or_else(|| format!("expected a quoted string at header byte {}", self.pos))?;
        let start = self.pos + 1;
        let len = self.s[start..].iter().position(|&c| c == q);
        let len = len.ok_or_else(|| "unterminated string in header".to_string())?;
        self.pos = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }
    fn word(&mut self) -> String {
        self.ws();
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        while !self.eat(b')') {
            let w = self.word();
            dims.push(w.parse().map_err(|_| format!("bad shape dimension '{w}'"))?);
            if !self.eat(b',') {
                self.expect(b')')?;
                break;
            }
        }
        Ok(dims)
    }
}

fn parse_header(text: &[u8]) -> std::result::Result<Header, String> {
    let mut c = Cursor { s: text, pos: 0 };
    let mut h = Header::default();
    c.expect(b'{')?;
    while !c.eat(b'}') {
        let key = c.string()?;
        c.expect(b':')?;
        let dup = match key.as_str() {
            "descr" => h.descr.replace(c.string()?).is_some(),
            "fortran_order" => {
                let v = match c.word().as_str() {
                    "True" => true,
                    "False" => false,
                    w => return Err(format!("fortran_order is '{w}', expected True or False")),
                };
                h.fortran_order.replace(v).is_some()
            }
            "shape" => h.shape.replace(c.tuple()?).is_some(),
            k => return Err(format!("unexpected header key '{k}'")),
        };
        if dup {
            return Err(format!("header key '{key}' appears twice"));
        }
        if !c.eat(b',') {
            c.expect(b'}')?;
            break;
        }
    }
    if c.peek().is_some() {
        return Err(format!("unexpected bytes after the header dict at byte {}", c.pos));
    }
    Ok(h)
}

fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("({})", parts.join(", "))
}

/// Parses NPY bytes holding `<f8` C-order data; checks the shape against `expected_shape` if given.
pub fn parse_f8(path: &Path, bytes: &[u8], expected_shape: Option<&[usize]>) -> Result<NpyF64> {
    let bad = |m: String| Error::data(path, m);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        let head = &bytes[..bytes.len().min(6)];
        return Err(bad(format!("bad magic {head:02x?}, expected \\x93NUMPY (NPY file)")));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad(format!("unsupported NPY version {major}.{minor}"))),
    };
    let data_start = hstart + hlen;
    if bytes.len() < data_start {
        return Err(bad(format!("truncated: header claims {hlen} bytes but the file has {}", bytes.len())));
    }
    let h = parse_header(&bytes[hstart..data_start]).map_err(|m| bad(format!("bad NPY header: {m}")))?;
    let descr = h.descr.ok_or_else(|| bad("NPY header has no 'descr'".into()))?;
    let shape = h.shape.ok_or_else(|| bad("NPY header has no 'shape'".into()))?;
    if descr != "<f8" {
        return Err(bad(format!("dtype '{descr}' is not supported, expected '<f8' (little-endian f64)")));
    }
    if h.fortran_order != Some(false) {
        return Err(bad("array is not in C order (fortran_order must be False)".into()));
    }
    if let Some(e) = expected_shape {
        if shape != e {
            return Err(bad(format!("shape {}, expected {}", fmt_shape(&shape), fmt_shape(e))));
        }
    }
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let need = count.and_then(|c| c.checked_mul(8));
    let need = need.ok_or_else(|| bad(format!("shape {} overflows", fmt_shape(&shape))))?;
    let found = bytes.len() - data_start;
    if found != need {
        return Err(bad(format!("data is {found} bytes, expected {need} for shape {} of f64", fmt_shape(&shape))));
    }
    let data = bytes[data_start..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok(NpyF64 { shape, data })
}

/// Reads an NPY file of `<f8`. Structure is checked before `expected_md5`, so a damaged file reports
/// what is wrong with it rather than only that its checksum differs.
pub fn read_f8(path: &Path, expected_shape: Option<&[usize]>, expected_md5: Option<&str>) -> Result<NpyF64> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let arr = parse_f8(path, &bytes, expected_shape)?;
    if let Some(want) = expected_md5 {
        let got = md5_hex(&bytes);
        if !got.eq_ignore_ascii_case(want) {
            return Err(Error::data(path, format!("md5 mismatch: found {got}, expected {want}")));
        }
    }
    Ok(arr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1.0 NPY file the way numpy writes it (header padded so the data is 64-byte aligned).
    fn npy_bytes(descr: &str, shape: &[usize], values: &[f64]) -> Vec<u8> {
        let shape_txt = match shape {
            [d] => format!("({d},)"),
            _ => fmt_shape(shape),
        };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        for v in values {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write temp file");
        p
    }

    #[test]
    fn md5_matches_rfc1321_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn reads_what_numpy_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vals = [0.0, 0.25, 1.0, -2.5, 1e-300, 3.0];
        let p = write(&dir, "ok.npy", &npy_bytes("<f8", &[2, 3], &vals));
        let a = read_f8(&p, Some(&[2, 3]), None).expect("valid file");
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vals);
        let p = write(&dir, "one.npy", &npy_bytes("<f8", &[2], &vals[..2]));
        assert_eq!(read_f8(&p, None, None).expect("1-d").shape, vec![2]);
    }

    #[test]
    fn bad_magic_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = npy_bytes("<f8", &[2], &[1.0, 2.0]);
        b[1] = b'X';
        let p = write(&dir, "magic.npy", &b);
        let msg = read_f8(&p, None, None).expect_err("bad magic").to_string();
        assert!(msg.contains("magic.npy") && msg.contains("bad magic"), "{msg}");
    }

    #[test]
    fn wrong_shape_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "shape.npy", &npy_bytes("<f8", &[4, 25, 25], &[0.5; 2500]));
        let msg = read_f8(&p, Some(&[200, 25, 25]), None).expect_err("shape").to_string();
        assert!(msg.contains("shape.npy"), "{msg}");
        assert!(msg.contains("shape (4, 25, 25), expected (200, 25, 25)"), "{msg}");
        // Header shape that the data does not fill.
        let p = write(&dir, "size.npy", &npy_bytes("<f8", &[2, 3], &[0.5; 5]));
        let msg = read_f8(&p, None, None).expect_err("size").to_string();
        assert!(msg.contains("size.npy") && msg.contains("data is 40 bytes, expected 48"), "{msg}");
    }

    #[test]
    fn wrong_dtype_and_order_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "f4.npy", &npy_bytes("<f4", &[2], &[1.0]));
        let msg = read_f8(&p, None, None).expect_err("dtype").to_string();
        assert!(msg.contains("f4.npy") && msg.contains("dtype '<f4'"), "{msg}");
        let mut b = npy_bytes("<f8", &[1], &[1.0]);
        let at = b.windows(5).position(|w| w == b"False").expect("header has False");
        b[at..at + 5].copy_from_slice(b"True ");
        let p = write(&dir, "fortran.npy", &b);
        let msg = read_f8(&p, None, None).expect_err("order").to_string();
        assert!(msg.contains("fortran.npy") && msg.contains("not in C order"), "{msg}");
    }

    #[test]
    fn md5_mismatch_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "lfw_subset.npy", &npy_bytes("<f8", &[200, 25, 25], &[0.5; 125_000]));
        let msg = read_f8(&p, Some(&[200, 25, 25]), Some(LFW_MD5)).expect_err("md5").to_string();
        assert!(msg.contains("lfw_subset.npy"), "{msg}");
        assert!(msg.contains("md5 mismatch") && msg.contains(LFW_MD5), "{msg}");
    }

    #[test]
    fn header_parser_rejects_garbage() {
        assert!(parse_header(b"{'descr': '<f8', 'fortran_order': False, 'shape': (200, 25, 25), }  \n").is_ok());
        assert!(parse_header(b"{'descr': '<f8', 'descr': '<f8'}").is_err());
        assert!(parse_header(b"{'descr': '<f8', 'extra': 1}").is_err());
        assert!(parse_header(b"{'shape': (2, x)}").is_err());
        assert!(parse_header(b"{'shape': (2,)} trailing").is_err());
        let h = parse_header(b"{\"shape\": ()}").expect("scalar shape");
        assert_eq!(h.shape, Some(vec![]));
    }
}
