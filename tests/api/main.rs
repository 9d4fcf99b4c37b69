//! HTTP tests of the real app, each on its own database, each run on SQLite and on PostgreSQL.
#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure with its message"
)]

mod harness;

mod audit;
mod auth;
mod batch;
mod cli;
mod console;
mod crash;
mod discovery;
mod fanout;
mod fixtures;
mod groups;
mod hold;
mod hostile;
mod idp;
mod lists;
mod metrics;
mod peers;
mod pending;
mod snapshot;
mod ssf;
mod state;
mod statements;
mod storage;
mod tokens;
mod users;
