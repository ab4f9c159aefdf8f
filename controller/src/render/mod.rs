//! Configuration for the data plane, rendered from the model.

pub mod envoy;
