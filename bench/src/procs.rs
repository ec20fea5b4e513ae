//! Child processes of the harness (each killed when its guard drops, on error and on panic
//! too) and their memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running child: killed and reaped on drop. Its output goes line by line to a log file
/// and to [`Proc::wait_for_line`].
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `command` (stdout and stderr piped to `log`, stdin closed).
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child =
            command.spawn().with_context(|| format!("cannot start the {name}: {command:?}"))?;
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let stderr_file = file.try_clone().context("cannot share the log file")?;
        forward(stdout, file, tx.clone());
        forward(stderr, stderr_file, tx);
        Ok(Self { name: name.to_owned(), child, log: log.to_path_buf(), lines })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Waits up to `timeout` for an output line for which `pick` returns something. Fails
    /// when the process exits first (with its last output).
    pub fn wait_for_line<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = pick(&line) {
                        return Ok(found);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "the {} printed no expected line within {timeout:?}; {}",
                        self.name,
                        self.tail()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    bail!(
                        "the {} exited ({status}) before it was ready; {}",
                        self.name,
                        self.tail()
                    )
                }
            }
        }
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("cannot query a child")? {
            bail!("the {} exited ({status}); {}", self.name, self.tail());
        }
        Ok(())
    }

    /// Waits for the process to exit on its own within `timeout`; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("cannot query a child")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("the {} did not finish within {timeout:?}; {}", self.name, self.tail());
            }
            // Only the harness's own bookkeeping waits here, never a measurement.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every line received so far that nobody waited for.
    pub fn drain_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The resident set of the process now (`VmRSS` of `/proc/PID/status`), in kB.
    pub fn rss_kb(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        vm_rss_kb(&status).with_context(|| format!("no VmRSS line in {path}"))
    }

    /// CPU time used so far by the process's threads, in nanoseconds ([`cpu_ns`]).
    pub fn cpu_ns(&self) -> Result<u64> {
        cpu_ns(self.pid())
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log.display())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward(stream: impl Read + Send + 'static, mut file: std::fs::File, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = file.write_all(line.as_bytes());
            // Nobody may be listening any more; the log file still gets the line.
            let _ = tx.send(line.trim_end().to_owned());
            line.clear();
        }
    });
}

/// The CPU time of every live thread of process `pid`, in nanoseconds: the sum of the first
/// field of `/proc/PID/task/*/schedstat` (nanosecond precision, where `/proc/PID/stat` counts
/// clock ticks of 10 ms).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for task in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let path = task.with_context(|| format!("cannot read {dir}"))?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(&path) else { continue };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .with_context(|| format!("unexpected contents of {}: {stat:?}", path.display()))?;
    }
    Ok(total)
}

/// The `VmRSS` figure (kB) of a `/proc/PID/status` text.
pub fn vm_rss_kb(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix("VmRSS:")?.trim();
        value.strip_suffix("kB").unwrap_or(value).trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_while_this_process_works() {
        let before = cpu_ns(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let after = cpu_ns(std::process::id()).unwrap();
        assert!(after > before, "{before} -> {after} ({x})");
    }

    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status = "Name:\tcliproxy-server\nVmPeak:\t  123456 kB\nVmRSS:\t   18432 kB\nRssAnon:\t 9000 kB\n";
        assert_eq!(vm_rss_kb(status), Some(18_432));
        assert_eq!(vm_rss_kb("Name:\tx\n"), None);
        assert_eq!(vm_rss_kb("VmRSS:\tlots kB\n"), None);
        // This process has one.
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(vm_rss_kb(&own).unwrap() > 0);
    }

    #[test]
    fn a_child_is_killed_when_its_guard_drops() {
        let dir = std::env::temp_dir().join(format!("cliproxy-bench-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 600"]);
        let mut proc = Proc::spawn("sleeper", command, &dir.join("sleeper.log")).unwrap();
        proc.wait_for_line(Duration::from_secs(10), |l| (l == "started").then_some(())).unwrap();
        proc.check_alive().unwrap();
        let pid = proc.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(proc);
        // Reaped by the guard: the pid is gone (or, in the rare case of reuse, not a sleep).
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(comm.trim(), "sleep");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
