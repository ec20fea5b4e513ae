//! `RedisLink` against a real `redis-server` on a loopback port: calls answered, a killed
//! server failing fast without waiting, the probe after the backoff, the password never in a
//! text.

#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use cliproxy_core::Secret;
use cliproxy_netguard::{LinkNotice, OnUnavailable, RedisLink, Unavailable};
use redis_server::RedisServer;

fn link(url: &str, timeout: Duration) -> RedisLink {
    RedisLink::from_values(
        &Secret::from(url.to_owned()),
        None,
        "test:",
        timeout,
        OnUnavailable::Local,
    )
    .expect("a valid link")
}

#[test]
fn a_killed_server_fails_within_the_timeout_then_at_once_and_a_restart_is_found() {
    let mut server = RedisServer::start();
    let link = link(&server.url(), Duration::from_millis(200));
    link.ping().expect("the server answers");
    link.run(|c| redis::cmd("SET").arg(link.key("a")).arg("1").query::<()>(c)).expect("SET");
    assert_eq!(server.cli(&["GET", "test:a"]).trim(), "1");

    server.kill();
    let started = Instant::now();
    let failed = link.run(|c| redis::cmd("GET").arg("test:a").query::<Option<String>>(c));
    assert!(matches!(failed, Err(Unavailable::Failed(_))), "{failed:?}");
    assert!(started.elapsed() < Duration::from_millis(400), "waited {:?}", started.elapsed());
    assert!(!link.is_up());
    assert!(matches!(link.take_notices().as_slice(), [LinkNotice::Down(_)]));
    // While down, calls do not touch the network at all.
    let started = Instant::now();
    for _ in 0..1000 {
        assert_eq!(link.run(|c| redis::cmd("PING").query::<String>(c)), Err(Unavailable::Down));
    }
    assert!(started.elapsed() < Duration::from_millis(100), "took {:?}", started.elapsed());

    server.restart();
    // The next probe (the backoff is at most 2 s) finds it again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if link.run(|c| redis::cmd("PING").query::<String>(c)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the link never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(link.is_up());
    assert_eq!(link.take_notices(), vec![LinkNotice::Up]);
    assert_eq!(link.health().outages, 1);
}

#[test]
fn the_password_is_never_in_a_text() {
    let server =
        RedisServer::start_with(&["--save", "", "--requirepass", "planted-redis-password-7f3a"]);
    let wrong = format!("redis://:wrong-planted-password-9c1e@127.0.0.1:{}", server.port());
    let link = link(&wrong, Duration::from_millis(200));
    let error = link.ping().expect_err("a wrong password is refused");
    let texts = format!("{error} {error:?} {link:?} {} {:?}", link.describe(), link.health());
    assert!(!texts.contains("wrong-planted-password-9c1e"), "{texts}");
    assert!(texts.contains(&format!("127.0.0.1:{}", server.port())), "{texts}");

    let right = link_ok(&server.url());
    right.ping().expect("the right password is accepted");
    assert!(!format!("{right:?} {}", right.describe()).contains("planted-redis-password-7f3a"));
}

fn link_ok(url: &str) -> RedisLink {
    link(url, Duration::from_millis(200))
}

#[test]
fn a_url_that_cannot_be_parsed_is_refused_without_being_quoted() {
    let error = RedisLink::from_values(
        &Secret::from("http://:hunter2-planted@host".to_owned()),
        None,
        "x:",
        Duration::from_millis(100),
        OnUnavailable::Deny,
    )
    .expect_err("not a Redis URL");
    let text = error.to_string();
    // The setting is typed (the caller names its key); the text never quotes the URL.
    assert_eq!(error.setting(), Some(cliproxy_netguard::Setting::RedisUrl), "{text}");
    assert!(text.contains("redis://"), "{text}");
    assert!(
        !text.contains("hunter2-planted") && !format!("{error:?}").contains("hunter2-planted"),
        "{text}"
    );
    let timeout = RedisLink::from_values(
        &Secret::from("redis://127.0.0.1:1".to_owned()),
        None,
        "x:",
        Duration::from_secs(60),
        OnUnavailable::Local,
    )
    .expect_err("a timeout out of range");
    assert!(timeout.to_string().contains("between 1ms and 10s"), "{timeout}");
}
