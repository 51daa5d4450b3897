//! d2nn-coordinator: the coordinator actor and the CLI.
pub mod runtime;
