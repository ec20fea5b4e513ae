//! Applies the sandbox to the running process, in this order: the root check, the memory
//! protection (non-dumpable, no core file), the seccomp filters (which set `no_new_privs`
//! first), then landlock.
//!
//! The memory protection also has an early half, [`protect_memory`], which the binary takes
//! before it reads its configuration: the keys come from `CLIPROXY_*` environment variables
//! and land in the heap as soon as the configuration is loaded.
//!
//! Call it while the process has one thread, before the logger, the async runtime or anything
//! else starts threads: the seccomp filters are installed with `SECCOMP_FILTER_FLAG_TSYNC` and
//! so cover threads that already exist, but landlock only restricts the calling thread and the
//! threads it creates afterwards. With [`Config::landlock`] on, [`apply`] refuses to run in a
//! process that already has other threads ([`Error::ThreadsRunning`]), so a thread left
//! outside the file system rules cannot go unnoticed.
//!
//! [`Sandbox`] is the interface a program holds; [`ProcessSandbox`], built from a [`Config`],
//! is the implementation that does all of the above to the calling process.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};
use nix::sys::resource::{Resource, getrlimit, rlim_t, setrlimit};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::posture::Posture;
use crate::syscalls;
use crate::{Config, Error, Result};

/// The file system the process may use once landlock is on.
#[derive(Clone, Debug, Default)]
pub struct Paths {
    /// Read-only, beneath each path: what the program reads once sandboxed (its
    /// configuration file, certificates, input).
    pub read_only: Vec<PathBuf>,
    /// Read-write, beneath each path: where the program writes (its data, logs and state
    /// directories).
    pub read_write: Vec<PathBuf>,
}

impl Paths {
    /// What every process needs to read once sandboxed, where it exists: `/proc/self` (the
    /// posture report, std's CPU count), the cgroup tree (CPU quota), and the resolver and
    /// host files (DNS for upstream hosts).
    pub fn system() -> Vec<PathBuf> {
        [
            "/proc/self",
            "/sys/fs/cgroup",
            "/etc/resolv.conf",
            "/etc/hosts",
            "/etc/nsswitch.conf",
            "/etc/host.conf",
            "/etc/gai.conf",
            "/etc/services",
        ]
        .into_iter()
        .map(PathBuf::from)
        .filter(|path| path.exists())
        .collect()
    }
}

/// What landlock did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landlock {
    /// [`Config::landlock`] is off.
    Off,
    /// Every requested restriction is enforced.
    Enforced,
    /// Enforced with what this kernel's landlock version supports.
    Partial,
    /// The kernel has no landlock (or it is disabled): nothing is enforced.
    Unsupported,
}

impl fmt::Display for Landlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Enforced => "enforced",
            Self::Partial => "partially enforced (older landlock ABI)",
            Self::Unsupported => "unsupported by this kernel: not enforced",
        })
    }
}

/// What [`apply`] put in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// `no_new_privs` is set.
    pub no_new_privs: bool,
    /// The seccomp filters are installed.
    pub seccomp: bool,
    /// The landlock outcome.
    pub landlock: Landlock,
    /// The process is non-dumpable and its core file limits (soft and hard) are 0.
    pub protect_memory: bool,
}

/// A sandbox for the running process: what a program holds to lock itself in, and to say
/// afterwards what it runs with.
///
/// [`ProcessSandbox`] is the implementation; a test or another program can hand in its own
/// (one that records the paths it was given, or that does nothing on a developer's machine).
pub trait Sandbox: fmt::Debug + Send + Sync {
    /// Locks this process in: read-only access to `paths.read_only` and read-write access to
    /// `paths.read_write` (plus [`Paths::system`]), and whatever else the implementation
    /// enforces. Call it while the process has one thread. An error means the process must
    /// not go on: the sandbox was asked for and could not be put in place.
    fn apply(&self, paths: &Paths) -> Result<Applied>;

    /// What this process runs with now, read back from the kernel.
    fn posture(&self) -> Result<Posture>;
}

/// The in-process sandbox: the root check, memory protection, `no_new_privs`, the seccomp
/// filters and landlock, each as its [`Config`] says (see the module documentation for the
/// order and why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSandbox {
    config: Config,
}

impl ProcessSandbox {
    /// The sandbox `config` describes. Nothing is applied until [`Sandbox::apply`].
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// What it applies.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl Sandbox for ProcessSandbox {
    fn apply(&self, paths: &Paths) -> Result<Applied> {
        apply(&self.config, paths)
    }

    fn posture(&self) -> Result<Posture> {
        Posture::read().map_err(Error::Posture)
    }
}

/// What [`protect_memory`] changed, so that a configuration with [`Config::protect_memory`]
/// off can put it back once it is read ([`EarlyProtection::undo`]).
#[derive(Debug)]
#[must_use = "undo it when Config::protect_memory is off"]
pub struct EarlyProtection {
    /// The core file soft limit before it was set to 0.
    core_soft: rlim_t,
}

/// The early half of [`Config::protect_memory`], to take before the configuration is read: the
/// process becomes non-dumpable, so that from here on no other process of its user can read
/// its `/proc/PID/environ` or `/proc/PID/mem` or attach to it, and its core file soft limit
/// becomes 0. The hard limit stays where it was, so that [`EarlyProtection::undo`] can give
/// back the soft one; [`apply`] lowers the hard limit too when the key is on.
///
/// The environment itself cannot be cleared: `std::env::remove_var` is `unsafe` in edition
/// 2024 (another thread may read the environment) and the workspace forbids unsafe code.
/// Non-dumpable, the environment is as out of reach as the heap.
pub fn protect_memory() -> Result<EarlyProtection> {
    set_dumpable(false)?;
    let (soft, hard) = core_limits()?;
    set_core_limits(0, hard)?;
    Ok(EarlyProtection { core_soft: soft })
}

impl EarlyProtection {
    /// Gives back what [`protect_memory`] took, for [`Config::protect_memory`] off (a
    /// debugger or a core file is wanted): dumpable again, the core file soft limit as it was.
    pub fn undo(self) -> Result<()> {
        set_dumpable(true)?;
        let (_, hard) = core_limits()?;
        set_core_limits(self.core_soft.min(hard), hard)
    }
}

/// Applies `config` to this process. An error means the process must not go on: the sandbox
/// was asked for and could not be put in place (an unsupported landlock is not an error; it
/// is reported in [`Applied::landlock`]).
pub fn apply(config: &Config, paths: &Paths) -> Result<Applied> {
    if config.require_non_root && is_root() {
        return Err(Error::Root);
    }
    if config.landlock {
        let threads = crate::posture::thread_count()
            .map_err(|e| Error::Landlock(format!("cannot count this process's threads: {e}")))?;
        if threads > 1 {
            return Err(Error::ThreadsRunning(threads));
        }
    }
    let mut applied = Applied {
        no_new_privs: false,
        seccomp: false,
        landlock: Landlock::Off,
        protect_memory: false,
    };
    if config.protect_memory {
        // Again, in case the early half was not taken, and this time the hard limit too:
        // nothing in this process can raise it back.
        set_dumpable(false)?;
        set_core_limits(0, 0)?;
        applied.protect_memory = true;
    }
    if config.no_new_privs || config.seccomp {
        set_no_new_privs()?;
        applied.no_new_privs = true;
    }
    if config.seccomp {
        for program in filters()? {
            seccompiler::apply_filter_all_threads(&program)
                .map_err(|e| Error::Seccomp(format!("cannot install the filter: {e}")))?;
        }
        applied.seccomp = true;
    }
    if config.landlock {
        applied.landlock = restrict_paths(paths)?;
    }
    Ok(applied)
}

/// Whether the effective uid is 0.
pub fn is_root() -> bool {
    Posture::read().is_ok_and(|p| p.euid == 0)
}

/// Whether this process may be dumped (and so read through `/proc` and traced by its user).
pub fn is_dumpable() -> Result<bool> {
    nix::sys::prctl::get_dumpable()
        .map_err(|e| Error::ProtectMemory { what: "cannot read PR_GET_DUMPABLE", source: e.into() })
}

fn set_dumpable(dumpable: bool) -> Result<()> {
    nix::sys::prctl::set_dumpable(dumpable)
        .map_err(|e| Error::ProtectMemory { what: "cannot set PR_SET_DUMPABLE", source: e.into() })
}

/// The `RLIMIT_CORE` soft and hard limits.
pub fn core_limits() -> Result<(rlim_t, rlim_t)> {
    getrlimit(Resource::RLIMIT_CORE)
        .map_err(|e| Error::ProtectMemory { what: "cannot read RLIMIT_CORE", source: e.into() })
}

fn set_core_limits(soft: rlim_t, hard: rlim_t) -> Result<()> {
    setrlimit(Resource::RLIMIT_CORE, soft, hard)
        .map_err(|e| Error::ProtectMemory { what: "cannot set RLIMIT_CORE", source: e.into() })
}

fn set_no_new_privs() -> Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| Error::NoNewPrivs(e.into()))
}

/// The two filters, most specific first: hostile calls kill the process; anything not on
/// the allowlist fails with `EPERM` (the kernel applies the most restrictive result).
pub fn filters() -> Result<Vec<BpfProgram>> {
    let arch = target_arch()?;
    let hostile: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        syscalls::hostile_numbers().into_iter().map(|n| (n, Vec::new())).collect();
    let kill = SeccompFilter::new(hostile, SeccompAction::Allow, SeccompAction::KillProcess, arch)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    let allowed: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        syscalls::allowed_numbers().into_iter().map(|(_, n)| (n, Vec::new())).collect();
    let allow = SeccompFilter::new(
        allowed,
        SeccompAction::Errno(u32::try_from(libc::EPERM).unwrap_or(1)),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| Error::Seccomp(e.to_string()))?;
    [kill, allow]
        .into_iter()
        .map(|filter| BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.to_string())))
        .collect()
}

fn target_arch() -> Result<TargetArch> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(Error::UnsupportedArch)
    }
}

fn restrict_paths(paths: &Paths) -> Result<Landlock> {
    let abi = ABI::V5;
    let landlock = |e: landlock::RulesetError| Error::Landlock(e.to_string());
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(landlock)?
        .create()
        .map_err(landlock)?;
    let read_only: Vec<PathBuf> =
        Paths::system().into_iter().chain(paths.read_only.clone()).collect();
    for (list, access) in
        [(&read_only, AccessFs::from_read(abi)), (&paths.read_write, AccessFs::from_all(abi))]
    {
        for path in list {
            let fd = PathFd::new(path).map_err(|e| Error::LandlockPath {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            // A file (not a directory) only takes file rights.
            let access = if path.is_dir() { access } else { access & AccessFs::from_file(abi) };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, access)).map_err(landlock)?;
        }
    }
    let status = ruleset.restrict_self().map_err(landlock)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Landlock::Enforced,
        RulesetStatus::PartiallyEnforced => Landlock::Partial,
        RulesetStatus::NotEnforced => Landlock::Unsupported,
    })
}

/// The filters checked instruction by instruction, without the kernel: a small interpreter
/// of the classic BPF that seccompiler emits runs each syscall number through both programs
/// and combines the answers as the kernel does. This is what checks the aarch64 filter,
/// which qemu-user cannot enforce: `cargo test --target aarch64-unknown-linux-gnu -p
/// cliproxy-container --lib` runs it under qemu-aarch64-static (`.ci/deploy-tools.sh`).
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;

    const ALLOW: u32 = 0x7fff_0000;
    const ERRNO: u32 = 0x0005_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

    fn this_arch() -> u32 {
        if cfg!(target_arch = "x86_64") { AUDIT_ARCH_X86_64 } else { AUDIT_ARCH_AARCH64 }
    }

    /// Runs one program on `struct seccomp_data { nr, arch, ip, args[6] }`.
    fn run(program: &BpfProgram, nr: u32, arch: u32) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        let (mut a, mut pc) = (0u32, 0usize);
        for _ in 0..=program.len() {
            let ins = &program[pc];
            pc += 1;
            let k = ins.k as usize;
            let jump = |taken: bool| usize::from(if taken { ins.jt } else { ins.jf });
            match ins.code {
                0x20 => a = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap()), // ld [k]
                0x54 => a &= ins.k,                                                 // and #k
                0x05 => pc += k,                                                    // ja
                0x15 => pc += jump(a == ins.k),                                     // jeq
                0x25 => pc += jump(a > ins.k),                                      // jgt
                0x35 => pc += jump(a >= ins.k),                                     // jge
                0x45 => pc += jump(a & ins.k != 0),                                 // jset
                0x06 => return ins.k,                                               // ret
                other => panic!("instruction {other:#06x} is not interpreted here"),
            }
        }
        panic!("the program did not return");
    }

    /// What the kernel does with `nr`: every filter runs, the most restrictive answer wins
    /// (compared as signed 32-bit actions: kill-process is the lowest).
    fn verdict(nr: i64, arch: u32) -> u32 {
        let filters = filters().unwrap();
        let nr = u32::try_from(nr).unwrap();
        filters
            .iter()
            .map(|p| run(p, nr, arch))
            .min_by_key(|ret| (ret & 0xffff_0000) as i32)
            .unwrap()
    }

    #[test]
    fn every_allowed_call_is_allowed() {
        let allowed = syscalls::allowed_numbers();
        assert!(allowed.len() > 60, "{}", allowed.len());
        for (name, nr) in allowed {
            assert_eq!(verdict(nr, this_arch()), ALLOW, "{name} ({nr})");
        }
    }

    #[test]
    fn hostile_calls_kill_and_the_rest_fail_with_eperm() {
        for nr in syscalls::hostile_numbers() {
            assert_eq!(verdict(nr, this_arch()), KILL_PROCESS, "syscall {nr}");
        }
        let eperm = ERRNO | u32::try_from(libc::EPERM).unwrap();
        for nr in [libc::SYS_execve, libc::SYS_execveat, libc::SYS_fchown, libc::SYS_setuid] {
            assert_eq!(verdict(nr, this_arch()), eperm, "syscall {nr}");
        }
        assert_eq!(verdict(libc::SYS_ptrace, this_arch()), KILL_PROCESS);
    }

    #[test]
    fn a_call_made_for_another_architecture_never_passes() {
        let other =
            if this_arch() == AUDIT_ARCH_X86_64 { AUDIT_ARCH_AARCH64 } else { AUDIT_ARCH_X86_64 };
        for (name, nr) in syscalls::allowed_numbers() {
            assert_ne!(verdict(nr, other), ALLOW, "{name} ({nr})");
        }
    }
}
