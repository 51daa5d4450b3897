//! d2nn-coordinator: the coordinator actor, the sweep driver and the CLI's building blocks.
pub mod plot;
