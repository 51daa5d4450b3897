use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::bench::BenchCommand;

#[derive(Debug, Parser)]
#[command(
    name = "d2nn",
    version,
    about = "Train Dynamic Deep Neural Networks: networks whose controllers choose, per input, which modules run.",
    long_about = "Train Dynamic Deep Neural Networks (Liu & Deng, AAAI 2018): feed-forward graphs of modules plus \
control modules that choose, per input, which downstream modules run, trading accuracy for computation.\n\n\
Start here:\n  d2nn data fetch                       # datasets from Debian and PyPI packages\n  \
d2nn inspect --config configs/high_low.toml\n  d2nn train --config configs/high_low.toml --run-dir runs/hl\n  \
d2nn eval --run-dir runs/hl\n  \
d2nn train --resume runs/hl --max-steps 2000   # continue from runs/hl/checkpoints/LATEST\n\n\
Set RUST_LOG=debug for more detail."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch and describe the datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Show a run config as resolved from its file, D2NN_* variables and --set overrides.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a config's graph: nodes, shapes, parameters and FLOPs per node.
    Inspect(ConfigArgs),
    /// Train a D2NN and evaluate it on the test split, with in-process workers.
    Train(TrainArgs),
    /// Coordinate a multi-process run: listen for `d2nn worker` processes, drive their steps,
    /// checkpoint, and continue with the survivors when one is lost.
    ///
    /// Every peer needs the same cookie (D2NN_CLUSTER_COOKIE or --cookie-file, 16+ characters).
    /// The run directory must be shared storage visible at the same path to every worker.
    /// Example, three workers on one host:
    ///   export D2NN_CLUSTER_COOKIE=$(head -c 24 /dev/urandom | base64)
    ///   d2nn coordinator --config configs/high_low.toml --listen 127.0.0.1:29500 --workers 3 --run-dir runs/mn &
    ///   for i in 0 1 2; do d2nn worker --join 127.0.0.1:29500 --threads 1 & done
    /// Under torchrun-style launchers, MASTER_PORT and WORLD_SIZE are read when the flags are absent.
    #[command(verbatim_doc_comment)]
    Coordinator(CoordinatorArgs),
    /// Join a coordinator as one worker process (one replica; CPU or one GPU).
    ///
    /// Reads MASTER_ADDR, MASTER_PORT and RANK when --join and --rank are absent, so every pod of a
    /// job can start the same way. Exits 0 when the run finishes, non-zero when it fails, the
    /// coordinator is lost, or the cookie is refused.
    Worker(WorkerArgs),
    /// Recompute a trained run's test metrics from its saved model, or evaluate a checkpoint.
    Eval(EvalArgs),
    /// List and verify a run's checkpoints.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// Train one D2NN per λ plus the design's static baselines and a random-routing baseline; write
    /// sweep.json and tradeoff.png (accuracy, or F1 for binary tasks, against mean cost).
    Sweep(SweepArgs),
    /// Draw a sweep's trade-off plot or a run's training curves again, from the files they wrote.
    ///
    /// `d2nn train` writes curves.png and `d2nn sweep` writes tradeoff.png by themselves; this
    /// redraws them (for example after an upgrade) and overlays several sweeps as seeds:
    ///   d2nn plot sweep runs/sweep_cascade                        # runs/sweep_cascade/tradeoff.png
    ///   d2nn plot sweep runs/s0/sweep.json runs/s1/sweep.json -o seeds.png   # each seed and their mean
    ///   d2nn plot curves runs/hl                                  # runs/hl/curves.png
    /// TensorBoard reads the same series from every run directory: tensorboard --logdir runs
    #[command(subcommand, verbatim_doc_comment)]
    Plot(PlotCommand),
    /// Benchmarks (printed as JSON lines).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// What this machine offers: libtorch, threads, GPUs, NCCL, and a one-rank NCCL check per GPU.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Fail unless a GPU and NCCL are usable.
    #[arg(long)]
    pub require_gpu: bool,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Fetch Fashion-MNIST (Debian package dataset-fashion-mnist) and the LFW face/non-face set
    /// (scikit-image wheel) into the data directory, verified; skips what is already there.
    Fetch {
        /// Where the data goes.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Python whose pip downloads the scikit-image wheel.
        #[arg(long, default_value = ".venv/bin/python")]
        python: PathBuf,
    },
    /// Examples per class in each split, for every dataset and derived task.
    Info {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved config as TOML.
    Show(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Run config (TOML), e.g. configs/high_low.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a key, e.g. --set train.lambda=0.8 (repeatable; wins over the file and D2NN_* variables).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// What a training run is: shared by `train` and `coordinator`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run config (TOML), e.g. configs/high_low.toml [default with --resume: the checkpoint's config].
    #[arg(long, required_unless_present_any = ["resume", "auto_resume"])]
    pub config: Option<PathBuf>,
    /// Override a key, e.g. --set train.lambda=0.8 (repeatable; wins over the file and D2NN_* variables).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory for config.toml, metrics.jsonl, summary.json, the model and checkpoints/
    /// [default: the resumed run's directory, else runs/<config name>].
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Stop after N global steps (counted from the start of the run, also when resuming);
    /// schedules still follow the configured epochs.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// No progress bar (logs only).
    #[arg(long)]
    pub quiet: bool,
    /// Continue from a checkpoint: a run directory (its checkpoints/LATEST), a checkpoints/
    /// directory, or one checkpoint; any number of workers. Refused when the config differs in a
    /// key that changes what training computes.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Continue from the run directory's LATEST checkpoint when there is one, else start fresh
    /// (what a restarted job wants).
    #[arg(long, conflicts_with = "resume", requires = "run_dir")]
    pub auto_resume: bool,
    /// With --resume: accept a changed train.epochs, train.lr, train.schedule or data.test_limit.
    #[arg(long)]
    pub allow_config_change: bool,
    /// Checkpoint every N global steps (sets checkpoint.every_steps). A run also checkpoints at its
    /// end and on SIGTERM/SIGINT (after the step in flight).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// In-process workers (data-parallel replicas) [default: one per core]. Global batch = train.batch_size.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Device: cpu, cuda or cuda:K (workers on CUDA: rank r uses GPU K+r).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Gradient all-reduce: auto (NCCL on GPUs when libnccl loads, else shared memory), shared, nccl.
    #[arg(long, default_value = "auto")]
    pub collective: d2nn_worker::collective::Backend,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Address the coordinator's cluster node listens on [default: 0.0.0.0:$MASTER_PORT, or
    /// 0.0.0.0:29500].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Worker processes to train with; training starts when all of them joined [default: $WORLD_SIZE].
    #[arg(long, env = "WORLD_SIZE")]
    pub workers: usize,
    /// File holding the cluster cookie [default: the D2NN_CLUSTER_COOKIE variable]. Required: the
    /// coordinator refuses to listen without one.
    #[arg(long, value_name = "FILE")]
    pub cookie_file: Option<PathBuf>,
    /// Seconds between heartbeats to every worker.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub heartbeat_interval: f64,
    /// A worker silent for this many seconds is declared lost and training continues without it.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub heartbeat_timeout: f64,
    /// How long to wait for all --workers to join at the start.
    #[arg(long, default_value_t = 600.0, value_name = "SECS")]
    pub join_timeout: f64,
    /// After losing workers, continue while at least this many remain.
    #[arg(long, default_value_t = 1)]
    pub min_workers: usize,
    /// Compare every replica's parameter digest after every N-th step and fail the run if they
    /// differ (one pass over the parameters per replica).
    #[arg(long, value_name = "N")]
    pub verify_replicas_every: Option<u64>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Mutual TLS on both planes: the coordinator–worker sessions and the workers' gradient ring.
/// All three or none; without them both planes are plain TCP, authenticated by the cookie alone.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate this process presents (then any intermediates); turns TLS on. Every peer
    /// is both client and server: the certificate needs no name, and either no extended key usage
    /// or both serverAuth and clientAuth.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): a peer's certificate must chain to one of them, or it is refused.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The coordinator's HOST:PORT [default: $MASTER_ADDR:$MASTER_PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// The rank this worker asks for; the coordinator assigns ranks in this order [default: $RANK].
    #[arg(long, env = "RANK")]
    pub rank: Option<usize>,
    /// Device of this worker's replica: cpu or cuda:N. Workers that are all on GPUs reduce through
    /// NCCL, others through a TCP ring between the workers.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// File holding the cluster cookie [default: the D2NN_CLUSTER_COOKIE variable].
    #[arg(long, value_name = "FILE")]
    pub cookie_file: Option<PathBuf>,
    /// This host's copy of the datasets [default: the run config's data.dir]; unused when the run
    /// streams them (data.source = "coordinator": the coordinator sends every step's examples).
    #[arg(long, env = "D2NN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the gradient ring listens; the other workers must reach this port. Port 0: any free port.
    #[arg(long, default_value = "0.0.0.0:0", value_name = "ADDR")]
    pub ring_listen: std::net::SocketAddr,
    /// libtorch threads of the replica [default: $OMP_NUM_THREADS, else every core]. Several
    /// workers on one host must share its cores: give each its part (e.g. --threads 1 for 2 workers
    /// on 2 cores), or they slow each other down several times over.
    #[arg(long, env = "OMP_NUM_THREADS")]
    pub threads: Option<usize>,
    /// How long to keep trying to reach the coordinator (it may start after its workers).
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub connect_timeout: f64,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// λ values, e.g. --lambdas 0.9,0.95,0.99 [default: the config's `sweep.lambdas`].
    #[arg(long, value_delimiter = ',')]
    pub lambdas: Vec<f64>,
    /// Folder for every run, sweep.json and tradeoff.png [default: runs/sweep_<config name>].
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Stop each run after N steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Runs trained at once, the cores split evenly between them.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Skip the static baselines (e.g. when another sweep of the same design already trained them).
    #[arg(long)]
    pub no_baselines: bool,
}

#[derive(Debug, Subcommand)]
pub enum PlotCommand {
    /// tradeoff.png from sweep.json files (or sweep directories): the D2NN per λ, random routing
    /// at its rates, static baselines; several sweeps are drawn as seeds around their mean.
    Sweep {
        /// sweep.json files or the sweep directories holding them.
        #[arg(required = true, value_name = "SWEEP")]
        sweeps: Vec<PathBuf>,
        /// The PNG to write [default: tradeoff.png beside a sweep.json, else the first file's name
        /// with .png].
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Title instead of "<config> — test <metric> against cost".
        #[arg(long)]
        title: Option<String>,
    },
    /// curves.png in a run directory from its metrics.jsonl, checkpoints and summary.json.
    Curves {
        /// A run directory written by `d2nn train` (or a point of a sweep).
        run_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A run directory written by `d2nn train`.
    #[arg(long, required_unless_present = "checkpoint", conflicts_with = "checkpoint")]
    pub run_dir: Option<PathBuf>,
    /// A checkpoint directory, or a run directory meaning its checkpoints/LATEST.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also run every path through the controllers (at most 27 joint actions: every shipped design)
    /// on every test example and print how the controllers compare with random
    /// routing at their own rates (exact expectation, not sampled; F1 too on binary tasks) and with
    /// two oracles; written to routing.json in the run directory.
    #[arg(long)]
    pub routing: bool,
}

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// One line per checkpoint: step, epoch, validation metric, size; marks LATEST and the best.
    List {
        /// A run directory, or its checkpoints/ directory.
        dir: PathBuf,
    },
    /// A checkpoint's metadata, every file's checksum verified, and the parameters' digest
    /// (params_sha256) recomputed: equal digests mean bitwise-equal parameters.
    Inspect {
        /// A checkpoint directory, or a run directory meaning its checkpoints/LATEST.
        path: PathBuf,
        /// Print the metadata as JSON.
        #[arg(long)]
        json: bool,
    },
}
