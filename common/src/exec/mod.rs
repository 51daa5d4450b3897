//! Running a D2NN: modules built from a `Graph`, decision policies, the selective forward pass that
//! runs each node only on the examples routed to it, and a masked reference used by tests.
mod digest;
mod forward;
pub mod masked;
mod model;
mod policy;
mod rows;

pub use digest::{named_digest, param_digest};
pub use forward::{Decision, Forward, HeadOutput};
pub use model::{seeded_draws, D2nn, NodeModule};
pub use policy::{DecisionKey, Policy};

#[cfg(test)]
mod tests;
