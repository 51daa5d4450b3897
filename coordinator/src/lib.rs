//! d2nn-coordinator: the coordinator actor, which drives replicas in this process or in worker
//! processes ([`coordinator`]); measurements built on training (benchmarks, the sweep's parts:
//! [`experiments`]); plots ([`plot`]). The `d2nn` binary's command line is in `src/cli/`.
pub mod coordinator;
pub mod experiments;
pub mod plot;
