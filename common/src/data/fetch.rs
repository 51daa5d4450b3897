//! `d2nn data fetch`: the datasets from ordinary packages only (datasets.md §5), done in Rust.
//!
//! Fashion-MNIST comes from the Debian package `dataset-fashion-mnist` (`apt-get download`, then
//! `dpkg-deb -x`), LFW from the scikit-image 0.26.0 wheel (`pip download`, then one member read out
//! of the zip). Each file is written as `<name>.part`, verified, then renamed, so the data directory
//! never holds a half-written or unverified file; files that already verify are left alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::datasets::{self, DataConfig, Task, FASHION_FILES, FASHION_TEST_FILE, FASHION_TRAIN_FILE, LFW_FILE};
use super::{idx, npy};
use crate::error::{Error, Result};

const FASHION_DEB: &str = "dataset-fashion-mnist";
const FASHION_DEB_DIR: &str = "usr/share/datasets/fashion-mnist";
const SKIMAGE: &str = "scikit-image==0.26.0";
const SKIMAGE_MEMBER: &str = "skimage/data/lfw_subset.npy";
const UNZIP_ONE: &str = "import sys, zipfile\n\
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], 'wb') as f:\n    f.write(z.read(sys.argv[2]))";

/// What [`fetch`] did, by absolute file path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Files downloaded (missing or failing verification before).
    pub fetched: Vec<PathBuf>,
    /// Files that were already present and verified.
    pub present: Vec<PathBuf>,
}

impl std::fmt::Display for FetchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.fetched {
            writeln!(f, "fetched  {}", p.display())?;
        }
        for p in &self.present {
            writeln!(f, "present  {}", p.display())?;
        }
        Ok(())
    }
}

/// Makes `data_dir` hold every dataset file, verified; `python` runs `pip` for the LFW wheel.
pub fn fetch(data_dir: &Path, python: &Path) -> Result<FetchReport> {
    for sub in ["fashion-mnist", "lfw"] {
        let d = data_dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    let dir = datasets::resolve_dir(data_dir)?;
    let scratch = dir.join(".download").join("d2nn-fetch");
    let mut report = FetchReport::default();

    let mut need = Vec::new();
    for (i, rel) in FASHION_FILES.iter().enumerate() {
        let path = dir.join(rel);
        match check_existing(&path, |p| verify_fashion(i, p)) {
            true => report.present.push(path),
            false => need.push(i),
        }
    }
    let lfw = dir.join(LFW_FILE);
    let lfw_ok = check_existing(&lfw, verify_lfw);
    let result = (|| -> Result<()> {
        if !need.is_empty() {
            fetch_fashion(&dir, &scratch.join("fashion"), &need)?;
            report.fetched.extend(need.iter().map(|&i| dir.join(FASHION_FILES[i])));
        }
        if lfw_ok {
            report.present.push(lfw.clone());
        } else {
            fetch_lfw(&lfw, &scratch.join("lfw"), python)?;
            report.fetched.push(lfw.clone());
        }
        Ok(())
    })();
    if scratch.exists() {
        if let Err(e) = std::fs::remove_dir_all(&scratch) {
            tracing::warn!("could not remove scratch directory {}: {e}", scratch.display());
        }
    }
    result?;
    // The end-to-end check: what training will load must load.
    for task in [Task::FashionMnist, Task::Lfw] {
        datasets::load(&DataConfig { task, dir: dir.clone(), ..DataConfig::default() })?;
    }
    Ok(report)
}

/// True if `path` exists and verifies; an existing file that fails is logged and will be replaced.
fn check_existing(path: &Path, verify: impl Fn(&Path) -> Result<()>) -> bool {
    if !path.exists() {
        return false;
    }
    match verify(path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("existing file fails verification, fetching it again: {e}");
            false
        }
    }
}

fn verify_fashion(i: usize, path: &Path) -> Result<()> {
    let n = if i < 2 { FASHION_TRAIN_FILE } else { FASHION_TEST_FILE };
    match i % 2 {
        0 => idx::load_images(path, Some(n), Some((28, 28))).map(|_| ()),
        _ => idx::load_labels(path, Some(n), 10).map(|_| ()),
    }
}

fn verify_lfw(path: &Path) -> Result<()> {
    npy::read_f8(path, Some(&datasets::LFW_SHAPE), Some(npy::LFW_MD5)).map(|_| ())
}

fn fetch_fashion(dir: &Path, work: &Path, need: &[usize]) -> Result<()> {
    fresh_dir(work)?;
    let download = || run(Command::new("apt-get").args(["download", FASHION_DEB]).current_dir(work));
    if let Err(first) = download() {
        // Usually stale or absent package lists (fresh containers ship none).
        tracing::info!("{first}; running apt-get update and retrying");
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        download()?;
    }
    let deb = find_one(work, &format!("{FASHION_DEB}_"), ".deb")?;
    let extract = work.join("extract");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extract))?;
    for &i in need {
        let rel = Path::new(FASHION_FILES[i]);
        let name = rel.file_name().ok_or_else(|| Error::Invalid(format!("bad file name {rel:?}")))?;
        let src = extract.join(FASHION_DEB_DIR).join(name);
        let dest = dir.join(rel);
        let part = part_path(&dest);
        std::fs::copy(&src, &part).map_err(|e| Error::io(&src, e))?;
        install(&part, &dest, |p| verify_fashion(i, p))?;
    }
    Ok(())
}

fn fetch_lfw(dest: &Path, work: &Path, python: &Path) -> Result<()> {
    fresh_dir(work)?;
    run(Command::new(python)
        .args(["-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps"])
        .args(["--only-binary=:all:", "-d"])
        .arg(work)
        .arg(SKIMAGE))?;
    let wheel = find_one(work, "scikit_image-0.26.0-", ".whl")?;
    let part = part_path(dest);
    run(Command::new(python).args(["-c", UNZIP_ONE]).arg(&wheel).arg(SKIMAGE_MEMBER).arg(&part))?;
    install(&part, dest, verify_lfw)
}

/// Verifies `part`, then renames it to `dest`; a failing `part` is removed.
fn install(part: &Path, dest: &Path, verify: impl Fn(&Path) -> Result<()>) -> Result<()> {
    if let Err(e) = verify(part) {
        let _ = std::fs::remove_file(part);
        return Err(e);
    }
    std::fs::rename(part, dest).map_err(|e| Error::io(dest, e))
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s: OsString = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// The single file in `dir` named `prefix*suffix`.
fn find_one(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut hits = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            hits.push(path);
        }
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        n => Err(Error::data(dir, format!("expected one {prefix}*{suffix} file, found {n}"))),
    }
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    // Inline scripts are shown by their first line only; the error should stay one readable line.
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        let first = a.lines().next().unwrap_or("");
        let more = if a.lines().count() > 1 { " …" } else { "" };
        if a.contains(char::is_whitespace) {
            format!("'{first}{more}'")
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// The last few lines of a command's stderr, enough to see why it failed.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let t = lines[lines.len().saturating_sub(8)..].join("\n");
    if t.is_empty() {
        "(no stderr)".into()
    } else {
        t
    }
}

fn run(cmd: &mut Command) -> Result<Output> {
    let shown = describe(cmd);
    tracing::info!("running {shown}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Invalid(format!("`{shown}` could not be started: {e}")))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!("`{shown}` failed ({}): {}", out.status, tail(&out.stderr))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_data_dir;

    #[test]
    fn present_and_valid_files_are_not_fetched() {
        let dir = test_data_dir();
        // A python that cannot run proves nothing was downloaded.
        let report = fetch(&dir, Path::new("/nonexistent/python")).expect("real data verifies");
        assert!(report.fetched.is_empty(), "{report}");
        assert_eq!(report.present.len(), 5, "{report}");
        assert!(report.present.iter().all(|p| p.is_absolute() && p.exists()));
        assert!(!dir.join(".download/d2nn-fetch").exists());
    }

    #[test]
    fn a_failing_command_is_named_and_leaves_the_old_file_alone() {
        let real = test_data_dir();
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("fashion-mnist")).expect("mkdir");
        std::fs::create_dir_all(tmp.path().join("lfw")).expect("mkdir");
        for f in FASHION_FILES {
            let src = datasets::resolve_dir(&real).expect("data dir").join(f);
            std::os::unix::fs::symlink(src, tmp.path().join(f)).expect("symlink");
        }
        let lfw = tmp.path().join(LFW_FILE);
        std::fs::write(&lfw, b"not an npy file").expect("write");
        let msg = fetch(tmp.path(), Path::new("/nonexistent/python")).expect_err("no python").to_string();
        assert!(msg.contains("`/nonexistent/python -m pip download"), "{msg}");
        assert!(msg.contains("could not be started"), "{msg}");
        assert_eq!(std::fs::read(&lfw).expect("read"), b"not an npy file");
        assert!(!part_path(&lfw).exists());
        assert!(!tmp.path().join(".download/d2nn-fetch").exists(), "scratch is cleaned up");
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let text: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let t = tail(text.as_bytes());
        assert!(t.starts_with("line 12") && t.ends_with("line 19"), "{t}");
        assert_eq!(tail(b""), "(no stderr)");
        let msg = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).expect_err("fails").to_string();
        assert!(msg.contains("`sh -c 'echo boom >&2; exit 3'` failed") && msg.contains("boom"), "{msg}");
    }
}
