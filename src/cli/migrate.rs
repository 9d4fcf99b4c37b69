//! `offboard migrate`: apply pending database migrations and exit.

use offboard::config::Config;

pub fn run(config: &Config) -> anyhow::Result<()> {
    let db = super::open_db(config, 1)?;
    eprintln!("database {} is up to date", db.url().redacted());
    Ok(())
}
