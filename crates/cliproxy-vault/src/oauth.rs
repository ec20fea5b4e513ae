//! OAuth credentials: the tokens, the refresh request (RFC 6749 §6) and the token endpoint's
//! answer. The HTTP call itself belongs to the caller (the gateway runs it in a task of its
//! own with a timeout); this module only builds the request body and reads the reply, so the
//! parser that sees network bytes is small, pure and fuzzed.

use cliproxy_core::Secret;
use serde::Deserialize;
use zeroize::Zeroizing;

/// The largest token endpoint reply read; real ones are well under 8 KiB.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// `expires_in` beyond this (a year) is treated as this.
const MAX_EXPIRES_IN: u64 = 365 * 86_400;
/// `expires_in` when the endpoint leaves it out (RFC 6749 makes it optional).
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// The secret part of an `oauth` credential.
#[derive(Clone, Debug)]
pub struct OAuthTokens {
    /// The bearer token sent upstream.
    pub access_token: Secret,
    /// Exchanged at `token_url` for a new access token.
    pub refresh_token: Secret,
    /// Unix seconds when the access token expires.
    pub expires_at: u64,
    /// The token endpoint (https, or http to a loopback address).
    pub token_url: String,
    /// The OAuth client id sent with the refresh.
    pub client_id: String,
}

/// A successful refresh: the new tokens to persist.
#[derive(Debug)]
pub struct Refreshed {
    /// The new access token.
    pub access_token: Secret,
    /// A new refresh token when the endpoint rotated it.
    pub refresh_token: Option<Secret>,
    /// Unix seconds when the new access token expires.
    pub expires_at: u64,
}

/// Why a refresh failed. None of the variants carries a token or the endpoint's free text
/// (an `error_description` could quote what it was sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The endpoint refused the refresh token (4xx, e.g. `invalid_grant`): it will not work
    /// again until an operator stores a new one.
    #[error("the token endpoint refused the refresh (status {status}, error `{error}`)")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The OAuth `error` code, when it was a plain code.
        error: String,
    },
    /// The endpoint failed (5xx or another unexpected status); a later try may work.
    #[error("the token endpoint failed (status {status})")]
    Unavailable {
        /// HTTP status.
        status: u16,
    },
    /// The endpoint answered 200 with something that is not a usable token response.
    #[error("the token endpoint's reply is not a usable token response: {0}")]
    Malformed(&'static str),
}

impl RefreshError {
    /// Whether retrying later with the same refresh token can work.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }
}

impl OAuthTokens {
    /// Whether the access token must be refreshed at `now` (unix seconds), `ahead` seconds
    /// before it expires.
    pub fn needs_refresh(&self, now: u64, ahead: u64) -> bool {
        now.saturating_add(ahead) >= self.expires_at
    }

    /// Whether the access token must be refreshed at `now` (unix seconds), knowing it was
    /// obtained at `obtained` (unix seconds), when that is known: `min(ahead, lifetime / 2)`
    /// before it expires. A token living less than `ahead` would otherwise be due the moment
    /// it arrives and be refreshed on every request. The issue time is not stored with the
    /// credential, so a token read from the vault (`obtained` is `None`) falls due `ahead`
    /// before expiry, and its refresh then gives a token whose lifetime is known.
    pub fn refresh_due(&self, now: u64, ahead: u64, obtained: Option<u64>) -> bool {
        let lead = match obtained {
            Some(obtained) => ahead.min(self.expires_at.saturating_sub(obtained) / 2),
            None => ahead,
        };
        now.saturating_add(lead) >= self.expires_at
    }

    /// The `application/x-www-form-urlencoded` body of the refresh request, in a buffer
    /// zeroized on drop.
    pub fn refresh_form(&self) -> Zeroizing<String> {
        let mut form = Zeroizing::new(String::with_capacity(256));
        form.push_str("grant_type=refresh_token&refresh_token=");
        form_encode(self.refresh_token.expose(), &mut form);
        form.push_str("&client_id=");
        form_encode(&self.client_id, &mut form);
        form
    }

    /// These tokens after a successful refresh: the new access token and expiry, and the new
    /// refresh token when the endpoint rotated it. The old secrets are zeroized when the old
    /// value is dropped.
    pub fn refreshed(&self, refreshed: Refreshed) -> Self {
        Self {
            access_token: refreshed.access_token,
            refresh_token: refreshed.refresh_token.unwrap_or_else(|| self.refresh_token.clone()),
            expires_at: refreshed.expires_at,
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
        }
    }
}

/// Reads the token endpoint's reply to a refresh: `status` and at most
/// [`MAX_TOKEN_RESPONSE_BYTES`] of body. `now` is unix seconds.
pub fn parse_token_response(status: u16, body: &[u8], now: u64) -> Result<Refreshed, RefreshError> {
    #[derive(Deserialize)]
    struct Success {
        access_token: Secret,
        #[serde(default)]
        refresh_token: Option<Secret>,
        #[serde(default)]
        expires_in: Option<serde_json::Value>,
        #[serde(default)]
        token_type: Option<String>,
    }
    #[derive(Deserialize)]
    struct Failure {
        error: String,
    }

    if body.len() > MAX_TOKEN_RESPONSE_BYTES {
        return Err(RefreshError::Malformed("the reply is larger than 64 KiB"));
    }
    if status != 200 {
        if (400..500).contains(&status) && status != 408 && status != 429 {
            let error = serde_json::from_slice::<Failure>(body)
                .ok()
                .map(|f| f.error)
                .filter(|e| {
                    !e.is_empty()
                        && e.len() <= 64
                        && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                })
                .unwrap_or_else(|| "unknown".to_owned());
            return Err(RefreshError::Rejected { status, error });
        }
        return Err(RefreshError::Unavailable { status });
    }
    let reply: Success = serde_json::from_slice(body)
        .map_err(|_| RefreshError::Malformed("not a JSON object with an `access_token` string"))?;
    if let Some(kind) = &reply.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(RefreshError::Malformed("`token_type` is not `Bearer`"));
    }
    let usable = |token: &Secret| {
        !token.is_empty() && token.expose().bytes().all(|b| (0x21..0x7f).contains(&b))
    };
    if !usable(&reply.access_token) || reply.refresh_token.as_ref().is_some_and(|t| !usable(t)) {
        return Err(RefreshError::Malformed("a token is empty or not printable ASCII"));
    }
    let expires_in = match reply.expires_in {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or(RefreshError::Malformed("`expires_in` is not a positive integer"))?,
        // Some endpoints send it as a string.
        Some(serde_json::Value::String(s)) => s
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(RefreshError::Malformed("`expires_in` is not a positive integer"))?,
        Some(_) => return Err(RefreshError::Malformed("`expires_in` is not a positive integer")),
    };
    Ok(Refreshed {
        access_token: reply.access_token,
        refresh_token: reply.refresh_token,
        expires_at: now.saturating_add(expires_in.min(MAX_EXPIRES_IN)),
    })
}

/// Checks a token endpoint URL: `https://`, or `http://` to a loopback host (local token
/// services and tests). The refresh token is sent there, so nothing else is accepted.
pub(crate) fn validate_token_url(url: &str) -> Result<(), &'static str> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        let loopback = host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err("`token_url` must be https:// (http:// only to a loopback address)");
        }
        rest
    } else {
        return Err("`token_url` must be https:// (http:// only to a loopback address)");
    };
    if rest.is_empty()
        || rest.starts_with('/')
        || url.len() > 2048
        || !url.bytes().all(|b| (0x21..0x7f).contains(&b))
        || rest.split(['/', '?', '#']).next().is_some_and(|authority| authority.contains('@'))
    {
        return Err("`token_url` is not a valid URL (no spaces, no user info, at most 2048 bytes)");
    }
    Ok(())
}

/// Appends `value` form-urlencoded (unreserved bytes kept, everything else `%XX`).
fn form_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFRESH: &str = "rt-planted-refresh-token+/=";

    fn tokens() -> OAuthTokens {
        OAuthTokens {
            access_token: Secret::from("at-old".to_owned()),
            refresh_token: Secret::from(REFRESH.to_owned()),
            expires_at: 1_000,
            token_url: "https://auth.example/token".to_owned(),
            client_id: "cli ent".to_owned(),
        }
    }

    #[test]
    fn the_refresh_form_is_encoded() {
        assert_eq!(
            tokens().refresh_form().as_str(),
            "grant_type=refresh_token&refresh_token=rt-planted-refresh-token%2B%2F%3D&client_id=cli%20ent"
        );
    }

    #[test]
    fn refresh_is_due_ahead_of_expiry() {
        let t = tokens();
        assert!(!t.needs_refresh(600, 300));
        assert!(t.needs_refresh(700, 300));
        assert!(t.needs_refresh(2_000, 0));
        assert!(t.needs_refresh(u64::MAX, u64::MAX));
    }

    /// Issue 18 item 19, driven by a clock of plain numbers: a 60 s token with `ahead` 5 min
    /// is refreshed every 30 s, not on every request (one a second here).
    #[test]
    fn refresh_is_due_at_half_a_short_life() {
        let mut t = tokens();
        t.expires_at = 1_060;
        assert!(!t.refresh_due(1_000, 300, Some(1_000)));
        assert!(!t.refresh_due(1_029, 300, Some(1_000)));
        assert!(t.refresh_due(1_030, 300, Some(1_000)));
        // A long-lived token keeps `ahead`; an unknown issue time keeps `ahead` too.
        t.expires_at = 4_600;
        assert!(!t.refresh_due(4_299, 300, Some(1_000)));
        assert!(t.refresh_due(4_300, 300, Some(1_000)));
        assert!(t.refresh_due(4_300, 300, None));
        // An issue time after the expiry (a skewed clock) means "due now", never a panic.
        assert!(t.refresh_due(4_600, 300, Some(9_000)));

        // Ten minutes of one request a second: each refresh yields a new 60 s token.
        let mut t = tokens();
        let mut obtained = None;
        t.expires_at = 1_060;
        let mut refreshes = 0;
        for now in 1_000..1_600 {
            if t.refresh_due(now, 300, obtained) {
                refreshes += 1;
                t.expires_at = now + 60;
                obtained = Some(now);
            }
        }
        assert_eq!(refreshes, 20, "one refresh per 30 s over 600 s");
    }

    #[test]
    fn successful_replies_are_read() {
        let r = parse_token_response(
            200,
            br#"{"access_token":"at-new","refresh_token":"rt-new","expires_in":3600,"token_type":"Bearer"}"#,
            100,
        )
        .unwrap();
        assert_eq!(r.access_token.expose(), "at-new");
        assert_eq!(r.expires_at, 3700);
        let next = tokens().refreshed(r);
        assert_eq!(next.refresh_token.expose(), "rt-new");
        assert_eq!(next.token_url, "https://auth.example/token");

        // No rotation: the old refresh token stays; no expires_in: one hour.
        let r = parse_token_response(200, br#"{"access_token":"at-2"}"#, 0).unwrap();
        assert_eq!(r.expires_at, 3600);
        assert_eq!(tokens().refreshed(r).refresh_token.expose(), REFRESH);
        let r = parse_token_response(200, br#"{"access_token":"a","expires_in":"60"}"#, 0).unwrap();
        assert_eq!(r.expires_at, 60);
        let r = parse_token_response(200, br#"{"access_token":"a","expires_in":99999999999}"#, 0)
            .unwrap();
        assert_eq!(r.expires_at, MAX_EXPIRES_IN);
    }

    #[test]
    fn refusals_failures_and_hostile_replies() {
        assert_eq!(
            parse_token_response(400, br#"{"error":"invalid_grant","error_description":"x"}"#, 0)
                .unwrap_err(),
            RefreshError::Rejected { status: 400, error: "invalid_grant".to_owned() }
        );
        assert!(parse_token_response(401, b"<html>", 0).unwrap_err().is_permanent());
        // A free-text error code is not repeated.
        let e =
            parse_token_response(400, br#"{"error":"token rt-planted is bad"}"#, 0).unwrap_err();
        assert_eq!(e, RefreshError::Rejected { status: 400, error: "unknown".to_owned() });
        for status in [500, 502, 503, 429, 408, 302] {
            let e = parse_token_response(status, b"", 0).unwrap_err();
            assert_eq!(e, RefreshError::Unavailable { status });
            assert!(!e.is_permanent());
        }
        let hostile: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"[]".to_vec(),
            br#"{"access_token":""}"#.to_vec(),
            br#"{"access_token":123}"#.to_vec(),
            br#"{"access_token":"a b"}"#.to_vec(),
            b"{\"access_token\":\"a\nb\"}".to_vec(),
            br#"{"access_token":"a","refresh_token":""}"#.to_vec(),
            br#"{"access_token":"a","expires_in":-5}"#.to_vec(),
            br#"{"access_token":"a","expires_in":0}"#.to_vec(),
            br#"{"access_token":"a","expires_in":[1]}"#.to_vec(),
            br#"{"access_token":"a","token_type":"mac"}"#.to_vec(),
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            vec![b' '; MAX_TOKEN_RESPONSE_BYTES + 1],
            vec![0xff, 0xfe, 0x00],
        ];
        for body in hostile {
            let e = parse_token_response(200, &body, 0).unwrap_err();
            assert!(matches!(e, RefreshError::Malformed(_)), "{e}");
        }
    }

    #[test]
    fn token_urls_are_checked() {
        for good in [
            "https://auth.example/token",
            "https://auth.example:8443/oauth/token?x=1",
            "http://127.0.0.1:9000/token",
            "http://localhost/token",
            "http://[::1]:80/t",
        ] {
            assert_eq!(validate_token_url(good), Ok(()), "{good}");
        }
        for bad in [
            "http://auth.example/token",
            "http://10.0.0.1/token",
            "ftp://x/y",
            "https://",
            "https:///path",
            "https://user:pw@auth.example/token",
            "https://auth.example/a b",
            "token",
        ] {
            assert!(validate_token_url(bad).is_err(), "{bad}");
        }
    }
}
