//! The tensor files of a checkpoint: the model's variables and the optimizer's state, in
//! safetensors (a header of names, dtypes and shapes, then raw little-endian data; no code runs on
//! load, unlike pickle).
use std::collections::BTreeMap;
use std::path::Path;

use tch::{Device, Tensor};

use super::files::{fsync_file, sha256_file, WriteSteps};
use super::meta::{CheckpointMeta, FileEntry, SavedTensors};
use super::{MODEL_FILE, OPTIMIZER_FILE};
use crate::exec::{param_digest, D2nn};
use crate::optim::{load_exact, Optimizer};
use crate::{Error, Result};

/// CPU, contiguous, detached copies: what safetensors can write, from any device.
fn on_cpu(named: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    named.into_iter().map(|(name, t)| Ok((name, t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?))).collect()
}

fn write_file(path: &Path, tensors: &[(String, Tensor)], steps: &mut WriteSteps) -> Result<FileEntry> {
    steps.before(path)?;
    Tensor::write_safetensors(tensors, path).map_err(|e| Error::data(path, e.to_string()))?;
    fsync_file(path)?;
    let (bytes, sha256) = sha256_file(path)?;
    Ok(FileEntry { bytes, sha256 })
}

fn read_file(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).map_err(|e| Error::data(path, format!("not a readable safetensors file: {e}")))
}

/// Writes the replica's tensor files into `dir` (a staging directory), fsynced, and returns their
/// checksums with the parameters' digest. `model.safetensors` holds every variable of the model
/// (parameters and buffers) under its `VarStore` name, so `VarStore::load` can read it as well.
pub fn write_tensors(
    dir: &Path,
    model: &D2nn,
    optimizer: &dyn Optimizer,
    val_metric: Option<f64>,
    steps: &mut WriteSteps,
) -> Result<SavedTensors> {
    let mut files = BTreeMap::new();
    files.insert(MODEL_FILE.to_string(), write_file(&dir.join(MODEL_FILE), &on_cpu(model.parameters())?, steps)?);
    let state = on_cpu(optimizer.state_tensors())?;
    files.insert(OPTIMIZER_FILE.to_string(), write_file(&dir.join(OPTIMIZER_FILE), &state, steps)?);
    Ok(SavedTensors { files, params_sha256: param_digest(model)?, optimizer_steps: optimizer.steps(), val_metric })
}

/// The saved variables of a checkpoint directory, as stored (CPU).
pub fn read_params(dir: &Path) -> Result<Vec<(String, Tensor)>> {
    read_file(&dir.join(MODEL_FILE))
}

/// Copies the checkpoint's parameters into a freshly built model: every file's checksum first, then
/// exactly the same names, shapes and dtypes, then the loaded parameters' digest against the one
/// recorded at save time.
pub fn load_params(dir: &Path, meta: &CheckpointMeta, model: &D2nn) -> Result<()> {
    meta.verify_files(dir)?;
    load_verified_params(dir, meta, model)
}

fn load_verified_params(dir: &Path, meta: &CheckpointMeta, model: &D2nn) -> Result<()> {
    let path = dir.join(MODEL_FILE);
    let given = read_file(&path)?;
    load_exact("model variables", model.parameters(), &given).map_err(|e| Error::data(&path, e.to_string()))?;
    let digest = param_digest(model)?;
    if digest != meta.params_sha256 {
        return Err(Error::data(
            &path,
            format!("the loaded parameters' params_sha256 is {digest}, meta.json records {}", meta.params_sha256),
        ));
    }
    Ok(())
}

/// [`load_params`] plus the optimizer's state and step count: the replica continues exactly where
/// the saved one stopped.
pub fn load_state(dir: &Path, meta: &CheckpointMeta, model: &D2nn, optimizer: &mut dyn Optimizer) -> Result<()> {
    meta.verify_files(dir)?;
    load_verified_params(dir, meta, model)?;
    let path = dir.join(OPTIMIZER_FILE);
    let state = read_file(&path)?;
    optimizer.load_state(&state, meta.optimizer_steps).map_err(|e| Error::data(&path, e.to_string()))
}
