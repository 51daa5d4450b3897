//! SIGTERM and SIGINT stop a training run gracefully: the step in flight finishes, a checkpoint is
//! written and the process exits 0, which is how Kubernetes stops a pod. A second signal exits at
//! once.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

/// For a worker process: resolves with the signal's name on the first SIGTERM or SIGINT (the
/// worker leaves the run; the coordinator goes on without it). Installed at once, on `rt`.
pub fn first_signal(rt: &tokio::runtime::Runtime) -> anyhow::Result<impl std::future::Future<Output = String>> {
    let _entered = rt.enter();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM".to_string(),
            _ = int.recv() => "SIGINT".to_string(),
        }
    })
}

/// Installs the handlers on `rt` before anything slow starts (a signal before installation would
/// kill the process outright) and returns the flag they set.
pub fn install(rt: &tokio::runtime::Runtime) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let _entered = rt.enter();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let flag = stop.clone();
    rt.spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("{name} again: exiting without a checkpoint");
                std::process::exit(130);
            }
            tracing::warn!("{name}: finishing the step in flight, then checkpointing and exiting");
        }
    });
    Ok(stop)
}
