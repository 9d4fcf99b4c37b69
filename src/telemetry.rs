//! tracing set-up: human-readable or JSON lines on stderr, filtered by `RUST_LOG` or the `log_level` config key.
//! Nothing here decides what is logged; see ARCHITECTURE.md, "Logging" (ids as fields, never secrets).
//!
//! In the human-readable format every field (the message included) has its control characters escaped
//! ([`EscapedFields`]): a logged value that came from a client (a userName, a receiver's error description) with a
//! newline or a terminal escape sequence cannot forge a log line. The JSON format escapes them already.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

use crate::config::LogFormat;

/// The default field formatting, with control characters escaped (see the module doc).
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> std::fmt::Result {
        let mut formatted = String::new();
        self.0.format_fields(Writer::new(&mut formatted), fields)?;
        writer.write_str(&crate::input::escape_control(&formatted))
    }
}

/// Installs the global subscriber once; later calls are no-ops (tests).
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields::default()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn client_values_cannot_forge_a_text_log_line() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields::default())
            .finish();
        let forged = "alice\n2026-01-01T00:00:00Z  INFO offboard: user admin granted\u{1b}[2K";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("request", path = %forged).in_scope(|| {
                tracing::info!(user.name = %forged, "created user {forged}");
            });
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert_eq!(
            text.matches("alice\\n2026").count(),
            3,
            "message, field and span field: {text}"
        );
        assert!(text.contains("\\x1b[2K"), "{text}");
    }
}
