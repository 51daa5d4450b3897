//! One rank's replica: an actor ([`actor::WorkerActor`]) that speaks the step protocol, an engine
//! thread ([`handle`], [`engine`]) that owns the model, optimizer, dataset and collective, and the flat
//! gradient buffer the collective reduces ([`grad_buffer`]).
pub mod actor;
pub mod engine;
pub mod grad_buffer;
pub mod handle;

use tch::Device;

pub use actor::{WorkerActor, WorkerArgs};
pub use handle::EngineHandle;

/// Where a replica runs: the hosting process's decision, not the coordinator's (a worker process
/// knows its GPU; the coordinator knows the run). The run's part is `protocol::ReplicaSpec`.
#[derive(Debug, Clone)]
pub struct ReplicaHost {
    pub device: Device,
    /// libtorch intra-op threads of this rank (None: leave libtorch's default).
    pub threads: Option<usize>,
    /// Failures to inject (tests); none in a real run.
    pub faults: Faults,
}

impl ReplicaHost {
    pub fn new(device: Device) -> Self {
        ReplicaHost { device, threads: None, faults: Faults::default() }
    }
}

/// Failures a test injects into one replica, to drive the coordinator's failure paths.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Fail the step with this global number (the abort path).
    pub fail_step: Option<u64>,
    /// Take this long over every checkpoint save, while the replica stays alive and answers
    /// nothing else meanwhile (the coordinator's save deadline).
    pub stall_save: Option<std::time::Duration>,
    /// Spend this long per example of every step's share on top of the work (a slow host, for the
    /// coordinator's throughput balance).
    pub slow_per_example: Option<std::time::Duration>,
}

/// Why a replica did not start, in its own words: ractor words every failed start as "Actor
/// panicked during startup", also when `pre_start` returned an error (bad data, a bad config),
/// which is what a replica does on bad input; it panics on none.
pub fn startup_error(e: &ractor::SpawnErr) -> String {
    match e {
        ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}
