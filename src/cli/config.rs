//! `offboard config check`: load the configuration exactly as `serve` does (file, `OFFBOARD_*` environment,
//! `--config`), validate it, and print the effective configuration with every secret redacted. Touches neither
//! the database nor the key files.

use clap::Subcommand;
use offboard::config::{Config, Loaded, REDACTED};

/// Environment variables other commands read that are not configuration keys, shown (redacted) when set.
const OTHER_ENV: &[(&str, &str)] = &[(
    "OFFBOARD_STREAM_AUTH_HEADER",
    "the Authorization header `streams create` gives push endpoints and `receiver` expects",
)];

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration as `serve` would load it and print it with secrets redacted; exit 1 on an
    /// error.
    Check {
        /// Print one JSON document instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(file: Option<&std::path::Path>, cmd: &ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { json } = *cmd;
    let checked = Config::load(file)
        .map_err(anyhow::Error::from)
        .and_then(|loaded| {
            offboard::keys::Kek::check(&loaded.config)?;
            Ok(loaded)
        });
    let other_env: Vec<(&str, &str)> = OTHER_ENV
        .iter()
        .filter(|(name, _)| std::env::var_os(name).is_some())
        .copied()
        .collect();
    let file_json = file.map(|p| p.display().to_string());
    match checked {
        Ok(Loaded { config, unknown_keys }) => {
            if json {
                let environment: serde_json::Map<String, serde_json::Value> = other_env
                    .iter()
                    .map(|(name, _)| ((*name).to_owned(), REDACTED.into()))
                    .collect();
                super::print_json(&serde_json::json!({
                    "valid": true,
                    "config_file": file_json,
                    "config": serde_json::to_value(&config)?,
                    "unknown_keys": unknown_keys,
                    "environment": environment,
                }))?;
            } else {
                let sources = file_json.as_ref().map_or_else(
                    || "defaults and OFFBOARD_* environment (no file)".to_owned(),
                    |path| format!("defaults, {path}, OFFBOARD_* environment"),
                );
                println!("# effective configuration: {sources}");
                println!("# secrets are shown as \"{REDACTED}\" (the database password as ***)");
                for (name, what) in &other_env {
                    println!("# {name} = \"{REDACTED}\" ({what}; not a configuration key)");
                }
                print!("{}", toml::to_string_pretty(&config)?);
                for key in &unknown_keys {
                    eprintln!("warning: ignoring unknown configuration key `{key}`");
                }
                eprintln!("configuration is valid");
            }
            Ok(())
        }
        Err(e) => {
            if json {
                super::print_json(&serde_json::json!({
                    "valid": false,
                    "config_file": file_json,
                    "errors": [format!("{e:#}")],
                }))?;
            }
            Err(e)
        }
    }
}
