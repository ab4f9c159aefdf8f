//! detour's core: what the controller decides, with nothing of how it runs.
//!
//! It holds the documents ([`docs`]: types and parsing from text), their validation
//! ([`validate`]) into a [`model`], the [`index`] both sources feed, the health of
//! checked targets as values ([`health`]), the priority tables ([`tables`]), what each
//! scheme is doing ([`views`]), the one function that decides both ([`decide`]), the
//! status API's document ([`report`]), the Envoy configuration ([`render`]) and who a
//! certificate speaks for and how certificates are issued ([`pki`]).
//!
//! It must not import tokio, hyper, axum, a Kubernetes client, or read or write files:
//! time is a parameter, parsing takes strings and bytes, and the crates above this one
//! read files, talk to servers and run tasks. Its dependency list enforces that.
#![forbid(unsafe_code)]

pub mod decide;
pub mod docs;
pub mod health;
pub mod index;
pub mod model;
pub mod pki;
pub mod render;
pub mod report;
pub mod tables;
pub mod validate;
pub mod views;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
