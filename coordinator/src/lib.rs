//! d2nn-coordinator: the coordinator actor and its in-process runtime, sweep plots, and the pieces
//! of the `d2nn` command line.
pub mod coordinator;
pub mod experiments;
pub mod plot;
