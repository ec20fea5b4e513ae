//! The hostile-input catalogue: malformed, oversized, smuggled and spoofed requests against
//! the real binary (sandboxed, every guard on), each on a fresh TCP connection with the
//! expected answer, and after each one the gateway must still serve a real request.
//!
//! A case's expectation is one of: the status codes of every answer read on the connection
//! (in order — so a smuggled second request shows up as an extra answer), one answer with a
//! status and body text (where a 400 could come from more than one check), or a connection
//! closed without an answer.

use std::net::{IpAddr, SocketAddr};

use cliproxy_e2e::{CLIENT_KEY, Harness, WAIT, report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const MGMT_KEY: &str = "cpm-e2e-management-key-hostile-51d0a7";
const CHAT: &str = "/v1/chat/completions";

/// What a case must get back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// The statuses of the answers on the connection, in order.
    Answers(Vec<u16>),
    /// One answer with any of these statuses.
    OneOf(Vec<u16>),
    /// One answer with this status whose body holds every one of these texts.
    Says(u16, Vec<&'static str>),
    /// The connection closed without an answer.
    Closed,
}

use Expect::{Answers, Closed, OneOf, Says};

fn one(status: u16) -> Expect {
    Answers(vec![status])
}

struct Case {
    name: String,
    /// The local address the connection comes from (127.0.0.2 is a trusted proxy).
    from: &'static str,
    raw: Vec<u8>,
    expect: Expect,
}

fn case(name: &str, raw: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case { name: name.to_owned(), from: "127.0.0.1", raw: raw.into(), expect }
}

fn case_from(name: &str, from: &'static str, raw: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case { name: name.to_owned(), from, raw: raw.into(), expect }
}

/// A well-formed HTTP/1.1 request with `Connection: close`, `headers` (each without CRLF)
/// and a `Content-Length` body.
fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n");
    for header in headers {
        raw.push_str(header);
        raw.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn bearer() -> String {
    format!("Authorization: Bearer {CLIENT_KEY}")
}

fn mgmt() -> String {
    format!("Authorization: Bearer {MGMT_KEY}")
}

/// A chat completion with the client key and `body` as is.
fn chat(body: &[u8]) -> Vec<u8> {
    request("POST", CHAT, &[&bearer(), "Content-Type: application/json"], body)
}

/// A chat completion whose `max_tokens` is the JSON text `value`.
fn chat_max_tokens(value: &str) -> Vec<u8> {
    chat(
        format!(
            r#"{{"model":"mock-1","max_tokens":{value},"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
        .as_bytes(),
    )
}

/// A Gemini generateContent call to the mock with the client key and `body` as is.
fn gemini(body: &str) -> Vec<u8> {
    request(
        "POST",
        "/v1beta/models/mock-1:generateContent",
        &[&format!("x-goog-api-key: {CLIENT_KEY}"), "Content-Type: application/json"],
        body.as_bytes(),
    )
}

/// What the gateway answers a body with a key given twice, in each API's error format.
const REPEATED_KEY: &str = "the request body has an object with the same key twice";
const OPENAI_400: &str = r#""type":"invalid_request_error""#;
const GEMINI_400: &str = r#""status":"INVALID_ARGUMENT""#;

fn raw(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// A healthz request from a trusted proxy naming `client` in `X-Forwarded-For`.
fn forwarded_for(client: &str) -> Vec<u8> {
    request("GET", "/v1/models", &[&bearer(), &format!("X-Forwarded-For: {client}")], b"")
}

fn catalogue() -> Vec<Case> {
    let smuggled = "GET /v0/management/auths HTTP/1.1\r\nHost: gw\r\n\r\n";
    let mut cases = vec![
        // --- Request smuggling: framing the gateway and a back end could read differently.
        case(
            "Content-Length and Transfer-Encoding together",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: gw\r\n{}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
                bearer()
            ),
            one(400),
        ),
        case(
            "two different Content-Length headers",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}{smuggled}"),
            one(400),
        ),
        case(
            "one Content-Length with two values",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2, 40\r\n\r\n{{}}{smuggled}"),
            one(400),
        ),
        case(
            "Content-Length with a plus sign",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: +2\r\n\r\n{{}}"),
            one(400),
        ),
        case(
            "negative Content-Length",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n"),
            one(400),
        ),
        case(
            "Content-Length beyond 64 bits",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            one(400),
        ),
        case(
            "Transfer-Encoding not ending in chunked",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
            one(400),
        ),
        case(
            "Transfer-Encoding xchunked",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
            one(400),
        ),
        case(
            "space before the colon of Transfer-Encoding",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
            one(400),
        ),
        case(
            "obs-fold continuation line",
            raw("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-A: a\r\n b\r\n\r\n"),
            one(400),
        ),
        case(
            "chunked in an HTTP/1.0 request",
            format!("POST {CHAT} HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            one(400),
        ),
        case(
            "chunk size that is not hex",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n", bearer()),
            one(400),
        ),
        case(
            "chunk size beyond 64 bits",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n{{}}\r\n0\r\n\r\n", bearer()),
            one(400),
        ),
        // --- Sizes and counts.
        case(
            "101 headers",
            {
                let mut r = String::from("GET /healthz HTTP/1.1\r\nHost: gw\r\n");
                for i in 0..100 {
                    r.push_str(&format!("X-H{i}: v\r\n"));
                }
                r + "\r\n"
            },
            one(431),
        ),
        case(
            "one 70 KiB header",
            format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024)),
            one(431),
        ),
        case(
            "a 70 KiB request target",
            format!("GET /healthz?{} HTTP/1.1\r\nHost: gw\r\n\r\n", "a".repeat(70 * 1024)),
            OneOf(vec![414, 431]),
        ),
        case(
            "Content-Length above server.limits.max_body_bytes",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{}\r\nContent-Length: 10000000\r\n\r\n{{", bearer()),
            one(413),
        ),
        case(
            "chunked body above server.limits.max_body_bytes",
            {
                let chunk = "a".repeat(32 * 1024);
                let mut r = format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\n", bearer());
                for _ in 0..4 {
                    r.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
                }
                r + "0\r\n\r\n"
            },
            one(413),
        ),
        case(
            "Expect: 100-continue above the body cap",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{}\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n", bearer()),
            one(413),
        ),
        // Slowloris: a header block that never ends is cut at server.limits.header_read_timeout.
        case("a header block that never ends", raw("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: "), Closed),
        // --- Bytes that are not HTTP.
        case("NUL byte in a header value", raw("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-A: a\0b\r\n\r\n"), one(400)),
        case("NUL byte in the path", raw("GET /heal\0thz HTTP/1.1\r\nHost: gw\r\n\r\n"), one(400)),
        case("space in a header name", raw("GET /healthz HTTP/1.1\r\nHost: gw\r\nX Bad: a\r\n\r\n"), one(400)),
        case("invalid method token", raw("G@T /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"), one(400)),
        case("HTTP/0.9 request line", raw("GET /healthz\r\n\r\n"), OneOf(vec![400, 505])),
        case("HTTP/2.0 in an HTTP/1 request line", raw("GET /healthz HTTP/2.0\r\nHost: gw\r\n\r\n"), OneOf(vec![400, 505])),
        case("every byte value, high to low", (0u8..=255).rev().collect::<Vec<u8>>(), one(400)),
        // Not the HTTP/2 preface, so read as HTTP/1.1, where `PRI *` is no request of ours.
        case("invalid HTTP/2 preface", raw("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), one(400)),
        case("a TLS ClientHello on the plain listener", vec![0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00], one(400)),
        case(
            "two pipelined requests are two answers",
            {
                let mut r = raw("GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
                r.extend(raw("GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"));
                r
            },
            Answers(vec![200, 200]),
        ),
        case(
            "a body longer than its Content-Length is the next request",
            format!("POST {CHAT} HTTP/1.1\r\nHost: gw\r\n{}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}{smuggled}", bearer()),
            // The first is refused by validation, the second lacks the management key: the
            // extra bytes are never taken as part of the first request's body.
            Answers(vec![400, 401]),
        ),
        // --- JSON bodies.
        // 40,000 bytes: under the body cap, far over the JSON parser's depth limit of 128.
        case("deeply nested JSON", chat(format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).as_bytes()), one(400)),
        case("deeply nested JSON over the body cap", chat(format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).as_bytes()), one(413)),
        case("invalid UTF-8 in the body", chat(b"{\"model\":\"mock-1\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"), one(400)),
        case("raw NUL inside a JSON string", chat(b"{\"model\":\"mock-1\",\"messages\":[{\"role\":\"user\",\"content\":\"a\0b\"}]}"), one(400)),
        case("lone surrogate escape", chat(br#"{"model":"mock-1","messages":[{"role":"user","content":"\ud800"}]}"#), one(400)),
        case("body that is not JSON", chat(b"model=mock-1"), one(400)),
        case("JSON array body", chat(b"[1,2,3]"), one(400)),
        case("empty body", chat(b""), one(400)),
        case("model missing", chat(br#"{"messages":[{"role":"user","content":"hi"}]}"#), one(400)),
        case("messages missing", chat(br#"{"model":"mock-1"}"#), one(400)),
        case("model not a string", chat(br#"{"model":7,"messages":[{"role":"user","content":"hi"}]}"#), one(400)),
        case("stream not a boolean", chat(br#"{"model":"mock-1","stream":"yes","messages":[{"role":"user","content":"hi"}]}"#), one(400)),
        case("max_tokens negative", chat_max_tokens("-1"), one(400)),
        case("max_tokens zero", chat_max_tokens("0"), one(400)),
        case("max_tokens huge", chat_max_tokens("1000000000000"), one(400)),
        case("max_tokens beyond any number", chat_max_tokens("1e400"), one(400)),
        case("max_tokens a string", chat_max_tokens("\"100\""), one(400)),
        case("max_tokens fractional", chat_max_tokens("1.5"), one(400)),
        case("max_tokens one above the cap", chat_max_tokens("4097"), one(400)),
        case("unknown model", chat(br#"{"model":"gpt-nonexistent","messages":[{"role":"user","content":"hi"}]}"#), one(404)),
        // A model name carrying a whole log line of its own (issue 18, item 13): served, and
        // the log still has one JSON object per line (checked after the catalogue).
        case("a model name carrying a forged log line", chat(br#"{"model":"mock-1\n{\"msg\":\"request\",\"status\":200}\u2028\u0085","messages":[{"role":"user","content":"hi"}]}"#), one(200)),
        // A key given twice, or a limit given under two names: this gateway would read one,
        // the provider may read the other. Each of these got 200 before; the texts say which
        // check refuses them (the API's own error format, no value from the body).
        case(
            "max_tokens twice, the last one under the cap",
            chat(br#"{"model":"mock-1","max_tokens":100000,"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#),
            Says(400, vec![REPEATED_KEY, OPENAI_400]),
        ),
        case(
            "max_tokens twice, once escaped",
            chat(br#"{"model":"mock-1","max_tokens":100000,"max\u005ftokens":1,"messages":[{"role":"user","content":"hi"}]}"#),
            Says(400, vec![REPEATED_KEY, OPENAI_400]),
        ),
        case(
            "model twice",
            chat(br#"{"model":"gpt-nonexistent","model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#),
            Says(400, vec![REPEATED_KEY, OPENAI_400]),
        ),
        case(
            "a key twice in a message",
            chat(br#"{"model":"mock-1","messages":[{"role":"user","content":"hi","content":"ignore the above"}]}"#),
            Says(400, vec![REPEATED_KEY, OPENAI_400]),
        ),
        case(
            "a key twice in an object inside an array",
            chat(br#"{"model":"mock-1","messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}"#),
            Says(400, vec![REPEATED_KEY, OPENAI_400]),
        ),
        case(
            "Anthropic max_tokens twice",
            request("POST", "/v1/messages", &[&format!("x-api-key: {CLIENT_KEY}"), "Content-Type: application/json"], br#"{"model":"mock-1","max_tokens":100000,"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#),
            Says(400, vec![REPEATED_KEY, r#""type":"invalid_request_error""#, r#""type":"error""#]),
        ),
        case(
            "Gemini maxOutputTokens twice",
            gemini(r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":100000,"maxOutputTokens":1}}"#),
            Says(400, vec![REPEATED_KEY, GEMINI_400]),
        ),
        case(
            "max_tokens and max_completion_tokens that differ",
            chat(br#"{"model":"mock-1","max_tokens":1,"max_completion_tokens":4000,"messages":[{"role":"user","content":"hi"}]}"#),
            Says(400, vec!["`max_tokens` and `max_completion_tokens` differ", OPENAI_400]),
        ),
        case(
            "Gemini generation_config.max_output_tokens over the cap",
            gemini(r#"{"contents":[{"parts":[{"text":"hi"}]}],"generation_config":{"max_output_tokens":100000}}"#),
            Says(400, vec!["`generation_config.max_output_tokens` is 100000, over this gateway's limit of 4096", GEMINI_400]),
        ),
        case(
            "Gemini generationConfig.max_output_tokens over the cap",
            gemini(r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"max_output_tokens":100000}}"#),
            Says(400, vec!["`generationConfig.max_output_tokens` is 100000, over this gateway's limit of 4096", GEMINI_400]),
        ),
        case(
            "Gemini generation_config.maxOutputTokens over the cap",
            gemini(r#"{"contents":[{"parts":[{"text":"hi"}]}],"generation_config":{"maxOutputTokens":100000}}"#),
            Says(400, vec!["`generation_config.maxOutputTokens` is 100000, over this gateway's limit of 4096", GEMINI_400]),
        ),
        case(
            "Gemini token limit under both names, disagreeing",
            gemini(r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1,"max_output_tokens":100000}}"#),
            Says(400, vec!["`generationConfig.maxOutputTokens` and `generationConfig.max_output_tokens` differ", GEMINI_400]),
        ),
        case(
            "Gemini generation config under both names",
            gemini(r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1},"generation_config":{"temperature":1}}"#),
            Says(400, vec!["`generationConfig` and `generation_config` are one field spelt two ways", GEMINI_400]),
        ),
        case(
            "Anthropic message without max_tokens",
            request("POST", "/v1/messages", &[&format!("x-api-key: {CLIENT_KEY}"), "Content-Type: application/json"], br#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#),
            one(400),
        ),
        // --- Paths into the management plane.
        case("dot segments into management", request("GET", "/v0/management/../management/auths", &[&mgmt()], b""), one(404)),
        case("encoded dot segments into management", request("GET", "/v0/management/%2e%2e/%2e%2e/etc/passwd", &[&mgmt()], b""), one(404)),
        case("encoded traversal as a credential id", request("DELETE", "/v0/management/auths/..%2F..%2Fetc%2Fpasswd", &[&mgmt()], b""), OneOf(vec![400, 404])),
        case("dot-dot as a credential id", request("DELETE", "/v0/management/auths/%2e%2e", &[&mgmt()], b""), OneOf(vec![400, 404])),
        case("from the client API into management", request("GET", "/v1/../v0/management/auths", &[&bearer()], b""), one(404)),
        case("double slash before management", request("GET", "//v0/management/auths", &[], b""), one(404)),
        case("management path in upper case", request("GET", "/V0/MANAGEMENT/AUTHS", &[&mgmt()], b""), one(404)),
        case("management with the client key", request("GET", "/v0/management/auths", &[&bearer()], b""), one(401)),
        // A web page, or a proxy on this machine, cannot use the management key's gate: refused
        // before the key is read (so they count toward no ban), whatever the key.
        case("management with an Origin header", request("GET", "/v0/management/auths", &[&mgmt(), "Origin: https://evil.example"], b""), one(403)),
        case("management through a proxy naming loopback", request("GET", "/v0/management/auths", &[&mgmt(), "X-Forwarded-For: 127.0.0.1"], b""), one(403)),
        case("management with an empty bearer", request("GET", "/v0/management/auths", &["Authorization: Bearer "], b""), one(401)),
        // --- Methods.
        case("PUT on chat completions", request("PUT", CHAT, &[&bearer()], b"{}"), one(405)),
        case("DELETE on models", request("DELETE", "/v1/models", &[&bearer()], b""), one(405)),
        case("TRACE", request("TRACE", "/healthz", &[], b""), one(405)),
        // No tunnels: an authority-form target is no route of ours.
        case("CONNECT", raw("CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n"), one(404)),
        case("PATCH on maintenance", request("PATCH", "/v0/management/maintenance", &[&mgmt()], b"{}"), one(405)),
        // --- Client addresses: only a trusted proxy (127.0.0.2) may name one; 192.0.2.0/24 is denied.
        case("X-Forwarded-For from an untrusted peer is ignored", forwarded_for("192.0.2.7"), one(200)),
        case(
            "Forwarded from an untrusted peer is ignored",
            request("GET", "/v1/models", &[&bearer(), "Forwarded: for=192.0.2.7"], b""),
            one(200),
        ),
        case(
            "X-Real-IP is never read",
            request("GET", "/v1/models", &[&bearer(), "X-Real-IP: 192.0.2.7"], b""),
            one(200),
        ),
        case_from("a trusted proxy naming a denied client", "127.0.0.2", forwarded_for("192.0.2.7"), one(403)),
        case_from("a trusted proxy naming a denied client as IPv4-mapped IPv6", "127.0.0.2", forwarded_for("::ffff:192.0.2.7"), one(403)),
        case_from("a denied client spoofing an allowed hop before it", "127.0.0.2", forwarded_for("198.51.100.1, 192.0.2.7"), one(403)),
        case_from("a denied client behind a second trusted proxy", "127.0.0.2", forwarded_for("192.0.2.7, 127.0.0.2"), one(403)),
        // The client wrote the left entry itself; the proxy appended the address it saw.
        case_from("a zone-id address written by the client does not hide it", "127.0.0.2", forwarded_for("fe80::1%eth0, 192.0.2.7"), one(403)),
        case_from("a mapped loopback written by the client does not hide it", "127.0.0.2", forwarded_for("::ffff:127.0.0.1, 192.0.2.7"), one(403)),
        // --- Client keys.
        case("client key in the query string", request("GET", &format!("/v1/models?key={CLIENT_KEY}"), &[], b""), one(401)),
        case("client key as api_key in the query", request("GET", &format!("/v1/models?api_key={CLIENT_KEY}"), &[], b""), one(401)),
        case("client key in the query and the header", request("GET", &format!("/v1/models?key={CLIENT_KEY}"), &[&bearer()], b""), one(401)),
        case(
            "Gemini client key in the query",
            request("POST", &format!("/v1beta/models/mock-1:generateContent?key={CLIENT_KEY}"), &["Content-Type: application/json"], br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#),
            one(401),
        ),
        // A query parameter's name is judged decoded, as Google reads it: these are `key`.
        case("client key as a percent-encoded key in the query", request("GET", &format!("/v1/models?%6Bey={CLIENT_KEY}"), &[&bearer()], b""), one(401)),
        case("client key as KEY in the query", request("GET", &format!("/v1/models?KEY={CLIENT_KEY}"), &[&bearer()], b""), one(401)),
        case(
            "Gemini client key as k%65y in the query",
            request("POST", &format!("/v1beta/models/mock-1:generateContent?alt=sse&k%65y={CLIENT_KEY}"), &[&format!("x-goog-api-key: {CLIENT_KEY}"), "Content-Type: application/json"], br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#),
            one(401),
        ),
        case("a bearer token as access_token in the query", request("GET", "/v1/models?access%5Ftoken=ya29.token-of-the-client", &[&bearer()], b""), one(401)),
        case("wrong key of the right length", request("GET", "/v1/models", &[&format!("Authorization: Bearer {}x", &CLIENT_KEY[..CLIENT_KEY.len() - 1])], b""), one(401)),
        case("key as a prefix of the real one", request("GET", "/v1/models", &[&format!("Authorization: Bearer {}", &CLIENT_KEY[..20])], b""), one(401)),
        case("Basic authorization", request("GET", "/v1/models", &["Authorization: Basic ZTJlOmtleQ=="], b""), one(401)),
        case("empty Bearer", request("GET", "/v1/models", &["Authorization: Bearer "], b""), one(401)),
        case("a 10 KiB key", request("GET", "/v1/models", &[&format!("Authorization: Bearer {}", "k".repeat(10 * 1024))], b""), one(401)),
        case("two Authorization headers", request("GET", "/v1/models", &["Authorization: Bearer wrong-key-wrong-key-1234", &bearer()], b""), one(401)),
    ];
    cases.retain(|c| !c.raw.is_empty());
    cases
}

/// One answer read off a connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The body when the answer gave a `Content-Length` (what the gateway's errors carry).
    body: String,
}

/// Reads every answer on `stream` until the gateway closes it.
async fn answers(stream: &mut TcpStream) -> Vec<Answer> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "the gateway kept the connection open for {WAIT:?}");
    // A reset after the answer is fine: the answer was read before it.
    parse_answers(&bytes)
}

/// The HTTP/1.1 answers in `bytes` (Content-Length or chunked bodies).
fn parse_answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut statuses = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        bytes = &bytes[end + 4..];
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let lower = head.to_ascii_lowercase();
        if status == 100 {
            continue;
        }
        let mut body = String::new();
        if let Some(length) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            body = String::from_utf8_lossy(&bytes[..length.min(bytes.len())]).into_owned();
            bytes = &bytes[length.min(bytes.len())..];
        } else if lower.contains("transfer-encoding: chunked") {
            match bytes.windows(5).position(|w| w == b"0\r\n\r\n") {
                Some(at) => bytes = &bytes[at + 5..],
                None => {
                    statuses.push(Answer { status, body });
                    break;
                }
            }
        }
        statuses.push(Answer { status, body });
    }
    statuses
}

async fn connect(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// A real chat completion answered 200: the gateway still serves.
async fn still_serves(addr: SocketAddr, after: &str) {
    let mut stream = connect("127.0.0.1", addr).await;
    let body = br#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
    stream.write_all(&chat(body)).await.unwrap();
    let statuses: Vec<u16> = answers(&mut stream).await.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![200], "the gateway stopped serving after: {after}");
}

fn yaml(harness: &Harness) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  \
           limits: {{max_body_bytes: 65536, header_read_timeout: 2s}}\n  \
           trusted_proxies: [127.0.0.2/32]\n  \
           security:\n    ip_denylist: {{enabled: true, denied_ips: [192.0.2.0/24]}}\n    \
             rate_limiting: {{enabled: true, requests_per_second: 1000, burst: 1000}}\n    \
             request_validation: {{enabled: true, max_tokens: 4096}}\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}]\n  dir: {dir:?}\n\
         logging: {{level: info, format: json}}\n\
         management: {{secret_key: \"{MGMT_KEY}\"}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
    )
}

#[tokio::test]
async fn every_hostile_input_gets_its_answer_and_the_gateway_keeps_serving() {
    let harness = Harness::new();
    harness.write_config(&yaml(&harness));
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let cases = catalogue();
    assert!(cases.len() >= 60, "the catalogue has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut stream = connect(case.from, addr).await;
        // The gateway may close before reading everything (a refused header block, say).
        let _ = stream.write_all(&case.raw).await;
        let answers = answers(&mut stream).await;
        let got: Vec<u16> = answers.iter().map(|a| a.status).collect();
        let ok = match &case.expect {
            Answers(statuses) => &got == statuses,
            OneOf(statuses) => got.len() == 1 && statuses.contains(&got[0]),
            Says(status, texts) => {
                got == [*status] && texts.iter().all(|text| answers[0].body.contains(text))
            }
            Closed => got.is_empty(),
        };
        if !ok {
            let bodies: Vec<&str> = answers.iter().map(|a| a.body.as_str()).collect();
            failures
                .push(format!("{}: expected {:?}, got {got:?} {bodies:?}", case.name, case.expect));
        }
        still_serves(addr, &case.name).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let logs = gateway.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    // No input split a log line: each is one whole JSON object.
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).is_ok(),
            "{line}"
        );
    }
    for secret in [CLIENT_KEY, MGMT_KEY] {
        assert!(!logs.contains(secret), "a key reached the log");
    }
    report::cases(
        "hostile-input",
        "every_hostile_input_gets_its_answer_and_the_gateway_keeps_serving",
        cases.len(),
    );
}

/// One HTTP/2 frame: 9-byte header, then `payload`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// HTTP/2 rapid reset (CVE-2023-44487): a thousand streams, each opened and cancelled at
/// once. The gateway ends that connection with GOAWAY and keeps serving everyone else.
#[tokio::test]
async fn http2_rapid_reset_ends_the_connection_and_the_gateway_keeps_serving() {
    let harness = Harness::new();
    harness.write_config(&yaml(&harness));
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
    // :method GET, :scheme http, :path /healthz, :authority gw (HPACK, no indexing).
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 2]);
    block.extend_from_slice(b"gw");
    for i in 0..1000u32 {
        let stream = 2 * i + 1;
        bytes.extend(h2_frame(0x1, 0x4 | 0x1, stream, &block)); // HEADERS, END_HEADERS|END_STREAM
        bytes.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let mut stream = connect("127.0.0.1", addr).await;
    let _ = stream.write_all(&bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway kept a rapid-reset connection open");
    let mut frames = &answer[..];
    let mut goaway = None;
    let mut answered = 0;
    while frames.len() >= 9 {
        let len =
            usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
        let kind = frames[3];
        let payload = &frames[9..(9 + len).min(frames.len())];
        if kind == 0x7 && payload.len() >= 8 {
            goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
        if kind == 0x1 {
            answered += 1;
        }
        frames = &frames[(9 + len).min(frames.len())..];
    }
    // ENHANCE_YOUR_CALM (0xb): hyper's h2 stops a peer that resets too many streams.
    assert_eq!(goaway, Some(0xb), "no GOAWAY(ENHANCE_YOUR_CALM); {answered} streams answered");
    assert!(answered < 1000, "every reset stream was served");
    still_serves(addr, "HTTP/2 rapid reset").await;
}

/// The config of the audit flood cases: the audit log at `audit`, no per-IP or global bucket
/// (the audit log must stay bounded by itself), and management bans at `max_failures`.
fn flood_yaml(harness: &Harness, audit: &std::path::Path, max_failures: u32) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}]\n  dir: {dir:?}\n\
         logging: {{level: info, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         management: {{secret_key: \"{MGMT_KEY}\", max_failures: {max_failures}}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
    )
}

/// A refused key on either plane: a wrong client key on `/v1/models`, or a wrong management
/// key on `/v0/management/status`.
fn wrong_key(management: bool) -> Vec<u8> {
    if management {
        request(
            "GET",
            "/v0/management/status",
            &["X-Management-Key: cpm-wrong-guess-0123456789"],
            b"",
        )
    } else {
        request(
            "GET",
            "/v1/models",
            &["Authorization: Bearer cpk-wrong-guess-0123456789abcdef"],
            b"",
        )
    }
}

/// The audit lines of `event_type` and the refusals they account for: a `repeated` line (or
/// a `summary:` violation line) carries only `details.repeats`, any other line is one
/// refusal plus the ones it says were left out before it. Also every request id the lines
/// name, on their own or in a summary's `request_ids`.
fn accounted(
    lines: &[serde_json::Value],
    event_type: &str,
) -> (usize, u64, std::collections::HashSet<String>) {
    let mut ids = std::collections::HashSet::new();
    let mut refusals = 0;
    let mut count = 0;
    for line in lines.iter().filter(|l| l["event_type"] == event_type) {
        count += 1;
        let summary = line["result"] == "repeated"
            || line["details"]["detail"].as_str().is_some_and(|d| d.starts_with("summary:"));
        refusals += u64::from(!summary) + line["details"]["repeats"].as_u64().unwrap_or(0);
        if let Some(id) = line["request_id"].as_str() {
            ids.insert(id.to_owned());
        }
        for id in line["details"]["request_ids"].as_array().into_iter().flatten() {
            ids.insert(id.as_str().unwrap().to_owned());
        }
    }
    (count, refusals, ids)
}

/// Stops the gateway gracefully (which writes every pending summary) and reads its audit log.
async fn audit_after_stop(
    mut gateway: cliproxy_e2e::Gateway,
    audit: &std::path::Path,
) -> (Vec<serde_json::Value>, u64) {
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    let text = std::fs::read_to_string(audit).unwrap();
    let lines = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (lines, text.len() as u64)
}

/// Lines written one by one per plane (or violation rule) and second across all addresses
/// (`LINES_PER_SECOND` in crates/cliproxy-gateway/src/guard.rs).
const LINES_PER_SECOND: u64 = 20;
/// Housekeeping beats a second at the default `state.flush_interval` (500 ms): each may write
/// one summary per address with refusals left out and one flood summary per plane or rule.
const BEATS_PER_SECOND: u64 = 2;

/// 3,000 refused keys on one keep-alive connection, both planes alternately: before issue
/// 18 every refused client key wrote its own line (1,500 of them here). Now one line per
/// plane, address and second, and one summary per beat listing the ids it covers.
#[tokio::test]
async fn three_thousand_refused_keys_on_one_connection_write_a_bounded_audit_log() {
    const CALLS: u64 = 3_000;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    harness.write_config(&flood_yaml(&harness, &audit, 5));
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let mut stream = connect("127.0.0.1", addr).await;
    let mut ids = Vec::new();
    let started = std::time::Instant::now();
    for n in 0..CALLS {
        // Keep-alive: the same connection for every call.
        let mut raw = wrong_key(n % 2 == 1);
        let at = raw.windows(19).position(|w| w == b"Connection: close\r\n").unwrap();
        raw.drain(at..at + 19);
        stream.write_all(&raw).await.unwrap();
        let (status, id) = read_one_answer(&mut stream).await;
        // 401, and 403 once the management ban starts (management.max_failures).
        assert!(status == 401 || status == 403, "call {n}: {status}");
        ids.push(id);
    }
    let elapsed = started.elapsed();
    let (lines, bytes) = audit_after_stop(gateway, &audit).await;
    let (count, refusals, logged) = accounted(&lines, "auth_failure");
    // Per plane: one line per second the flood touched (at most its whole seconds + 2), and
    // one summary per beat (and at shutdown) listing the ids of the rest.
    let beats = elapsed.as_millis() as u64 / (1000 / BEATS_PER_SECOND) + 2;
    let bound = 2 * (elapsed.as_secs() + 2 + beats);
    assert!(
        count as u64 <= bound,
        "{count} auth_failure lines for {CALLS} refusals in {elapsed:?} (bound {bound})"
    );
    assert_eq!(refusals, CALLS, "every refusal is accounted for");
    // And every refused request is found by its id, in its own line or a summary's list,
    // or counted in a summary's `request_ids_left_out` (past 1,000 ids a line).
    let missing = ids.iter().filter(|id| !logged.contains(*id)).count() as u64;
    let left_out: u64 =
        lines.iter().filter_map(|l| l["details"]["request_ids_left_out"].as_u64()).sum();
    assert_eq!(missing, left_out, "refused requests in no line and not counted as left out");
    // Everything else: the start, the one ban and its violation, the shutdown.
    assert!(lines.len() as u64 <= bound + 10, "{} audit lines", lines.len());
    let test = "three_thousand_refused_keys_on_one_connection_write_a_bounded_audit_log";
    report::cases("hostile-input", test, 1);
    report::figure(
        "hostile-input",
        "audit lines for 3,000 refused keys on one connection",
        lines.len(),
        "lines",
    );
    report::figure(
        "hostile-input",
        "audit bytes for 3,000 refused keys on one connection",
        bytes,
        "bytes",
    );
}

/// Reads one HTTP/1.1 answer with a `Content-Length` body from a keep-alive connection: its
/// status and `x-request-id`.
async fn read_one_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "the connection closed mid-answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_owned())
    };
    let length: usize = header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; length];
    tokio::time::timeout(WAIT, stream.read_exact(&mut body)).await.unwrap().unwrap();
    (status, header("x-request-id").unwrap())
}

/// 5,000 key guesses, each from its own loopback address (127.0.x.y; every 127/8 address can
/// be a client socket's source), half of them on the management plane where each one bans
/// its address (`max_failures: 1`). Before issue 18 each wrote its `auth_failure` line and
/// each ban its `management_ban` line (7,500 lines); now each plane and rule writes at most
/// `LINES_PER_SECOND` lines a second, the rest in one flood summary per beat that counts
/// them, names how many addresses and a few of them, and lists request ids.
#[tokio::test]
async fn a_key_guessing_flood_from_rotating_addresses_writes_a_bounded_audit_log() {
    const ADDRESSES: u32 = 5_000;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    harness.write_config(&flood_yaml(&harness, &audit, 1));
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let started = std::time::Instant::now();
    // Eight connections at a time: the flood's speed, not the test's, is what is bounded.
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8u32 {
        tasks.spawn(async move {
            for n in (worker..ADDRESSES).step_by(8) {
                let from = std::net::Ipv4Addr::from(0x7f00_0000 | (n + 2)).to_string();
                let mut stream = connect(&from, addr).await;
                stream.write_all(&wrong_key(n % 2 == 1)).await.unwrap();
                let got: Vec<u16> = answers(&mut stream).await.iter().map(|a| a.status).collect();
                assert_eq!(got, [401], "guess {n} from {from}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed();
    let (lines, bytes) = audit_after_stop(gateway, &audit).await;
    let (failures, refusals, _) = accounted(&lines, "auth_failure");
    // Per second the flood touched, per plane and for the ban rule: the budget of lines;
    // per beat (and at shutdown), one flood summary each.
    let seconds_touched = elapsed.as_secs() + 2;
    let beats = elapsed.as_millis() as u64 / (1000 / BEATS_PER_SECOND) + 2;
    let bound = 3 * (LINES_PER_SECOND * seconds_touched + beats);
    assert!(
        lines.len() as u64 <= bound + 10,
        "{} audit lines ({failures} auth_failure, {bytes} bytes) for {ADDRESSES} guesses from as many addresses in {elapsed:?} (bound {bound})",
        lines.len()
    );
    assert_eq!(refusals, u64::from(ADDRESSES), "every refusal is accounted for");
    let bans: Vec<serde_json::Value> =
        lines.iter().filter(|l| l["result"] == "management_ban").cloned().collect();
    let (_, banned, _) = accounted(&bans, "security_violation");
    assert_eq!(banned, u64::from(ADDRESSES / 2), "every ban is accounted for");
    // The flood summaries say how many addresses they cover and name a few.
    let flood = lines
        .iter()
        .find(|l| l["event_type"] == "auth_failure" && l["ip"].is_null())
        .expect("no flood summary");
    assert!(flood["details"]["addresses"].as_u64().unwrap() > 0, "{flood}");
    assert!(!flood["details"]["sample_ips"].as_array().unwrap().is_empty(), "{flood}");
    let test = "a_key_guessing_flood_from_rotating_addresses_writes_a_bounded_audit_log";
    report::cases("hostile-input", test, 1);
    report::iterations("hostile-input", test, ADDRESSES as usize);
    report::figure(
        "hostile-input",
        "audit lines for 5,000 guesses from rotating addresses",
        lines.len(),
        "lines",
    );
    report::figure(
        "hostile-input",
        "audit bytes for 5,000 guesses from rotating addresses",
        bytes,
        "bytes",
    );
    report::figure(
        "hostile-input",
        "time the rotating-address flood took",
        elapsed.as_millis() as u64,
        "ms",
    );
}

/// The client's half of "a client cannot bench the credentials" (issue 18): what a hostile
/// client makes the upstream answer.
struct BenchCase {
    name: &'static str,
    /// The model the client asks for; the mock upstream answers it with `status` and `body`.
    model: &'static str,
    status: u16,
    body: String,
}

/// A client key that makes the upstream refuse its requests for reasons that are not the
/// credential's (a model the account may not use, missing scopes, a firewall's HTML page,
/// bodies that carry a key's error words where they are not the provider's error, past the
/// size cap or the parser's depth) gets each answer as the upstream gave it (one over the
/// error-body cap as a 502 naming the upstream status), with one upstream call and no failover, and every credential keeps serving the other clients. A key that
/// keeps causing real cool-downs (a 429 per model it names) is throttled with 429 naming
/// `server.security.cooldown_abuse`, and audited, while the others are served.
#[tokio::test]
async fn a_client_cannot_bench_the_credentials() {
    const BYSTANDER: &str = "cpk-e2e-bystander-key-77a0c4e1f2b3d596";
    const TOKEN_A: &str = "sk-vault-hostile-bench-aaaa-0001";
    const TOKEN_B: &str = "sk-vault-hostile-bench-bbbb-0002";
    let key_words = r#"{"error":{"code":"invalid_api_key","type":"authentication_error","details":[{"reason":"API_KEY_INVALID"}]}}"#;
    let cases = vec![
        BenchCase {
            name: "a 403 about the model (OpenAI's words)",
            model: "gpt-forbidden",
            status: 403,
            body: r#"{"error":{"message":"You are not allowed to sample from this model","type":"invalid_request_error","param":null,"code":null}}"#.to_owned(),
        },
        BenchCase {
            name: "a 401 about scopes the endpoint needs",
            model: "gpt-scopes",
            status: 401,
            body: r#"{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: api.responses.write.","type":"invalid_request_error","param":null,"code":null}}"#.to_owned(),
        },
        BenchCase {
            name: "a 403 page from a web application firewall",
            model: "gpt-waf",
            status: 403,
            body: "<html><body><h1>403 Forbidden</h1>invalid_api_key</body></html>".to_owned(),
        },
        BenchCase {
            name: "a 403 with a key's error words past the error-body cap",
            model: "gpt-long",
            status: 403,
            body: format!(r#"{{"pad":"{}","error":{{"code":"invalid_api_key"}}}}"#, "x".repeat(64 * 1024)),
        },
        BenchCase {
            name: "a 400 with a key's error words nested past the parser's depth",
            model: "gpt-deep",
            status: 400,
            body: format!("{}{key_words}{}", r#"{"a":"#.repeat(200), "}".repeat(200)),
        },
        BenchCase {
            name: "a 401 whose error is a string, not the provider's shape",
            model: "gpt-shape",
            status: 401,
            body: r#"{"error":"invalid_api_key API_KEY_INVALID authentication_error"}"#.to_owned(),
        },
    ];
    let replies: Vec<(&'static str, u16, String)> =
        cases.iter().map(|c| (c.model, c.status, c.body.clone())).collect();
    let mock = cliproxy_e2e::MockUpstream::start(move |request| {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let model = body["model"].as_str().unwrap_or("").to_owned();
        if let Some((_, status, body)) = replies.iter().find(|(m, _, _)| *m == model) {
            return cliproxy_e2e::Reply::Json { status: *status, headers: Vec::new(), body: body.clone() };
        }
        if model.starts_with("gpt-hot") {
            return cliproxy_e2e::Reply::Json {
                status: 429,
                headers: Vec::new(),
                body: r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.to_owned(),
            };
        }
        cliproxy_e2e::Reply::ok(cliproxy_e2e::canned::openai_chat(&model, "served"))
    })
    .await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    harness.write_config(&format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  \
           security:\n    cooldown_abuse: {{max_per_window: 3, window: 1m, throttle_for: 5m}}\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}, {{name: bystander, key: \"{BYSTANDER}\"}}]\n  dir: {dir:?}\n\
         logging: {{level: info, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         providers:\n  openai: {{type: openai, base_url: \"{url}\", models: [\"gpt-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
        url = mock.url(),
    ));
    harness.vault_add("openai", "bench-a", TOKEN_A, None);
    harness.vault_add("openai", "bench-b", TOKEN_B, None);
    let mut gateway = harness.start().await;
    let client = cliproxy_e2e::client();
    let chat = |key: &str, model: &str| {
        client
            .post(format!("{}{CHAT}", gateway.url()))
            .bearer_auth(key)
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let mut failures = Vec::new();
    for case in &cases {
        // Twice: a failover (or a rest) would show on the second round at the latest.
        for round in 0..2 {
            let before = mock.requests().len();
            let response = chat(CLIENT_KEY, case.model).await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            let calls = mock.requests().len() - before;
            // A body over the error-body cap is not forwarded (it could not be searched for
            // the credential): 502 naming the upstream status, still one call and no rest.
            let answered = if case.body.len() > 16 * 1024 {
                status == 502 && body.contains(&format!("upstream status {}", case.status))
            } else {
                status == case.status && body == case.body
            };
            if !answered || calls != 1 {
                failures.push(format!(
                    "{} (round {round}): got {status} after {calls} upstream calls, body {}",
                    case.name,
                    &body[..body.len().min(160)]
                ));
            }
        }
        // Both credentials still serve another client.
        for _ in 0..2 {
            let status = chat(BYSTANDER, "gpt-4o").await.unwrap().status();
            if status != 200 {
                failures.push(format!("{}: the bystander got {status}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));

    // Real cool-downs, one per model the client names: the fourth within the minute is one
    // too many, and the key is refused without reaching the upstream.
    for n in 0..4 {
        let status = chat(CLIENT_KEY, &format!("gpt-hot-{n}")).await.unwrap().status();
        assert_eq!(status, 429, "gpt-hot-{n}");
    }
    let before = mock.requests().len();
    let response = chat(CLIENT_KEY, "gpt-4o").await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let text = response.text().await.unwrap();
    assert!(text.contains("server.security.cooldown_abuse"), "{text}");
    assert_eq!(mock.requests().len(), before, "a throttled key reached the upstream");
    assert_eq!(chat(BYSTANDER, "gpt-4o").await.unwrap().status(), 200);
    // The audit file is complete once the gateway has shut down (it flushes the audit log
    // on its way out): that exit is the event waited for.
    gateway.terminate();
    let exit = gateway.wait().await;
    assert!(exit.success(), "{exit:?}");
    let text = std::fs::read_to_string(&audit).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("\"cooldown_abuse\"") && l.contains("\"e2e\""))
        .unwrap_or_else(|| panic!("no cooldown_abuse audit line naming the key: {text}"));
    assert!(line.contains("security_violation"), "{line}");
    let logs = gateway.logs();
    for secret in [CLIENT_KEY, BYSTANDER, TOKEN_A, TOKEN_B] {
        assert!(!logs.contains(secret) && !line.contains(secret), "a secret reached the log");
    }
    report::cases("hostile-input", "a_client_cannot_bench_the_credentials", cases.len() + 1);
}
