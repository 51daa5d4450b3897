//! Training a D2NN: the step as a pure function of (model, batch, step context), which the
//! distributed runtime runs unchanged in every worker; evaluation; run outputs; and the bare
//! single-process loop; and the routing report of a trained one-controller D2NN.
mod evaluate;
mod local;
mod outputs;
mod routing;
mod stats;
mod step;
mod tensorboard;

pub use evaluate::{evaluate, is_binary, EvalMetrics};
pub use local::{
    build_model, controller_names, load_checkpoint, load_run, metrics_line, open_resume, resumed_baseline,
    steps_per_epoch, summarize, validation_accuracy, LocalRun,
};
pub use outputs::{MetricsLine, MetricsWriter, RunDir, Summary};
pub use routing::{routing_report, RightPaths, RoutingReport};
pub use stats::StepStats;
pub use step::{apply_update, policy_for_step, representable_targets, train_step, zero_grads, StepContext};
pub use tensorboard::{
    checkpoint_validation, controllers, line_scalars, run_controllers, summary_scalars, ControllerInfo,
};

#[cfg(test)]
mod tests;
