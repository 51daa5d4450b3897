//! Durable file operations: fsync of files and directories, atomic replacement, checksums, and the
//! crash-injection counter every write of the checkpoint protocol goes through.
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Counts the durable writes of one checkpoint (a file written, a directory renamed or removed) and,
/// for tests, fails the protocol before the k-th one exactly as a crash would stop it there: nothing
/// after it happens, nothing before it is undone.
#[derive(Debug, Clone, Default)]
pub struct WriteSteps {
    done: usize,
    crash_before: Option<usize>,
}

impl WriteSteps {
    /// No crash: every write happens.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Stop after `k` writes: the (k+1)-th fails with an "injected crash" error.
    pub fn crash_after(k: usize) -> Self {
        WriteSteps { done: 0, crash_before: Some(k) }
    }

    /// Writes done so far.
    pub fn done(&self) -> usize {
        self.done
    }

    /// Called before each durable write of `path`.
    pub(crate) fn before(&mut self, path: &Path) -> Result<()> {
        if self.crash_before == Some(self.done) {
            return Err(Error::data(path, format!("injected crash before write {}", self.done + 1)));
        }
        self.done += 1;
        Ok(())
    }
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

pub(crate) fn fsync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// Write to a temporary file beside `path`, fsync, rename, fsync the directory: readers see the
/// old or the new file, never half, and after a crash the rename is either there or not.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fsync_dir(dir),
        _ => fsync_dir(Path::new(".")),
    }
}

/// Size and hex SHA-256 of a file, streamed.
pub(crate) fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// Total size of the regular files directly in `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let meta = entry.and_then(|e| e.metadata()).map_err(|e| Error::io(dir, e))?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}
