//! `offboard receiver`: a verifying SET receiver that prints every event it gets (to check a stream's wiring).

use anyhow::Context;
use offboard::config::Config;
use offboard::receiver::{Receiver, ReceiverConfig};

#[derive(clap::Args)]
pub struct ReceiverArgs {
    /// Address to listen on; register `http://ADDR/events` with `offboard streams add --push`.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// The transmitter's issuer (default: `issuer` of the configuration).
    #[arg(long)]
    issuer: Option<String>,
    /// The transmitter's JWKS (default: ISSUER/.well-known/jwks.json).
    #[arg(long)]
    jwks_uri: Option<String>,
    /// The audience of the stream.
    #[arg(long)]
    audience: String,
    /// Require this `Authorization` header on every push (the stream's --auth-header).
    #[arg(
        long,
        value_name = "VALUE",
        env = "OFFBOARD_STREAM_AUTH_HEADER",
        hide_env_values = true
    )]
    auth_header: Option<String>,
}

pub fn run(config: &Config, args: ReceiverArgs) -> anyhow::Result<()> {
    let ReceiverArgs {
        listen,
        issuer,
        jwks_uri,
        audience,
        auth_header,
    } = args;
    let issuer = issuer.unwrap_or_else(|| config.issuer.clone());
    let jwks_uri =
        jwks_uri.unwrap_or_else(|| format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')));
    receiver(
        &listen,
        ReceiverConfig {
            issuer,
            jwks_uri,
            audience,
            expect_authorization: auth_header,
        },
    )
}

fn receiver(listen: &str, config: ReceiverConfig) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = listen.parse().context("--listen must be HOST:PORT")?;
    eprintln!(
        "receiving SETs for audience `{}` from {} at http://{addr}/events (keys from {}); Ctrl-C stops",
        config.audience, config.issuer, config.jwks_uri
    );
    let receiver = std::sync::Arc::new(Receiver::new(config, true));
    actix_web::rt::System::new().block_on(async move {
        actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(offboard::receiver::configure(receiver.clone()))
        })
        .workers(1)
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?
        .run()
        .await
        .context("receiver failed")
    })
}
