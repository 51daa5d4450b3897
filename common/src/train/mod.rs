//! Training a D2NN: the step as a pure function of (model, batch, step context), which the
//! distributed runtime runs unchanged in every worker; the run ledger every driver shares; the bare
//! single-process loop; building and loading models; evaluation, run outputs, and the routing report
//! of a trained one-controller D2NN.
mod counterfactual;
mod evaluate;
mod forced;
mod ledger;
mod local;
mod model;
mod outputs;
mod readout;
mod routing;
mod routing_render;
mod stats;
mod step;
mod tensorboard;

pub use counterfactual::QAlternatives;
pub use evaluate::{evaluate, is_binary, EvalMetrics};
pub use forced::{BranchPaths, MAX_JOINT_ACTIONS};
pub use ledger::{steps_per_epoch, Opened, ResumePoint, RunLedger, StepEnd, StepPlace};
pub use local::{restore_replica, LocalRun};
pub use model::{
    build_model, build_model_without_data, controller_names, load_checkpoint, load_run, summarize, validation_accuracy,
};
pub use outputs::{MetricsLine, MetricsWriter, RunDir, Summary};
pub use routing::{routing_report, RightPaths, RoutingReport, MAX_REPORT_JOINT_ACTIONS};
pub use stats::{StepSplit, StepStats};
pub use step::{
    apply_update, policy_for_step, representable_targets, step_losses, train_step, Routing, StepContext, StepLosses,
};
pub use tensorboard::{
    checkpoint_validation, controllers, line_scalars, run_controllers, summary_scalars, ControllerInfo,
};

#[cfg(test)]
mod tests;
