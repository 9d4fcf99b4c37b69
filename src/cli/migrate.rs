//! `offboard migrate`: apply pending database migrations, say which, and exit.

use offboard::config::Config;

pub fn run(config: &Config) -> anyhow::Result<()> {
    let db = super::open_db_unmigrated(config, 1)?;
    let applied = db.migrate()?;
    if applied.is_empty() {
        eprintln!(
            "database {} is up to date: no migration was pending",
            db.url().redacted()
        );
    } else {
        for name in &applied {
            println!("applied {name}");
        }
        eprintln!(
            "database {} is up to date: applied {} migration(s)",
            db.url().redacted(),
            applied.len()
        );
    }
    Ok(())
}
