//! The `checkpoints/` directory of a run: the atomic commit of a new checkpoint, `LATEST`,
//! retention, listing, and resolving what a user points at.
//!
//! Commit protocol (one writer per run directory): tensor files and `meta.json` go into a hidden
//! staging directory and are fsynced; the staging directory is renamed to `step-SSSSSSSS` and the
//! parent fsynced; `LATEST` is replaced atomically (temporary file, fsync, rename, fsync). Only then
//! are old checkpoints removed, each renamed to a hidden name first so a half-removed directory is
//! never mistaken for a checkpoint. A crash before the `LATEST` rename leaves the previous
//! checkpoint as LATEST; after it, the new one. Hidden leftovers are removed by the next commit.
use std::fs;
use std::path::{Path, PathBuf};

use super::files::{dir_bytes, fsync_dir, write_atomic, WriteSteps};
use super::meta::CheckpointMeta;
use super::{CheckpointConfig, META_FILE};
use crate::{Error, Result};

const CHECKPOINTS_DIR: &str = "checkpoints";
const LATEST: &str = "LATEST";
const NAME_PREFIX: &str = "step-";
const STAGING_PREFIX: &str = ".staging-";
const TRASH_PREFIX: &str = ".trash-";

/// One checkpoint directory as `list` sees it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub dir: PathBuf,
    /// The metadata, or why it could not be read.
    pub meta: std::result::Result<CheckpointMeta, String>,
    pub bytes: u64,
    pub latest: bool,
    /// The best validation metric of the readable checkpoints (the newest of equals).
    pub best: bool,
}

/// `step-00000100` → (100, 0); `step-00000100-2` (a second checkpoint of that step, after a resume
/// from an older one) → (100, 2). Other names are not checkpoints.
fn order_key(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (step, suffix) = match rest.split_once('-') {
        Some((s, k)) => (s, k.parse().ok()?),
        None => (rest, 0),
    };
    Some((step.parse().ok()?, suffix))
}

#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
}

impl CheckpointStore {
    /// The store of a run directory: `RUN_DIR/checkpoints`.
    pub fn of_run(run_dir: &Path) -> CheckpointStore {
        CheckpointStore { root: run_dir.join(CHECKPOINTS_DIR) }
    }

    /// The store a user means by `dir`: `dir` itself when it is a `checkpoints/` directory (it has
    /// `LATEST` or that name), else the run directory's.
    pub fn find(dir: &Path) -> CheckpointStore {
        if dir.join(LATEST).is_file() || dir.file_name().is_some_and(|n| n == CHECKPOINTS_DIR) {
            CheckpointStore { root: dir.to_path_buf() }
        } else {
            Self::of_run(dir)
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh, empty staging directory for a checkpoint of `step`, after removing what interrupted
    /// commits left behind.
    pub fn begin(&self, step: u64, steps: &mut WriteSteps) -> Result<PathBuf> {
        fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        for entry in fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))? {
            let path = entry.map_err(|e| Error::io(&self.root, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with(STAGING_PREFIX) || name.starts_with(TRASH_PREFIX) {
                fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        let staging = self.root.join(format!("{STAGING_PREFIX}{NAME_PREFIX}{step:08}"));
        steps.before(&staging)?;
        fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(staging)
    }

    /// Completes the checkpoint whose tensor files are in `staging` (see the module docs) and
    /// returns its directory.
    pub fn commit(
        &self,
        staging: &Path,
        meta: &CheckpointMeta,
        keep: &CheckpointConfig,
        steps: &mut WriteSteps,
    ) -> Result<PathBuf> {
        meta.write(staging, steps)?;
        fsync_dir(staging)?;
        let base = format!("{NAME_PREFIX}{:08}", meta.position.step);
        let name = (0u32..)
            .map(|k| if k == 0 { base.clone() } else { format!("{base}-{k}") })
            .find(|n| !self.root.join(n).exists())
            .unwrap_or(base);
        let dir = self.root.join(&name);
        steps.before(&dir)?;
        fs::rename(staging, &dir).map_err(|e| Error::io(&dir, e))?;
        fsync_dir(&self.root)?;
        let latest = self.root.join(LATEST);
        steps.before(&latest)?;
        write_atomic(&latest, format!("{name}\n").as_bytes())?;
        self.retain(keep, steps)?;
        Ok(dir)
    }

    /// Whether a checkpoint ever completed here (LATEST exists; it may still fail to load).
    pub fn has_latest(&self) -> bool {
        self.root.join(LATEST).is_file()
    }

    /// The directory `LATEST` names.
    pub fn latest(&self) -> Result<PathBuf> {
        let path = self.root.join(LATEST);
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let name = text.trim();
        if order_key(name).is_none() {
            return Err(Error::data(&path, format!("`{name}` is not a checkpoint name (step-SSSSSSSS)")));
        }
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(Error::data(&path, format!("names `{name}`, which does not exist")));
        }
        Ok(dir)
    }

    /// Every checkpoint directory, oldest first.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let latest = self.latest().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))? {
            let dir = entry.map_err(|e| Error::io(&self.root, e))?.path();
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if order_key(&name).is_none() || !dir.is_dir() {
                continue;
            }
            let meta = CheckpointMeta::read(&dir).map_err(|e| e.to_string());
            let bytes = dir_bytes(&dir)?;
            let latest = latest.as_deref() == Some(name.as_str());
            out.push(Listed { name, dir, meta, bytes, latest, best: false });
        }
        out.sort_by_key(|l| order_key(&l.name));
        let best = out
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i, l.meta.as_ref().ok()?.val_metric?)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        if let Some((i, _)) = best {
            out[i].best = true;
        }
        Ok(out)
    }

    /// Removes readable checkpoints beyond the newest `keep_last`, sparing LATEST and (with
    /// `keep_best`) the best. Unreadable directories are left for a person to look at.
    fn retain(&self, keep: &CheckpointConfig, steps: &mut WriteSteps) -> Result<()> {
        let listed = self.list()?;
        let readable: Vec<&Listed> = listed.iter().filter(|l| l.meta.is_ok()).collect();
        let newest_from = readable.len().saturating_sub(keep.keep_last.max(1));
        for (i, l) in readable.iter().enumerate() {
            if i >= newest_from || l.latest || (keep.keep_best && l.best) {
                continue;
            }
            let trash = self.root.join(format!("{TRASH_PREFIX}{}", l.name));
            steps.before(&l.dir)?;
            fs::rename(&l.dir, &trash).map_err(|e| Error::io(&l.dir, e))?;
            fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        }
        fsync_dir(&self.root)
    }
}

/// What a user may point at, as a checkpoint directory: a checkpoint directory itself (it has
/// `meta.json`), a `checkpoints/` directory (its `LATEST`), or a run directory (its
/// `checkpoints/LATEST`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(META_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join(LATEST).is_file() {
        return CheckpointStore { root: path.to_path_buf() }.latest();
    }
    let store = CheckpointStore::of_run(path);
    if store.root.join(LATEST).is_file() {
        return store.latest();
    }
    let why = if store.root.is_dir() {
        "the run has a checkpoints/ directory but no checkpoints/LATEST (no checkpoint completed)"
    } else if path.exists() {
        "not a checkpoint (no meta.json), a checkpoints directory (no LATEST) or a run directory (no checkpoints/LATEST)"
    } else {
        "no such file or directory"
    };
    Err(Error::data(path, why))
}

/// [`resolve`], then the metadata read and every file's checksum verified.
pub fn open(path: &Path) -> Result<(PathBuf, CheckpointMeta)> {
    let dir = resolve(path)?;
    let meta = CheckpointMeta::read(&dir)?;
    meta.verify_files(&dir)?;
    Ok((dir, meta))
}

/// The run directory a checkpoint directory belongs to (`RUN/checkpoints/step-…` → `RUN`), if it
/// is inside one.
pub fn run_dir_of(checkpoint_dir: &Path) -> Option<PathBuf> {
    let parent = checkpoint_dir.parent()?;
    (parent.file_name()? == CHECKPOINTS_DIR).then(|| parent.parent().map(Path::to_path_buf)).flatten()
}
