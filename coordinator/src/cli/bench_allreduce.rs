//! `d2nn bench allreduce`: the TCP ring between processes of this binary on loopback. The parent
//! starts `--world` children (the hidden `--rank` mode); each binds 127.0.0.1:0 and prints its
//! address, the parent sends every child the ring plan on stdin, and rank 0 prints one JSON line
//! per buffer size. With `--tls-*` the children form a second ring over TLS on the same listener
//! and every repetition runs on both rings in turn, so the two are measured side by side.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use d2nn_worker::collective::new_session;
use d2nn_worker::collective::{Collective, TcpRing, TcpRingOptions, DEFAULT_CHUNK_BYTES};
use d2nn_worker::protocol::RingPlan;

use super::commands::TlsArgs;

/// How the parent hands its children the ring's one-off secret (never a command-line argument).
const BENCH_SECRET_ENV: &str = "D2NN_BENCH_RING_SECRET";

#[derive(Debug, Args)]
pub struct AllreduceArgs {
    /// Processes in the ring.
    #[arg(long, default_value_t = 2)]
    pub world: usize,
    /// Buffer sizes in MiB (f32 values, 2^20 bytes each MiB).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub sizes_mb: Vec<usize>,
    /// Timed all-reduces per size, after one warm-up (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Bytes per socket read or write within a ring step.
    #[arg(long, default_value_t = DEFAULT_CHUNK_BYTES)]
    pub chunk_bytes: usize,
    /// Internal: run as this rank of a ring whose plan arrives on stdin.
    #[arg(long, hide = true)]
    pub rank: Option<usize>,
    /// With these, each size is measured on a plain ring and on a TLS ring, alternating.
    #[command(flatten)]
    pub tls: TlsArgs,
}

pub fn run(args: AllreduceArgs) -> anyhow::Result<()> {
    if args.world == 0 || args.reps == 0 || args.sizes_mb.is_empty() {
        bail!("bench allreduce needs --world ≥ 1, --reps ≥ 1 and at least one size");
    }
    match args.rank {
        Some(rank) => child(&args, rank),
        None => parent(&args),
    }
}

/// Children that are killed if the parent gives up early, so none is left waiting for its peers.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn parent(args: &AllreduceArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the d2nn binary")?;
    let sizes = args.sizes_mb.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let mut children = Children(Vec::new());
    let (secret, session) = (new_session(), new_session());
    let mut tls_flags = Vec::new();
    for (flag, file) in
        [("--tls-cert", &args.tls.tls_cert), ("--tls-key", &args.tls.tls_key), ("--tls-ca", &args.tls.tls_ca)]
    {
        if let Some(file) = file {
            tls_flags.push(flag.to_string());
            tls_flags.push(file.display().to_string());
        }
    }
    for rank in 0..args.world {
        let child = Command::new(&exe)
            .env(BENCH_SECRET_ENV, &secret)
            .args(["bench", "allreduce", "--world", &args.world.to_string(), "--sizes-mb", &sizes])
            .args(["--reps", &args.reps.to_string(), "--chunk-bytes", &args.chunk_bytes.to_string()])
            .args(["--rank", &rank.to_string()])
            .args(&tls_flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting rank {rank}"))?;
        children.0.push(child);
    }
    let mut outputs: Vec<BufReader<ChildStdout>> = Vec::new();
    let mut addrs = Vec::new();
    for (rank, child) in children.0.iter_mut().enumerate() {
        let mut out = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).with_context(|| format!("reading rank {rank}'s address"))?;
        addrs.push(line.trim().parse().with_context(|| format!("rank {rank} reported {line:?}, not an address"))?);
        outputs.push(out);
    }
    for (rank, child) in children.0.iter_mut().enumerate() {
        let plan = RingPlan { rank, world: args.world, addrs: addrs.clone(), session: session.clone() };
        let mut stdin = child.stdin.take().context("child stdin")?;
        writeln!(stdin, "{}", serde_json::to_string(&plan)?)
            .with_context(|| format!("sending rank {rank} its plan"))?;
    }
    // Rank 0 reports; the others print nothing more.
    for line in outputs.swap_remove(0).lines() {
        println!("{}", line?);
    }
    for (rank, child) in children.0.iter_mut().enumerate() {
        let status = child.wait()?;
        if !status.success() {
            bail!("rank {rank} failed ({status})");
        }
    }
    Ok(())
}

fn child(args: &AllreduceArgs, rank: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the ring plan")?;
    let plan: RingPlan = serde_json::from_str(&line).context("parsing the ring plan")?;
    if plan.rank != rank {
        bail!("rank {rank} was sent the plan of rank {}", plan.rank);
    }
    let options = TcpRingOptions { chunk_bytes: args.chunk_bytes, ..TcpRingOptions::default() };
    // The parent hands its children a one-off secret through their environment.
    let secret = std::env::var(BENCH_SECRET_ENV).context("no ring secret from the parent")?;
    let mut rings = vec![("tcp", TcpRing::connect(&listener, &plan, options.clone(), secret.as_bytes())?)];
    if let Some(tls) = super::cluster::tls(&args.tls)? {
        // The plain ring is complete on every rank before any rank dials for this one.
        let plan = RingPlan { session: format!("{}/tls", plan.session), ..plan };
        let options = TcpRingOptions { tls: Some(tls), ..options };
        rings.push(("tls", TcpRing::connect(&listener, &plan, options, secret.as_bytes())?));
    }
    let world = args.world as f64;
    for &size_mb in &args.sizes_mb {
        let bytes = size_mb << 20;
        let mut buf = vec![0f32; bytes / 4];
        let mut times = vec![Vec::with_capacity(args.reps); rings.len()];
        for rep in 0..=args.reps {
            for (i, (transport, ring)) in rings.iter_mut().enumerate() {
                let seconds = time_one(ring, &mut buf)?;
                if buf.iter().any(|&v| f64::from(v) != world) {
                    bail!("rank {rank}: wrong sum for {size_mb} MiB over {transport}");
                }
                if rep > 0 {
                    times[i].push(seconds);
                }
            }
        }
        let mut plain_algbw = None;
        for ((transport, _), mut times) in rings.iter().zip(times) {
            times.sort_by(f64::total_cmp);
            let seconds = times[times.len() / 2];
            let algbw = bytes as f64 / seconds / 1e9;
            let baseline = *plain_algbw.get_or_insert(algbw);
            if rank == 0 {
                println!(
                    "{}",
                    serde_json::json!({
                        "transport": transport, "world": args.world, "size_mb": size_mb, "bytes": bytes,
                        "reps": args.reps, "chunk_bytes": args.chunk_bytes, "seconds": seconds,
                        "algbw_gb_s": algbw, "busbw_gb_s": algbw * 2.0 * (world - 1.0) / world,
                        "algbw_over_tcp": algbw / baseline,
                    })
                );
            }
        }
    }
    Ok(())
}

/// One all-reduce of ones after a barrier: its seconds. Ones sum to `world` exactly, a cheap check
/// that every rank got the whole sum.
fn time_one(ring: &mut TcpRing, buf: &mut [f32]) -> anyhow::Result<f64> {
    buf.fill(1.0);
    ring.barrier()?;
    let start = Instant::now();
    ring.all_reduce_sum(buf)?;
    Ok(start.elapsed().as_secs_f64())
}
