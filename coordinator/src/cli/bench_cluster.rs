//! `d2nn bench cluster`: training throughput of worker processes (`d2nn coordinator` and
//! `--workers` × `d2nn worker`, a TCP ring on loopback) against as many in-process workers
//! (shared memory), same config, steps, batch and threads per worker, in interleaved rounds.
//! Every process is this binary. One JSON line per round, then one with the medians.
use d2nn_coordinator::experiments::median;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};
use clap::Args;
use d2nn_common::train::RunDir;
use d2nn_coordinator::coordinator::default_workers;
use d2nn_worker::protocol::cookie::COOKIE_ENV;

#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    #[arg(long, default_value = "configs/high_low.toml")]
    pub config: PathBuf,
    /// Workers on each side (in-process workers; worker processes).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Steps per measurement.
    #[arg(long, default_value_t = 60)]
    pub steps: u64,
    /// Rounds of (in-process run, multi-process run); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

fn d2nn() -> anyhow::Result<Command> {
    Ok(Command::new(std::env::current_exe().context("finding this binary")?))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits for a child and fails with its stderr's last lines when it failed.
fn finish(child: Child, what: &str) -> anyhow::Result<()> {
    let out = child.wait_with_output().with_context(|| format!("waiting for {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        bail!("{what} failed ({}): {}", out.status, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Ok(())
}

fn examples_per_sec(run_dir: &Path) -> anyhow::Result<f64> {
    Ok(RunDir::open(run_dir)?.read_summary()?.examples_per_sec)
}

pub fn run(args: ClusterBenchArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.rounds == 0 || args.steps == 0 {
        bail!("bench cluster needs --workers, --rounds and --steps of at least 1");
    }
    let threads = (default_workers() / args.workers).max(1).to_string();
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    // A fresh secret per benchmark; the worker processes inherit it from the environment.
    let cookie = format!("bench-cluster-{}-{:x}", std::process::id(), rand_word());
    let (workers, steps) = (args.workers.to_string(), args.steps.to_string());
    let config = args.config.display().to_string();
    let common = ["--config", config.as_str(), "--workers", workers.as_str(), "--max-steps", steps.as_str(), "--quiet"];
    let (mut in_process, mut processes, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let inproc_dir = scratch.path().join(format!("inproc{round}"));
        let child = d2nn()?
            .arg("train")
            .args(common)
            .arg("--run-dir")
            .arg(&inproc_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        finish(child, "the in-process run")?;
        let procs_dir = scratch.path().join(format!("procs{round}"));
        let listen = format!("127.0.0.1:{}", free_port()?);
        let coordinator = d2nn()?
            .env(COOKIE_ENV, &cookie)
            .arg("coordinator")
            .args(common)
            .args(["--listen", &listen, "--run-dir"])
            .arg(&procs_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut worker_procs = Vec::new();
        for _ in 0..args.workers {
            let w = d2nn()?
                .env(COOKIE_ENV, &cookie)
                .args(["worker", "--join", &listen, "--threads", &threads])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            worker_procs.push(w);
        }
        finish(coordinator, "the coordinator")?;
        for (i, w) in worker_procs.into_iter().enumerate() {
            finish(w, &format!("worker process {i}"))?;
        }
        let (a, b) = (examples_per_sec(&inproc_dir)?, examples_per_sec(&procs_dir)?);
        println!(
            "{}",
            serde_json::json!({
                "round": round, "workers": args.workers, "threads_per_worker": threads.parse::<usize>().unwrap_or(1),
                "in_process_ex_per_s": a, "processes_ex_per_s": b, "processes_over_in_process": b / a,
            })
        );
        in_process.push(a);
        processes.push(b);
        ratios.push(b / a);
    }
    println!(
        "{}",
        serde_json::json!({
            "median_in_process_ex_per_s": median(in_process), "median_processes_ex_per_s": median(processes),
            "median_ratio": median(ratios), "rounds": args.rounds, "steps": args.steps,
        })
    );
    Ok(())
}

/// Not a secret of any strength beyond this benchmark's loopback run: the clock's nanoseconds.
fn rand_word() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
