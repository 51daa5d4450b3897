//! A worker process of a multi-process run: its ractor_cluster node ([`node`]) and the joiner
//! actor that speaks for the process and starts one replica per generation ([`joiner`]); under TLS,
//! the cluster port's own listener ([`tls_listener`]).
pub mod joiner;
pub mod node;
pub mod tls_listener;
