//! `d2nn`: train, evaluate and inspect Dynamic Deep Neural Networks.
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
