//! What the gateway's integration tests share.

use std::sync::{Arc, Mutex};

/// A logger drain that keeps every line as text — level, message and all key-values — to
/// search for planted secrets and for the lines a test expects.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<String>>>);

impl slog::Drain for Captured {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
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
        let _ = slog::KV::serialize(values, record, &mut text);
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(text.0);
        Ok(())
    }
}

impl Captured {
    /// Every line so far, one per line.
    pub(crate) fn text(&self) -> String {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n")
    }

    /// A logger writing here.
    pub(crate) fn logger(&self) -> slog::Logger {
        slog::Logger::root(slog::Fuse(self.clone()), slog::o!())
    }
}
