//! The command line: argument definitions here, one module per command family.
mod bench;
mod bench_allreduce;
mod bench_cluster;
mod bench_train;
mod checkpoints;
mod cluster;
mod commands;
mod config;
mod data;
mod doctor;
mod eval;
mod inspect;
mod logging;
mod plot;
mod signals;
mod sweep;
mod train;

use clap::Parser;

pub use commands::{Cli, Command};

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log_format) {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Config(cmd) => config::config(cmd),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Train(args) => train::train(args),
        Command::Coordinator(args) => cluster::coordinator(args),
        Command::Worker(args) => cluster::worker(args),
        Command::Eval(args) => eval::eval(args),
        Command::Checkpoints(cmd) => checkpoints::run(cmd),
        Command::Sweep(args) => sweep::sweep(args),
        Command::Plot(cmd) => plot::run(cmd),
        Command::Bench(cmd) => bench::bench(cmd),
        Command::Doctor(args) => doctor::doctor(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
