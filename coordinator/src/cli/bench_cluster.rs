//! `d2nn bench cluster`: training throughput of worker processes (`d2nn coordinator` and
//! `--workers` × `d2nn worker`, a TCP ring on loopback) against as many in-process workers
//! (shared memory), same config, steps, batch and threads per worker, in interleaved rounds.
//! Every process is this binary. One JSON line per round, then one with the medians. With `--tls-*`
//! every round also runs the processes with TLS on both planes, for TLS's cost side by side.
use d2nn_coordinator::experiments::median;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};
use clap::Args;
use d2nn_common::train::RunDir;
use d2nn_coordinator::coordinator::default_workers;
use d2nn_worker::protocol::cookie::COOKIE_ENV;

use super::commands::TlsArgs;

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
    /// With these, every round also runs the worker processes over TLS (both planes).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// What every multi-process run of a benchmark shares.
struct ProcessRun<'a> {
    common: &'a [&'a str],
    cookie: &'a str,
    workers: usize,
    threads: &'a str,
}

impl ProcessRun<'_> {
    /// A coordinator and its workers, all with `extra` (e.g. the TLS flags), into `run_dir`.
    fn run(&self, run_dir: &Path, extra: &[String]) -> anyhow::Result<()> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let coordinator = d2nn()?
            .env(COOKIE_ENV, self.cookie)
            .arg("coordinator")
            .args(self.common)
            .args(["--listen", &listen, "--run-dir"])
            .arg(run_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut worker_procs = Vec::new();
        for _ in 0..self.workers {
            let w = d2nn()?
                .env(COOKIE_ENV, self.cookie)
                .args(["worker", "--join", &listen, "--threads", self.threads])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            worker_procs.push(w);
        }
        finish(coordinator, "the coordinator")?;
        for (i, w) in worker_procs.into_iter().enumerate() {
            finish(w, &format!("worker process {i}"))?;
        }
        Ok(())
    }
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
    let (mut tls_rates, mut tls_ratios) = (Vec::new(), Vec::new());
    let procs = ProcessRun { common: &common, cookie: &cookie, workers: args.workers, threads: &threads };
    let tls_flags = match (&args.tls.tls_cert, &args.tls.tls_key, &args.tls.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(
            [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)]
                .into_iter()
                .flat_map(|(flag, file)| [flag.to_string(), file.display().to_string()])
                .collect::<Vec<_>>(),
        ),
        _ => None,
    };
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
        procs.run(&procs_dir, &[])?;
        let tls = match &tls_flags {
            Some(flags) => {
                let tls_dir = scratch.path().join(format!("tls{round}"));
                procs.run(&tls_dir, flags)?;
                Some(examples_per_sec(&tls_dir)?)
            }
            None => None,
        };
        let (a, b) = (examples_per_sec(&inproc_dir)?, examples_per_sec(&procs_dir)?);
        println!(
            "{}",
            serde_json::json!({
                "round": round, "workers": args.workers, "threads_per_worker": threads.parse::<usize>().unwrap_or(1),
                "in_process_ex_per_s": a, "processes_ex_per_s": b, "processes_over_in_process": b / a,
                "processes_tls_ex_per_s": tls, "tls_over_processes": tls.map(|t| t / b),
            })
        );
        in_process.push(a);
        processes.push(b);
        ratios.push(b / a);
        if let Some(t) = tls {
            tls_rates.push(t);
            tls_ratios.push(t / b);
        }
    }
    let tls_medians = (!tls_rates.is_empty()).then(|| (median(tls_rates), median(tls_ratios)));
    println!(
        "{}",
        serde_json::json!({
            "median_in_process_ex_per_s": median(in_process), "median_processes_ex_per_s": median(processes),
            "median_ratio": median(ratios), "rounds": args.rounds, "steps": args.steps,
            "median_processes_tls_ex_per_s": tls_medians.map(|m| m.0),
            "median_tls_over_processes": tls_medians.map(|m| m.1),
        })
    );
    Ok(())
}

/// Not a secret of any strength beyond this benchmark's loopback run: the clock's nanoseconds.
fn rand_word() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
