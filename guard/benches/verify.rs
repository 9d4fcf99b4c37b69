//! Guard verification throughput on one core, in-process: `Guard::check` on one access token again and again
//! (the verified-token cache warm: a SHA-256 of the token, a lookup, the revocation check, the freshness check),
//! beside what a cache miss costs (the RS256 signature check alone, `jsonwebtoken::decode` under the key offboard
//! publishes, as `Guard` makes it on a token it has not seen).
//!
//! ```text
//! taskset -c 1 cargo bench -p offboard-guard --bench verify
//! ```
//!
//! A real offboard (SQLite in a temp dir) and the guard's feed run on a second thread with their own runtime;
//! the measured calls run on the main thread in a current-thread Tokio runtime. Every measured call must accept
//! the token: a refusal (a stale feed, say) panics rather than being timed.
#![expect(
    clippy::expect_used,
    reason = "bench set-up: a panic is a failed run with its message"
)]

#[path = "../tests/guard/harness.rs"]
#[expect(
    dead_code,
    unused_macros,
    unused_imports,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "the tests' harness: only part of it is used here, and a panic is a failed run"
)]
mod harness;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use offboard_guard::{Guard, GuardConfig};
use serde_json::Value;

use harness::{Backend, Offboard};

/// Starts offboard and a guard on another thread; returns the guard, a user's access token and the JWKS.
fn setup() -> (Guard, String, String, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let ob = Offboard::start(Backend::Sqlite);
            let (stream, secret) = ob.poll_stream("bench").await;
            let guard = Guard::start(GuardConfig::new(&ob.issuer, &ob.issuer, stream, secret))
                .await
                .expect("the guard starts");
            ob.create_user("bench@example.com").await;
            let token = ob.login("bench@example.com").access_token;
            let jwks = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a client")
                .get(format!("{}/.well-known/jwks.json", ob.issuer))
                .send()
                .await
                .expect("the JWKS")
                .text()
                .await
                .expect("the JWKS");
            tx.send((guard, token, jwks, ob.issuer.clone()))
                .expect("the bench waits");
            // offboard and the guard's feed keep running until the process ends.
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("set-up")
}

fn verify(c: &mut Criterion) {
    let (guard, token, jwks, issuer) = setup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(guard.check(&token)).expect("the token is accepted");

    let mut group = c.benchmark_group("guard");
    group.throughput(Throughput::Elements(1));
    group.bench_function("check (verified-token cache warm)", |b| {
        b.iter(|| rt.block_on(guard.check(black_box(&token))).expect("accepted"));
    });

    // What a miss costs: the signature check the cache saves.
    let kid = decode_header(&token).expect("a header").kid.expect("a kid");
    let set: JwkSet = serde_json::from_str(&jwks).expect("a JWKS");
    let jwk = set.find(&kid).expect("the token's key");
    let key = DecodingKey::from_jwk(jwk).expect("a key");
    let alg = decode_header(&token).expect("a header").alg;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&issuer]);
    validation.set_audience(&[&issuer]);
    decode::<Value>(&token, &key, &validation).expect("verifies");
    group.bench_function(format!("signature check alone ({alg:?}, a cache miss)"), |b| {
        b.iter(|| decode::<Value>(black_box(&token), &key, &validation).expect("verifies"));
    });
    group.finish();
    // Still accepted after the run: nothing above was a refusal in disguise.
    rt.block_on(guard.check(&token))
        .expect("the token is still accepted");
}

criterion_group!(benches, verify);
criterion_main!(benches);
