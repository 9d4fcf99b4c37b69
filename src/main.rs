//! The `offboard` command line: `serve`, `migrate`, `credentials`, `keys`, `users`, `token`, `streams`, `audit`,
//! `receiver`, `config`. Parses arguments and dispatches to the command group's file in `cli/`, which loads what it needs
//! and calls into the library; no logic of its own beyond presentation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

use cli::audit::AuditCommand;
use cli::config::ConfigCommand;
use cli::credentials::CredentialsCommand;
use cli::keys::KeysCommand;
use cli::receiver::ReceiverArgs;
use cli::streams::StreamsCommand;
use cli::token::TokenCommand;
use cli::users::UsersCommand;

#[derive(Parser)]
#[command(
    name = "offboard",
    version,
    about = "SCIM 2.0 provisioning target and token authority: offboarding that is instant and provable."
)]
struct Cli {
    /// TOML configuration file; every key can be overridden by an OFFBOARD_<KEY> environment variable.
    #[arg(long, global = true, env = "OFFBOARD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API credentials (the IdP's SCIM client, services that introspect, auditors).
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Signing keys: list them, rotate the active one.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Users: show their access, and the break-glass commands that end it.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Tokens for automation and tests.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Streams: the services that receive revocation events (Security Event Tokens).
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// The audit log: verify the chain, export entries, offboarding reports, retention.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The configuration: check it and show it as `serve` would load it.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a verifying SET receiver that prints every event it gets (to check a stream's wiring).
    Receiver(ReceiverArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    offboard::outbound::install_crypto_provider();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Config(cmd) = cli.command {
        // Loads the configuration itself, to report an invalid one rather than stop at it.
        return cli::config::run(cli.config.as_deref(), &cmd);
    }
    let config = cli::load_config(cli.config.as_deref(), matches!(cli.command, Command::Serve))?;
    if !matches!(cli.command, Command::Serve) {
        // What an administrator does here is recorded with actor `cli`.
        offboard::audit::set_process_actor("cli");
    }
    match cli.command {
        Command::Serve => cli::serve::run(config),
        Command::Migrate => cli::migrate::run(&config),
        Command::Credentials(cmd) => cli::credentials::run(&config, cmd),
        Command::Keys(cmd) => cli::keys::run(&config, cmd),
        Command::Users(cmd) => cli::users::run(&config, cmd),
        Command::Token(cmd) => cli::token::run(config, cmd),
        Command::Streams(cmd) => cli::streams::run(config, cmd),
        Command::Audit(cmd) => cli::audit::run(config, cmd),
        Command::Receiver(args) => cli::receiver::run(&config, args),
        Command::Config(_) => unreachable!("handled before the configuration is loaded"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and every argument a newcomer can pass has help text.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "offboard", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }
}
