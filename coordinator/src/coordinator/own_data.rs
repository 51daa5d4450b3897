//! `data.source = "coordinator"`: the coordinator reads each step's examples out of its own copy of
//! the data and sends every rank its share's bytes with the order; and, since the workers then hold
//! no data, it evaluates the saved model itself (the validation accuracy checkpoints are ranked by,
//! and the test metrics of `summary.json`).
use std::path::Path;

use d2nn_common::data::{DataSource, Dataset, Examples};
use d2nn_common::exec::D2nn;
use d2nn_common::train::{build_model, summarize, validation_accuracy, Summary};
use d2nn_worker::protocol::wire::MAX_MESSAGE_BYTES;
use tch::{Device, Kind};

use super::{RuntimeError, TrainRun};

/// Room in a step's order for everything but the examples' bytes (step, LR, baselines, framing).
const ORDER_OVERHEAD_BYTES: usize = 64 * 1024;
/// Bytes per example beyond its pixels: id, label and coarse label.
const LABEL_BYTES: usize = 4 + 8 + 8;

pub(super) struct OwnData {
    dataset: Dataset,
    /// A replica of the model for evaluating saved parameters; never trained here.
    model: D2nn,
}

impl OwnData {
    /// The coordinator's copy of the data when the config streams it (None otherwise), checked to
    /// fit a global batch into one order.
    pub(super) fn load(run: &TrainRun) -> Result<Option<OwnData>, RuntimeError> {
        if run.cfg.data.source != DataSource::Coordinator {
            return Ok(None);
        }
        let (dataset, model) = build_model(&run.cfg, &run.config_file, Device::Cpu)?;
        let pixel_bytes = if dataset.train.images().kind() == Kind::Uint8 { 1 } else { 4 };
        let per_example = dataset.input_shape.iter().product::<i64>() as usize * pixel_bytes + LABEL_BYTES;
        let batch = run.cfg.train.batch_size;
        if batch * per_example + ORDER_OVERHEAD_BYTES > MAX_MESSAGE_BYTES {
            return Err(RuntimeError::Coordinator(format!(
                "{}: key `data.source`: \"coordinator\" sends a step's examples in messages of at most {} bytes, \
                 and `train.batch_size` = {batch} examples of {per_example} bytes do not fit; lower the batch or read \
                 the data locally (`data.source = \"local\"`)",
                run.config_file, MAX_MESSAGE_BYTES
            )));
        }
        Ok(Some(OwnData { dataset, model }))
    }

    pub(super) fn train_examples(&self) -> usize {
        self.dataset.train.len()
    }

    pub(super) fn examples(&self, ids: &[u32]) -> Result<Examples, RuntimeError> {
        Ok(self.dataset.train.examples(ids)?)
    }

    fn load_params(&mut self, model_file: &Path) -> Result<(), RuntimeError> {
        self.model
            .vs
            .load(model_file)
            .map_err(|e| RuntimeError::Coordinator(format!("loading {} to evaluate it: {e}", model_file.display())))
    }

    /// Validation accuracy of the parameters in `model_file` (None when the task has no validation split).
    pub(super) fn validation(&mut self, run: &TrainRun, model_file: &Path) -> Result<Option<f64>, RuntimeError> {
        self.load_params(model_file)?;
        Ok(validation_accuracy(&run.cfg, &self.dataset, &self.model)?)
    }

    /// The test metrics of the parameters in `model_file`, as a replica's evaluation reports them.
    pub(super) fn summarize(
        &mut self,
        run: &TrainRun,
        model_file: &Path,
        (steps, wall_seconds, examples_per_sec, workers): (u64, f64, f64, usize),
    ) -> Result<Summary, RuntimeError> {
        self.load_params(model_file)?;
        Ok(summarize(&run.cfg, &self.dataset, &self.model, steps, wall_seconds, examples_per_sec, workers)?)
    }
}
