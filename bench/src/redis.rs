//! Scenario 9's `redis-server` (Debian's package, as the tests use): started on a free
//! loopback port with its data in the work directory, killed when dropped (it is a [`Proc`]),
//! and read with `INFO` over a bare RESP exchange, so that the harness needs no Redis client
//! of its own and measures Redis with nothing but Redis's own counters.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::procs::Proc;

/// How long `redis-server` may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `INFO` exchange may take.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);
/// Ports tried before giving up (another process may take a free port before Redis binds it).
const START_ATTEMPTS: usize = 5;

/// A running `redis-server`.
pub(crate) struct Redis {
    proc: Proc,
    port: u16,
}

impl Redis {
    /// Starts `redis-server` on a free loopback port with `args` (persistence, for one), its
    /// data in `dir` and its output in `log`, through `command` (which wraps the program in
    /// `taskset` when pinning); waits for "Ready to accept connections".
    pub(crate) fn start(
        command: impl Fn() -> Command,
        dir: &Path,
        log: &Path,
        args: &[&str],
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut redis = command();
            redis
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
                .arg(dir)
                .args(["--logfile", "", "--daemonize", "no", "--protected-mode", "yes"])
                .args(args);
            let mut proc = Proc::spawn("redis-server", redis, log)
                .context("cannot run redis-server (apt-get install redis-server)")?;
            match proc.wait_for_line(START_TIMEOUT, |line| {
                line.contains("Ready to accept connections").then_some(())
            }) {
                Ok(()) => return Ok(Self { proc, port }),
                // The port may have been taken between our probe and Redis's bind: try
                // another; anything else shows in the last error.
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Fails when the server has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive()
    }

    /// The server's CPU time so far from the kernel (all its threads), in nanoseconds: a
    /// cross-check of `INFO cpu`.
    pub(crate) fn cpu_ns(&self) -> Result<u64> {
        self.proc.cpu_ns()
    }

    /// `INFO commandstats` and `INFO cpu` now.
    pub(crate) fn sample(&self) -> Result<RedisSample> {
        let commands = parse_commandstats(&self.info("commandstats")?);
        let cpu_s = parse_cpu_seconds(&self.info("cpu")?).context("INFO cpu has no CPU times")?;
        Ok(RedisSample { commands, cpu_s, cpu_ns: self.cpu_ns()? })
    }

    /// `redis_version` of `INFO server`.
    pub(crate) fn version(&self) -> Result<String> {
        let info = self.info("server")?;
        info.lines()
            .find_map(|line| line.trim().strip_prefix("redis_version:").map(str::to_owned))
            .context("INFO server has no redis_version")
    }

    /// The text of `INFO section`.
    fn info(&self, section: &str) -> Result<String> {
        let reply = self.command(&["INFO", section])?;
        String::from_utf8(reply).context("INFO is not UTF-8")
    }

    /// Sends one command and returns its reply, which must be a bulk or simple string.
    pub(crate) fn command(&self, args: &[&str]) -> Result<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .with_context(|| format!("cannot reach redis-server on port {}", self.port))?;
        stream.set_read_timeout(Some(INFO_TIMEOUT)).context("socket timeout")?;
        stream.set_write_timeout(Some(INFO_TIMEOUT)).context("socket timeout")?;
        stream.write_all(&encode(args)).context("cannot send a command to redis-server")?;
        read_reply(&mut BufReader::new(stream))
    }
}

/// What `INFO` said at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct RedisSample {
    /// Per command (lower case, as `cmdstat_<name>` names it): calls and microseconds spent.
    pub(crate) commands: BTreeMap<String, CommandStat>,
    /// `used_cpu_sys + used_cpu_user`, in seconds.
    pub(crate) cpu_s: f64,
    /// The kernel's count of the same (`/proc/PID/task/*/schedstat`), in nanoseconds.
    pub(crate) cpu_ns: u64,
}

/// One `cmdstat_<name>` line's calls and time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct CommandStat {
    pub(crate) calls: u64,
    pub(crate) usec: u64,
}

impl RedisSample {
    /// What happened between `before` and this sample, `INFO` itself left out (the harness's
    /// own readings are not the gateway's load).
    pub(crate) fn since(&self, before: &RedisSample) -> RedisSample {
        let commands = self
            .commands
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .filter_map(|(name, after)| {
                let earlier = before.commands.get(name).copied().unwrap_or_default();
                let delta = CommandStat {
                    calls: after.calls.saturating_sub(earlier.calls),
                    usec: after.usec.saturating_sub(earlier.usec),
                };
                (delta.calls > 0).then(|| (name.clone(), delta))
            })
            .collect();
        RedisSample {
            commands,
            cpu_s: (self.cpu_s - before.cpu_s).max(0.0),
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
        }
    }

    /// Calls of `name`.
    pub(crate) fn calls(&self, name: &str) -> u64 {
        self.commands.get(name).map_or(0, |stat| stat.calls)
    }

    /// Calls of every command.
    pub(crate) fn total_calls(&self) -> u64 {
        self.commands.values().map(|stat| stat.calls).sum()
    }

    /// Adds `other`'s counts to these (the deltas of several runs).
    pub(crate) fn add(&mut self, other: &RedisSample) {
        for (name, stat) in &other.commands {
            let into = self.commands.entry(name.clone()).or_default();
            into.calls += stat.calls;
            into.usec += stat.usec;
        }
        self.cpu_s += other.cpu_s;
        self.cpu_ns += other.cpu_ns;
    }
}

/// The `cmdstat_<name>:calls=N,usec=N,…` lines of `INFO commandstats`.
pub(crate) fn parse_commandstats(text: &str) -> BTreeMap<String, CommandStat> {
    text.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                fields.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == key).then(|| v.parse::<u64>().ok())?
                })
            };
            Some((
                name.to_ascii_lowercase(),
                CommandStat { calls: field("calls")?, usec: field("usec")? },
            ))
        })
        .collect()
}

/// `used_cpu_sys + used_cpu_user` of `INFO cpu`, in seconds (the `_children` and
/// `_main_thread` lines are other figures).
pub(crate) fn parse_cpu_seconds(text: &str) -> Option<f64> {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix(':')?.parse::<f64>().ok())
    };
    Some(value("used_cpu_sys")? + value("used_cpu_user")?)
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply: a bulk string (`$len`) or a simple string (`+text`); an error reply (`-ERR …`)
/// or anything else is an error.
fn read_reply(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut header = String::new();
    reader.read_line(&mut header).context("no reply from redis-server")?;
    let header = header.trim_end();
    if let Some(text) = header.strip_prefix('+') {
        return Ok(text.as_bytes().to_vec());
    }
    let Some(len) = header.strip_prefix('$') else {
        bail!("unexpected reply from redis-server: {header:?}");
    };
    let len: usize = len.parse().with_context(|| format!("bad bulk length {len:?}"))?;
    let mut body = vec![0_u8; len + 2];
    reader.read_exact(&mut body).context("short reply from redis-server")?;
    body.truncate(len);
    Ok(body)
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr().context("no local address")?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMANDSTATS: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=1200,usec=36000,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_hgetall:calls=1000,usec=2000,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=7,usec=700,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn commandstats_and_cpu_are_parsed_and_subtracted() {
        let stats = parse_commandstats(COMMANDSTATS);
        assert_eq!(stats["evalsha"], CommandStat { calls: 1200, usec: 36000 });
        assert_eq!(stats["hgetall"].calls, 1000);
        assert_eq!(stats.len(), 3);
        let cpu = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:0.750000\r\n\
                   used_cpu_sys_children:9.0\r\nused_cpu_sys_main_thread:1.0\r\n";
        assert_eq!(parse_cpu_seconds(cpu), Some(2.0));
        assert_eq!(parse_cpu_seconds("# CPU\r\nused_cpu_sys:1.0\r\n"), None);

        let before = RedisSample {
            commands: parse_commandstats("cmdstat_evalsha:calls=200,usec=6000\r\n"),
            cpu_s: 0.5,
            cpu_ns: 1_000,
        };
        let after = RedisSample { commands: stats, cpu_s: 2.0, cpu_ns: 3_000 };
        let delta = after.since(&before);
        assert_eq!(delta.calls("evalsha"), 1000);
        assert_eq!(delta.calls("info"), 0, "the harness's own INFO is not counted");
        assert_eq!(delta.total_calls(), 2000);
        assert_eq!(delta.cpu_s, 1.5);
        let mut sum = delta.clone();
        sum.add(&delta);
        assert_eq!(sum.calls("hgetall"), 2000);
        assert_eq!(sum.cpu_ns, 4_000);
    }

    #[test]
    fn replies_are_read_and_error_replies_refused() {
        let mut bulk = BufReader::new(&b"$5\r\nhello\r\n"[..]);
        assert_eq!(read_reply(&mut bulk).unwrap(), b"hello");
        let mut simple = BufReader::new(&b"+OK\r\n"[..]);
        assert_eq!(read_reply(&mut simple).unwrap(), b"OK");
        let mut error = BufReader::new(&b"-ERR unknown command\r\n"[..]);
        assert!(read_reply(&mut error).unwrap_err().to_string().contains("-ERR unknown command"));
        assert_eq!(encode(&["INFO", "cpu"]), b"*2\r\n$4\r\nINFO\r\n$3\r\ncpu\r\n");
    }

    /// A real `redis-server`: its counters move by exactly the commands sent.
    #[test]
    fn a_real_redis_counts_the_commands_it_is_sent() {
        let dir = std::env::temp_dir().join(format!("cliproxy-bench-redis-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let redis = Redis::start(
            || Command::new("redis-server"),
            &dir.join("data"),
            &dir.join("redis.log"),
            &["--save", "", "--appendonly", "no"],
        )
        .unwrap();
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        let before = redis.sample().unwrap();
        for n in 0..3 {
            assert_eq!(redis.command(&["SET", "bench-key", &n.to_string()]).unwrap(), b"OK");
        }
        assert_eq!(redis.command(&["GET", "bench-key"]).unwrap(), b"2");
        let delta = redis.sample().unwrap().since(&before);
        assert_eq!(delta.calls("set"), 3, "{delta:?}");
        assert_eq!(delta.calls("get"), 1, "{delta:?}");
        assert_eq!(delta.total_calls(), 4, "INFO is left out: {delta:?}");
        assert!(delta.cpu_ns > 0, "{delta:?}");
        drop(redis);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
