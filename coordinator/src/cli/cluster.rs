//! `d2nn coordinator` and `d2nn worker`: one run across processes and hosts. Both read the
//! torchrun-style environment (`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`) when their flags
//! are absent, so every pod of a job starts the same way.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use d2nn_coordinator::coordinator::{train_cluster, ClusterOptions, RuntimeError};
use d2nn_worker::cluster::joiner::JoinerOptions;
use d2nn_worker::cluster::node::{host_name, run_worker_node, NodeError, WorkerNodeOptions};
use d2nn_worker::protocol::cookie::{ClusterCookie, COOKIE_ENV};
use d2nn_worker::protocol::WorkerHello;
use d2nn_worker::tls::{TlsConfig, TlsFiles};

use super::commands::{CoordinatorArgs, TlsArgs, WorkerArgs};
use super::config::parse_device;
use super::signals;
use super::train::{prepare_run, report};

/// torchrun's default rendezvous port.
const DEFAULT_MASTER_PORT: u16 = 29500;

fn cookie(file: Option<&std::path::Path>) -> anyhow::Result<ClusterCookie> {
    let env = std::env::var(COOKIE_ENV).ok();
    Ok(ClusterCookie::resolve(env.as_deref(), file)?)
}

/// The TLS identity of `--tls-*`, loaded and checked before anything listens or connects.
pub(super) fn tls(args: &TlsArgs) -> anyhow::Result<Option<TlsConfig>> {
    match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            let files = TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() };
            Ok(Some(TlsConfig::load(&files)?))
        }
        (None, None, None) => Ok(None),
        // clap requires all three together; this is the same rule, said again.
        _ => bail!("--tls-cert, --tls-key and --tls-ca go together: give all three or none"),
    }
}

fn master_port() -> anyhow::Result<u16> {
    match std::env::var("MASTER_PORT") {
        Ok(text) => text.parse().with_context(|| format!("MASTER_PORT `{text}` is not a port number")),
        Err(_) => Ok(DEFAULT_MASTER_PORT),
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{flag} {value}: expected a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

pub fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    // The cookie first: a coordinator without one never listens.
    let cookie = cookie(args.cookie_file.as_deref()).context("the coordinator refuses to listen")?;
    let tls = tls(&args.tls).context("the coordinator refuses to listen")?;
    if args.workers == 0 {
        bail!("--workers (or WORLD_SIZE) must be at least 1");
    }
    if args.min_workers == 0 || args.min_workers > args.workers {
        bail!("--min-workers {}: expected 1 to --workers ({})", args.min_workers, args.workers);
    }
    let listen = match args.listen {
        Some(addr) => addr,
        None => SocketAddr::from(([0, 0, 0, 0], master_port()?)),
    };
    let options = ClusterOptions {
        listen,
        cookie,
        tls,
        heartbeat_interval: seconds("--heartbeat-interval", args.heartbeat_interval)?,
        heartbeat_timeout: seconds("--heartbeat-timeout", args.heartbeat_timeout)?,
        join_timeout: seconds("--join-timeout", args.join_timeout)?,
        min_workers: args.min_workers,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let stop = signals::install(&rt)?;
    let mut run = prepare_run(&args.run, args.workers)?;
    run.stop = Some(stop);
    run.options.digest_every = args.verify_replicas_every;
    let (config_file, run_dir) = (run.config_file.clone(), run.run_dir.clone());
    let result = rt.block_on(train_cluster(run, options));
    // A stop before the end is not a finished run: a restarted job must run again (and resume).
    let stopped = matches!(result, Err(RuntimeError::Stopped { .. }));
    report(result, (&config_file, &run_dir, args.workers), "d2nn coordinator")?;
    if stopped {
        bail!("stopped before the run finished; restart with --auto-resume (or --resume) to continue");
    }
    Ok(())
}

pub fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let cookie = cookie(args.cookie_file.as_deref()).context("the worker cannot authenticate")?;
    let tls = tls(&args.tls).context("the worker cannot authenticate")?;
    let join = match args.join {
        Some(addr) => addr,
        None => match std::env::var("MASTER_ADDR") {
            Ok(host) => format!("{host}:{}", master_port()?),
            Err(_) => bail!("give --join HOST:PORT (or set MASTER_ADDR and MASTER_PORT)"),
        },
    };
    let device = parse_device(&args.device)?;
    let label = format!("{} pid {} {}", host_name(), std::process::id(), args.device);
    let options = WorkerNodeOptions {
        join: join.clone(),
        cookie,
        tls,
        joiner: JoinerOptions {
            device,
            data_dir: args.data_dir,
            ring_bind: args.ring_listen,
            hello: WorkerHello { label, preferred_rank: args.rank },
            threads: args.threads,
        },
        connect_timeout: seconds("--connect-timeout", args.connect_timeout)?,
        auth_timeout: Duration::from_secs(10),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let leave = signals::first_signal(&rt)?;
    let result = rt.block_on(run_worker_node(options, leave));
    let code = match result {
        Ok(message) => {
            println!("{message}");
            0
        }
        // Not a finished run (so a Job replaces the pod), nor a failure: its documented code.
        Err(NodeError::Left { why }) => {
            println!("left the run ({why}); the coordinator goes on without this worker");
            LEFT_ON_SIGNAL
        }
        Err(e) => {
            eprintln!("error: worker of the coordinator at {join}: {e}");
            1
        }
    };
    exit_now(code)
}

/// A worker's exit status after leaving on SIGTERM or SIGINT: 128 + SIGTERM, the shell's code for
/// "ended by SIGTERM", documented in docs/runtime.md.
const LEFT_ON_SIGNAL: i32 = 143;

/// Ends a worker process without running libtorch's static destructors. A replica thread that did
/// not return in time (or one of libtorch's pool threads) may still be inside libtorch, and the
/// destructors racing with it killed workers with SIGSEGV or SIGABRT after their last line (3 of 6
/// trials of `kill -9` of the coordinator). Everything this process wrote is flushed first; its
/// files were written and closed by then (a worker writes checkpoints only through completed
/// saves).
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit only ends the process; nothing after it runs.
    unsafe { libc::_exit(code) }
}
