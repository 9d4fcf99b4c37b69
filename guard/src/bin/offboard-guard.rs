//! `offboard-guard`: the forward-auth sidecar (nginx `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz`).
//! See `offboard_guard::sidecar` for what it answers, and the README section "Protect a service" for the proxy
//! configuration.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use offboard_guard::GuardConfig;

fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a positive number of seconds"))
}

/// Forward-auth sidecar: verifies offboard access tokens for a reverse proxy and refuses revoked ones within the
/// freshness bound. `/check` answers 200 with X-Auth-Subject, X-Auth-User and X-Auth-Groups, 401 with a Bearer
/// challenge, or 503 while the revocation feed is stale; `/healthz` and `/readyz` for probes.
#[derive(Debug, Parser)]
#[command(name = "offboard-guard", version)]
struct Args {
    /// offboard's issuer URL, exactly as in its tokens' `iss` (https://, or http:// to a loopback address).
    #[arg(long, env = "OFFBOARD_GUARD_ISSUER")]
    issuer: String,
    /// The `aud` the protected service accepts.
    #[arg(long, env = "OFFBOARD_GUARD_AUDIENCE")]
    audience: String,
    /// This sidecar's own stream, one per running sidecar: a poll stream (POST /ssf/streams without `delivery`),
    /// or with --push a push stream whose `endpoint_url` is this sidecar's /ssf/push.
    #[arg(long, env = "OFFBOARD_GUARD_STREAM_ID")]
    stream_id: String,
    /// The secret of the credential (scope ssf.manage) that owns the stream. Prefer the environment variable:
    /// a flag shows in the process list.
    #[arg(long, env = "OFFBOARD_GUARD_STREAM_CREDENTIAL", hide_env_values = true)]
    stream_credential: String,
    /// The address to listen on (the proxy must reach it; keep it private).
    #[arg(long, env = "OFFBOARD_GUARD_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Receive SETs pushed by offboard (RFC 8935) at POST /ssf/push instead of polling; the stream must be a push
    /// stream pointing there. Freshness is then confirmed from the stream's delivery progress every poll interval.
    #[arg(long, env = "OFFBOARD_GUARD_PUSH")]
    push: bool,
    /// With --push: the Authorization header value every push must carry (the stream's `authorization_header`).
    /// Prefer the environment variable.
    #[arg(
        long,
        env = "OFFBOARD_GUARD_PUSH_AUTHORIZATION",
        hide_env_values = true,
        requires = "push"
    )]
    push_authorization: Option<String>,
    /// How often the revocation stream is polled (with --push: how often its delivery progress is read), in
    /// seconds (fractions allowed).
    #[arg(long, env = "OFFBOARD_GUARD_POLL_INTERVAL", default_value = "1", value_parser = seconds)]
    poll_interval: Duration,
    /// How long after the last confirmed poll tokens are still accepted, in seconds; past it every check answers
    /// 503. Default: the poll interval + 5 s.
    #[arg(long, env = "OFFBOARD_GUARD_FRESHNESS_BOUND", value_parser = seconds)]
    freshness_bound: Option<Duration>,
    /// Keep the revocation state in this file (written atomically after every change) and start from it when it
    /// is at most one access-token lifetime old, so a restart while offboard is unreachable still refuses revoked
    /// tokens (the others get 503 until a poll succeeds). Default: no file; every start reads offboard's snapshot.
    #[arg(long, env = "OFFBOARD_GUARD_STATE_FILE")]
    state_file: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = GuardConfig::new(args.issuer, args.audience, args.stream_id, args.stream_credential);
    config.poll_interval = args.poll_interval;
    if args.push {
        config.delivery = offboard_guard::Delivery::Push {
            authorization: args.push_authorization,
        };
    }
    config.freshness_bound = args.freshness_bound;
    config.state_file = args.state_file;
    // Logs the configuration without the credential (GuardConfig's Debug leaves it out).
    tracing::info!("offboard-guard: {config:?}");
    let listener = match std::net::TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("offboard-guard: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("offboard-guard: listening on {addr}");
    }
    let result = actix_web::rt::System::new()
        .block_on(async move { offboard_guard::sidecar::serve(config, listener)?.await });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("offboard-guard: {e}");
            ExitCode::FAILURE
        }
    }
}
