//! offboard: a SCIM 2.0 service provider and token authority that makes developer offboarding instant and provable.
//!
//! Crate map (ARCHITECTURE.md has the whole of it): `http/` (actix routes and extractors, thin) → `lifecycle/`
//! (use cases, one transaction each; the only code that ends access) → `db/` (connections, migrations, `repo/`
//! SQL). `scim/` is the pure SCIM protocol. `credentials` owns API clients; `config`, `error` and `telemetry` are
//! plumbing. Routes are registered in [`configure`], shared by `offboard serve` and the tests; handlers live in
//! `http/`.

pub mod audit;
pub mod config;
pub mod console;
pub mod credentials;
pub mod db;
pub mod error;
pub mod fanout;
pub mod http;
pub mod input;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod outbound;
pub mod receiver;
pub mod scim;
pub mod state;
pub mod telemetry;
pub mod tokens;

pub use http::{AppState, configure};
