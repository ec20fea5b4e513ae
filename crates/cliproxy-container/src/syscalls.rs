//! The one syscall allowlist: what the gateway really calls, each entry with its reason.
//!
//! It was derived by tracing the real server (`strace -f` over the end-to-end suite; see
//! `docs/security/sandbox.md`) and is used twice: compiled into the in-process seccomp filter
//! and written out as the Docker seccomp profile, so the two cannot disagree.
//!
//! Names are kernel syscall names. [`COMMON`] exist on x86_64 and aarch64; [`X86_64_ONLY`]
//! are the legacy calls aarch64 never had (its libc uses the `*at` forms listed in `COMMON`).

/// One allowed syscall and why the gateway needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    /// Kernel name.
    pub name: &'static str,
    /// Why it is allowed.
    pub reason: &'static str,
}

macro_rules! syscalls {
    ($list:ident, $numbers:ident, cfg($($cfg:tt)*), $( $name:ident = $nr:ident : $reason:literal, )*) => {
        /// Allowed syscalls (see the module documentation).
        pub const $list: &[Syscall] = &[ $( Syscall { name: stringify!($name), reason: $reason }, )* ];

        /// The syscall numbers of this list on the architecture being compiled for.
        #[cfg($($cfg)*)]
        pub(crate) fn $numbers() -> Vec<(&'static str, i64)> {
            vec![ $( (stringify!($name), i64::from(libc::$nr)), )* ]
        }
    };
}

syscalls! {
    COMMON, common_numbers, cfg(any(target_arch = "x86_64", target_arch = "aarch64")),
    // Files: credentials, bookkeeping, config, certificates, logs.
    read = SYS_read: "read files and sockets",
    write = SYS_write: "write files, sockets and the log",
    readv = SYS_readv: "vectored socket reads",
    writev = SYS_writev: "vectored socket writes (hyper)",
    pread64 = SYS_pread64: "read at an offset (std, ELF loading by the runtime)",
    pwrite64 = SYS_pwrite64: "write at an offset",
    openat = SYS_openat: "open credential, config and certificate files",
    close = SYS_close: "close descriptors",
    newfstatat = SYS_newfstatat: "stat files (auth.dir checks)",
    fstat = SYS_fstat: "stat an open file (mode and owner checks)",
    statx = SYS_statx: "stat files (std)",
    lseek = SYS_lseek: "seek in files",
    getdents64 = SYS_getdents64: "list auth.dir",
    fsync = SYS_fsync: "atomic writes: sync the temp file and the directory",
    fdatasync = SYS_fdatasync: "sync file data",
    flock = SYS_flock: "audit log: one writer per file (an exclusive lock at open and at reopen on SIGHUP)",
    ftruncate = SYS_ftruncate: "state database: truncate the SQLite WAL and shared-memory files",
    fallocate = SYS_fallocate: "state database: SQLite grows its files in chunks",
    renameat = SYS_renameat: "atomic writes: rename into place",
    renameat2 = SYS_renameat2: "atomic writes: rename into place (newer libc)",
    unlinkat = SYS_unlinkat: "remove credential and temporary files",
    mkdirat = SYS_mkdirat: "create auth.dir and state directories",
    fchmod = SYS_fchmod: "set 0600 / 0700 on files we own",
    fchmodat = SYS_fchmodat: "set modes by path",
    faccessat = SYS_faccessat: "check a path (std)",
    faccessat2 = SYS_faccessat2: "check a path (newer libc)",
    readlinkat = SYS_readlinkat: "resolve /proc/self links (std)",
    getcwd = SYS_getcwd: "resolve relative config paths",
    fcntl = SYS_fcntl: "descriptor flags (non-blocking, close-on-exec)",
    ioctl = SYS_ioctl: "terminal checks of the text logger and FIONBIO",
    dup = SYS_dup: "duplicate descriptors (std)",
    dup3 = SYS_dup3: "duplicate descriptors (std)",
    pipe2 = SYS_pipe2: "internal pipes (runtime wake-ups)",
    // Memory.
    mmap = SYS_mmap: "allocate memory",
    munmap = SYS_munmap: "free memory",
    mremap = SYS_mremap: "grow allocations",
    mprotect = SYS_mprotect: "guard pages of thread stacks",
    madvise = SYS_madvise: "return freed memory to the kernel",
    brk = SYS_brk: "heap",
    // Threads, time, signals.
    clone = SYS_clone: "spawn runtime and blocking-pool threads",
    clone3 = SYS_clone3: "spawn runtime and blocking-pool threads (newer libc)",
    set_robust_list = SYS_set_robust_list: "thread start-up (libc)",
    rseq = SYS_rseq: "thread start-up (glibc)",
    set_tid_address = SYS_set_tid_address: "thread start-up (libc)",
    futex = SYS_futex: "locks, condition variables, thread parking",
    sched_yield = SYS_sched_yield: "spin-then-park in locks",
    sched_getaffinity = SYS_sched_getaffinity: "size the runtime to the CPUs allowed",
    gettid = SYS_gettid: "thread ids (logging, runtime)",
    getpid = SYS_getpid: "process id (std)",
    tgkill = SYS_tgkill: "deliver a signal to a thread (runtime)",
    prctl = SYS_prctl: "name runtime threads; no_new_privs",
    prlimit64 = SYS_prlimit64: "read the descriptor limit at start-up",
    exit = SYS_exit: "end a thread",
    exit_group = SYS_exit_group: "end the process",
    rt_sigaction = SYS_rt_sigaction: "install the SIGTERM / SIGINT / SIGHUP handlers",
    rt_sigprocmask = SYS_rt_sigprocmask: "signal masks of new threads",
    rt_sigreturn = SYS_rt_sigreturn: "return from a signal handler",
    sigaltstack = SYS_sigaltstack: "stack-overflow guard of each thread",
    restart_syscall = SYS_restart_syscall: "resume a call interrupted by a signal",
    clock_gettime = SYS_clock_gettime: "time (when the vDSO is unavailable)",
    clock_nanosleep = SYS_clock_nanosleep: "sleep (std, blocking pool)",
    nanosleep = SYS_nanosleep: "sleep (std)",
    getrandom = SYS_getrandom: "keys, nonces, ids (ring)",
    uname = SYS_uname: "hostname for the device fingerprint; libc feature checks",
    geteuid = SYS_geteuid: "owner checks of auth.dir files",
    getuid = SYS_getuid: "posture report",
    getegid = SYS_getegid: "posture report",
    getgid = SYS_getgid: "posture report",
    // The event loop.
    epoll_create1 = SYS_epoll_create1: "the runtime's event loop",
    epoll_ctl = SYS_epoll_ctl: "register sockets with the event loop",
    epoll_pwait = SYS_epoll_pwait: "wait for events (aarch64 libc; x86_64 newer libc)",
    eventfd2 = SYS_eventfd2: "wake the event loop",
    ppoll = SYS_ppoll: "wait on one descriptor (std, libc)",
    // Network: the listener, upstream connections, DNS, interface lookup (netlink).
    socket = SYS_socket: "listener, upstream and DNS sockets; netlink for the fingerprint",
    socketpair = SYS_socketpair: "internal socket pairs (runtime, libc)",
    bind = SYS_bind: "bind the listener and netlink sockets",
    listen = SYS_listen: "listen for clients",
    accept4 = SYS_accept4: "accept clients",
    connect = SYS_connect: "connect upstream and to DNS",
    getsockname = SYS_getsockname: "addresses for logs",
    getpeername = SYS_getpeername: "client addresses",
    setsockopt = SYS_setsockopt: "TCP_NODELAY, SO_REUSEADDR, keep-alive",
    getsockopt = SYS_getsockopt: "connect results (SO_ERROR)",
    sendto = SYS_sendto: "DNS queries, netlink requests",
    recvfrom = SYS_recvfrom: "socket reads, DNS answers",
    sendmsg = SYS_sendmsg: "socket writes",
    recvmsg = SYS_recvmsg: "netlink answers, socket reads",
    sendmmsg = SYS_sendmmsg: "DNS queries (glibc sends A and AAAA together)",
    shutdown = SYS_shutdown: "close connections cleanly",
    // Landlock is applied after seccomp.
    landlock_create_ruleset = SYS_landlock_create_ruleset: "landlock is set up after the seccomp filter",
    landlock_add_rule = SYS_landlock_add_rule: "landlock is set up after the seccomp filter",
    landlock_restrict_self = SYS_landlock_restrict_self: "landlock is set up after the seccomp filter",
}

syscalls! {
    X86_64_ONLY, x86_64_numbers, cfg(target_arch = "x86_64"),
    open = SYS_open: "open files (legacy calls of older libcs)",
    stat = SYS_stat: "stat files (legacy)",
    lstat = SYS_lstat: "stat links (legacy)",
    access = SYS_access: "check a path (legacy)",
    rename = SYS_rename: "atomic writes: rename into place (legacy)",
    mkdir = SYS_mkdir: "create directories (legacy)",
    unlink = SYS_unlink: "remove files (legacy)",
    readlink = SYS_readlink: "resolve links (legacy)",
    poll = SYS_poll: "wait on descriptors (legacy)",
    epoll_wait = SYS_epoll_wait: "wait for events (x86_64 libc)",
    arch_prctl = SYS_arch_prctl: "thread-local storage set-up of new threads",
}

/// Calls the gateway's dependencies make that stay denied (EPERM) on purpose, because the
/// caller carries on without them; each with the reason. `cargo xtask syscalls` reports them
/// instead of asking for them to be allowed.
pub const DENIED_ON_PURPOSE: &[Syscall] = &[Syscall {
    name: "fchown",
    reason: "SQLite, when run as root, gives its -wal and -shm files the database's owner; \
             it ignores the failure, and a process allowed to chown is a stronger attacker",
}];

/// Calls that are never legitimate for the gateway: the filter kills the process instead of
/// returning an error, so an exploit cannot probe them.
pub const HOSTILE: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fspick",
    "setns",
    "unshare",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "open_by_handle_at",
    "name_to_handle_at",
    "keyctl",
    "add_key",
    "request_key",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
];

/// Every allowed syscall name on any supported architecture.
pub fn allowed() -> impl Iterator<Item = &'static Syscall> {
    COMMON.iter().chain(X86_64_ONLY)
}

/// The allowed syscall numbers on the architecture this was built for.
#[cfg(target_arch = "x86_64")]
pub(crate) fn allowed_numbers() -> Vec<(&'static str, i64)> {
    let mut all = common_numbers();
    all.extend(x86_64_numbers());
    all
}

/// The allowed syscall numbers on the architecture this was built for.
#[cfg(target_arch = "aarch64")]
pub(crate) fn allowed_numbers() -> Vec<(&'static str, i64)> {
    common_numbers()
}

/// The numbers of the [`HOSTILE`] calls that exist on this architecture.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn hostile_numbers() -> Vec<i64> {
    let mut numbers = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_quotactl,
    ];
    numbers.sort_unstable();
    numbers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_disjoint_unique_and_explained() {
        let mut names: Vec<&str> = allowed().map(|s| s.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "an allowed syscall is listed twice");
        for syscall in allowed() {
            assert!(!syscall.reason.is_empty(), "{} has no reason", syscall.name);
            assert!(!HOSTILE.contains(&syscall.name), "{} is allowed and hostile", syscall.name);
        }
        for forbidden in ["execve", "execveat", "ptrace", "fork", "vfork", "kill"] {
            assert!(!names.contains(&forbidden), "{forbidden} must not be allowed");
        }
    }

    #[test]
    fn every_name_has_a_number_here() {
        assert_eq!(HOSTILE.len(), hostile_numbers().len());
        let numbers = allowed_numbers();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(numbers.len(), COMMON.len() + X86_64_ONLY.len());
        #[cfg(target_arch = "aarch64")]
        assert_eq!(numbers.len(), COMMON.len());
        assert!(numbers.iter().all(|(_, n)| *n >= 0));
    }

    #[test]
    fn calls_denied_on_purpose_are_not_allowed() {
        for denied in DENIED_ON_PURPOSE {
            assert!(
                !COMMON.iter().chain(X86_64_ONLY).any(|s| s.name == denied.name),
                "{} is both allowed and denied on purpose",
                denied.name
            );
            assert!(!denied.reason.is_empty());
        }
    }
}
