//! The throttle of client keys whose requests keep making the provider's credentials rest
//! (`server.security.cooldown_abuse`, issue 18). A credential rests only for its own faults
//! now (`providers::classify_error`), but a client can still cause some (a 429 per model it
//! names, a 5xx from a credential's own endpoint): past the limit, its key is refused with
//! 429 for a while, and the audit log says so.
//!
//! The state is one entry per client key name: the keys come from the configuration, so the
//! table is bounded by it (entries of keys gone after a reload are dropped when idle). The
//! guard (`Guard::cooldown_caused`, `Guard::cooldown_throttle`) turns its answers into log
//! lines, audit events and 429s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use cliproxy_netguard::CooldownAbuseConfig;

/// The rule named in the audit events and metrics of this throttle.
pub(crate) const RULE: &str = "cooldown_abuse";

/// The counts of each client key.
#[derive(Debug)]
pub(crate) struct CooldownAbuse {
    pub(crate) config: CooldownAbuseConfig,
    keys: Mutex<HashMap<String, KeyState>>,
}

#[derive(Debug, Default)]
struct KeyState {
    /// When the current window began (guard clock, milliseconds).
    window_start: u64,
    /// Cool-downs caused in the current window.
    count: u32,
    /// Until when the key is refused (milliseconds); 0 when it is not.
    throttled_until: u64,
    /// The second of the last refusal line written, and the refusals since without a line
    /// (the same summarising rule as the guard's violation lines).
    last_line: Option<u64>,
    left_out: u64,
    /// The address of the last refused request, for the summary line.
    ip: Option<IpAddr>,
}

impl CooldownAbuse {
    /// The throttle of `config`; a zero window or throttle time is refused, naming the key.
    pub(crate) fn new(config: &CooldownAbuseConfig) -> Result<Self, String> {
        for (value, key) in [(config.window, "window"), (config.throttle_for, "throttle_for")] {
            if config.enabled && value.is_zero() {
                return Err(format!(
                    "`server.security.cooldown_abuse.{key}` must be longer than 0 (or set `enabled: false`)"
                ));
            }
        }
        Ok(Self { config: config.clone(), keys: Mutex::default() })
    }

    fn millis(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts one cool-down caused by `key` at `now` (milliseconds). `Some(count)` when this
    /// one is past the limit and starts the throttle.
    pub(crate) fn record(&self, key: &str, now: u64) -> Option<u32> {
        if !self.config.enabled {
            return None;
        }
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = keys.entry(key.to_owned()).or_default();
        if state.count == 0
            || now.saturating_sub(state.window_start) >= Self::millis(self.config.window)
        {
            state.window_start = now;
            state.count = 0;
        }
        state.count = state.count.saturating_add(1);
        if state.count > self.config.max_per_window.get() && state.throttled_until <= now {
            state.throttled_until = now.saturating_add(Self::millis(self.config.throttle_for));
            let count = state.count;
            // A new window starts with the throttle: the key earns its next one afresh.
            state.count = 0;
            return Some(count);
        }
        None
    }

    /// `Err` while `key` is throttled: how long it still is, and `Some(left_out)` when this
    /// refusal's audit line is due (at most one per key and second).
    pub(crate) fn check(
        &self,
        key: &str,
        ip: IpAddr,
        now: u64,
        second: u64,
    ) -> Result<(), (Duration, Option<u64>)> {
        if !self.config.enabled {
            return Ok(());
        }
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(state) = keys.get_mut(key) else { return Ok(()) };
        if state.throttled_until <= now {
            return Ok(());
        }
        let wait = Duration::from_millis(state.throttled_until - now);
        state.ip = Some(ip);
        if state.last_line == Some(second) {
            state.left_out += 1;
            return Err((wait, None));
        }
        state.last_line = Some(second);
        Err((wait, Some(std::mem::take(&mut state.left_out))))
    }

    /// The refusals left out in seconds that have ended, one summary per key; forgets keys
    /// with nothing counted, no throttle and nothing pending.
    pub(crate) fn take_pending(&self, now: u64, second: u64) -> Vec<(String, Option<IpAddr>, u64)> {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut pending = Vec::new();
        let window = Self::millis(self.config.window);
        keys.retain(|key, state| {
            if state.last_line.is_some_and(|last| last < second) && state.left_out > 0 {
                pending.push((key.clone(), state.ip, std::mem::take(&mut state.left_out)));
            }
            let counting = state.count > 0 && now.saturating_sub(state.window_start) < window;
            counting || state.throttled_until > now || state.left_out > 0
        });
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abuse(max: u32) -> CooldownAbuse {
        let mut config = CooldownAbuseConfig::default();
        config.max_per_window = std::num::NonZeroU32::new(max).unwrap();
        config.window = Duration::from_secs(60);
        config.throttle_for = Duration::from_secs(300);
        CooldownAbuse::new(&config).unwrap()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn past_the_limit_within_the_window_the_key_is_throttled_for_a_while() {
        let abuse = abuse(2);
        assert_eq!(abuse.record("k", 1_000), None);
        assert_eq!(abuse.record("k", 2_000), None);
        assert!(abuse.check("k", IP, 2_000, 2).is_ok(), "at the limit, not past it");
        assert_eq!(abuse.record("k", 3_000), Some(3));
        let (wait, line) = abuse.check("k", IP, 3_000, 3).unwrap_err();
        assert_eq!((wait, line), (Duration::from_secs(300), Some(0)));
        // The same second: counted, no line; the next second's line carries it.
        assert_eq!(abuse.check("k", IP, 3_500, 3).unwrap_err().1, None);
        assert_eq!(abuse.check("k", IP, 4_000, 4).unwrap_err().1, Some(1));
        // Another key is not concerned; the throttle ends on time.
        assert!(abuse.check("other", IP, 4_000, 4).is_ok());
        assert!(abuse.check("k", IP, 303_000, 303).is_ok());
    }

    #[test]
    fn cooldowns_spread_over_more_than_the_window_never_add_up() {
        let abuse = abuse(2);
        for minute in 0..10 {
            assert_eq!(abuse.record("k", minute * 61_000), None);
            assert_eq!(abuse.record("k", minute * 61_000 + 1), None);
        }
        assert!(abuse.check("k", IP, 700_000, 700).is_ok());
    }

    #[test]
    fn summaries_are_written_for_what_was_left_out_and_idle_keys_forgotten() {
        let abuse = abuse(1);
        abuse.record("k", 0);
        abuse.record("k", 1);
        let _ = abuse.check("k", IP, 10, 0);
        let _ = abuse.check("k", IP, 20, 0);
        let _ = abuse.check("k", IP, 30, 0);
        assert_eq!(abuse.take_pending(1_000, 1), vec![("k".to_owned(), Some(IP), 2)]);
        assert!(abuse.take_pending(2_000, 2).is_empty());
        // After the throttle and the window, the entry goes.
        abuse.take_pending(400_000, 400);
        assert!(abuse.keys.lock().unwrap().is_empty());
    }

    #[test]
    fn off_or_zero_durations() {
        let mut config = CooldownAbuseConfig::default();
        config.window = Duration::ZERO;
        let error = CooldownAbuse::new(&config).unwrap_err();
        assert!(error.contains("server.security.cooldown_abuse.window"), "{error}");
        config.enabled = false;
        let off = CooldownAbuse::new(&config).unwrap();
        for at in 0..100 {
            assert_eq!(off.record("k", at), None);
        }
        assert!(off.check("k", IP, 100, 0).is_ok());
    }
}
