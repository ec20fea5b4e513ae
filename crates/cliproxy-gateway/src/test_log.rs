//! The operational log captured for the unit tests, as `LEVEL message key=value...` lines
//! (test builds only).

use std::sync::{Arc, Mutex, PoisonError};

/// A slog drain keeping every record as one `LEVEL message key=value...` line.
#[derive(Clone, Default)]
pub(crate) struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// The lines logged so far.
    pub(crate) fn taken(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl slog::Drain for Lines {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        struct Text(String);
        impl slog::Serializer for Text {
            fn emit_arguments(
                &mut self,
                key: slog::Key,
                value: &std::fmt::Arguments<'_>,
            ) -> slog::Result {
                self.0.push_str(&format!(" {key}={value}"));
                Ok(())
            }
        }
        let mut text = Text(format!("{} {}", record.level().as_short_str(), record.msg()));
        let _ = slog::KV::serialize(&record.kv(), record, &mut text);
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(text.0);
        Ok(())
    }
}
