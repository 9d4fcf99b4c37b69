//! `offboard token`: tokens for automation and tests.

use clap::Subcommand;
use offboard::AppState;
use offboard::config::Config;
use offboard::tokens::{CLI_CLIENT, TokenRequest, UserKey};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint an access and refresh token for a user (client `offboard-cli`) and print the token response JSON.
    Mint {
        /// The userName (case-insensitive).
        #[arg(long)]
        user: String,
        /// Access-token lifetime in seconds (default `tokens.access_ttl_secs`, at most `tokens.max_access_ttl_secs`).
        #[arg(long)]
        ttl: Option<u64>,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// The `aud` (default `default_audience`, itself the issuer by default).
        #[arg(long)]
        audience: Option<String>,
    },
}

pub fn run(config: Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Mint {
        user,
        ttl,
        scope,
        audience,
    } = cmd;
    let db = super::open_db(&config, 2)?;
    let state = AppState::open(db.clone(), config)?;
    let res = state
        .tokens
        .login(
            &UserKey::UserName(user.clone()),
            CLI_CLIENT,
            &TokenRequest { scope, audience, ttl },
        )
        .map_err(|e| anyhow::anyhow!("cannot mint a token for `{user}`: {} ({e})", e.code()))?;
    state.tokens.activity.flush(&db)?;
    println!("{}", serde_json::to_string_pretty(&res)?);
    Ok(())
}
