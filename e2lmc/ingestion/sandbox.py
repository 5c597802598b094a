"""Confinement of the task process: every isolation layer, and what each achieved.

The task process runs participant code. It confines itself with `confine(policy)` before
it imports any of that code, with every layer the platform allows, in this order:

    namespaces      network / mount (hidden paths, read-only) / PID    needs CAP_SYS_ADMIN
    user            switch to `nobody`                                 needs CAP_SETUID/GID
    capabilities    drop all (bounding, ambient, inheritable, permitted, effective)
    no_new_privs    no setuid binary, no file capability can give them back
    landlock        read-only: interpreter, libraries, the staged task; read-write: scratch;
                    no TCP bind/connect; no abstract Unix sockets; no signals outside
    seccomp         no mount/namespace/ptrace/bpf/keyring/... syscalls, no socket()
    rlimits         memory, CPU, file size, no core dumps

The last four need no privilege, so they hold on Codabench's worker (root with every
capability dropped, no namespaces) and for an unprivileged user alike. Each layer reports
what it achieved on this run; `ingestion.json` records the report under `isolation`.
The seccomp filter comes from libseccomp (through `pyseccomp`, which mirrors libseccomp's
own Python API): it resolves syscall numbers per architecture and kills foreign-ABI calls.
Landlock is called directly: the one Python binding published for it covers file rights
only, not the network rules and scopes this policy needs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import signal
from dataclasses import dataclass, field
from typing import Any

NOBODY = 65534
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
# every CLONE_NEW* flag: mount, cgroup, uts, ipc, user, pid, net
CLONE_NEW_FLAGS = (CLONE_NEWNS, 0x02000000, 0x04000000, 0x08000000, 0x10000000, CLONE_NEWPID,
                   CLONE_NEWNET)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
_LIBC = ctypes.CDLL(None, use_errno=True)

# Syscalls no metric needs and an attacker wants: mounts and namespaces (undo the file
# system view), tracing and cross-process memory (read the runner), kernel keyrings, BPF,
# perf, module and kexec loading, io_uring (its operations bypass this filter).
DENIED_SYSCALLS = (
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "ptrace",
    "process_vm_readv", "process_vm_writev", "bpf", "keyctl", "add_key", "request_key",
    "perf_event_open", "open_by_handle_at", "name_to_handle_at", "init_module",
    "finit_module", "delete_module", "kexec_load", "kexec_file_load", "swapon", "swapoff",
    "reboot", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "quotactl", "acct", "syslog", "settimeofday", "clock_settime", "adjtimex",
    "pidfd_getfd", "process_madvise", "kcmp", "lookup_dcookie", "vhangup",
)


@dataclass
class Policy:
    """What the task process may touch. Paths are absolute."""

    read: list[str]  # read (and execute): interpreter, site-packages, the staged task
    write: list[str]  # read-write: its scratch folder only
    hide: list[str] = field(default_factory=list)  # masked where mount namespaces exist
    allow_network: bool = False
    namespaces: bool = True
    root_reason: str = ""  # why the runner keeps the task process root; "" = switch to nobody
    limits: dict[str, Any] = field(default_factory=dict)


def confine(policy: Policy) -> dict[str, str]:
    """Apply every layer the platform allows; return what each achieved (honestly)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the runner
    done: dict[str, str] = {}
    done.update(_namespaces(policy))
    done["user"] = _switch_user(policy)
    done["capabilities"] = drop_capabilities()
    done["no_new_privs"] = ("set" if _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                            else f"refused ({_errno()})")
    done["landlock"] = landlock(policy.read, policy.write, policy.allow_network)
    done["seccomp"] = seccomp(policy.allow_network)
    _rlimits(policy.limits, done["user"] == "nobody")
    return done


def file_barrier(report: dict[str, str]) -> bool:
    """Whether some layer keeps the task off the files it must not read or write (the
    signing key, the manifest, the outputs): a read-only mount namespace with masks, or
    Landlock."""
    return (report.get("landlock", "").startswith("ABI")
            or report.get("filesystem", "").startswith("read-only except"))


def _errno() -> str:
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


# --------------------------------------------------------------------------- namespaces
def _namespaces(policy: Policy) -> dict[str, str]:
    """Network, mount and PID namespaces: only where the platform grants CAP_SYS_ADMIN."""
    if not policy.allow_network:
        if policy.namespaces and _LIBC.unshare(CLONE_NEWNET) == 0:
            net = "namespace"  # only a loopback device, down
        else:
            net = "no namespace (no privilege); see seccomp and landlock"
    else:
        net = "allowed by the manifest"
    if not policy.namespaces:
        return {"network": net, "filesystem": "no namespace (switched off)",
                "hidden": "none", "processes": "visible"}
    return {"network": net, **_mount_namespace(policy)}


def _mount(src, target, fstype, flags, data=None) -> bool:
    enc = (lambda x: None if x is None else str(x).encode())
    return _LIBC.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) == 0


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = line.split()[4]
            points.append(re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), mp))
    return points


def _mount_namespace(policy: Policy) -> dict[str, str]:
    """Private mounts: hidden paths under empty tmpfs, everything read-only but scratch."""
    own_pids = _LIBC.unshare(CLONE_NEWNS | CLONE_NEWPID) == 0
    if not own_pids and _LIBC.unshare(CLONE_NEWNS) != 0:
        return {"filesystem": "no namespace (no privilege); see landlock",
                "hidden": "none", "processes": "visible"}
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if own_pids:
        _become_pid_namespace_init()
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    hidden = [p for p in policy.hide if os.path.isdir(p)
              and _mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")]
    for w in policy.write:
        _mount(w, w, None, MS_BIND | MS_REC)
    failed = []
    for mp in sorted(set(_mount_points()), key=len):
        if any(mp == w or mp.startswith(w + "/") for w in policy.write):
            continue
        if not _mount(None, mp, None, MS_BIND | MS_REMOUNT | MS_RDONLY):
            failed.append(mp)
    return {"filesystem": "read-only except scratch" if "/" not in failed
            else "read-only remount refused; see landlock",
            "hidden": ", ".join(hidden) or "none",
            "processes": "own PID namespace" if own_pids else "visible"}


def _become_pid_namespace_init() -> None:
    """After unshare(CLONE_NEWPID) only children enter the new namespace: fork once.

    The parent stays behind as a relay: it waits and exits the way the child did, so the
    runner sees the task's exit status, and killing the process group kills both.
    """
    pid = os.fork()
    if pid == 0:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


# --------------------------------------------------------------------------- user, caps
def _switch_user(policy: Policy) -> str:
    if os.geteuid() != 0:
        return "unprivileged (not root)"
    if policy.root_reason:
        return f"root ({policy.root_reason})"
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    except OSError:
        return "root (no CAP_SETUID/CAP_SETGID here)"
    return "nobody"


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capabilities() -> dict[str, int]:
    """This process's capability sets, from /proc (bit masks)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Cap"):
                name, value = line.split(":")
                out[name[3:].strip().lower()] = int(value, 16)
    return out


def drop_capabilities() -> str:
    """Empty every capability set. The bounding set first: that needs CAP_SETPCAP."""
    try:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        _LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM without CAP_SETPCAP: see below
    _LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _LIBC.capset(ctypes.byref(header), data)
    left = capabilities()
    held = {k: v for k, v in left.items() if k in ("inh", "prm", "eff", "amb") and v}
    if held:
        return "not all dropped: " + ", ".join(f"{k} {v:#x}" for k, v in held.items())
    if left.get("bnd"):
        return "none held (bounding set kept: no CAP_SETPCAP; no_new_privs covers it)"
    return "none (all sets empty)"


# --------------------------------------------------------------------------- landlock
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_WRITE_ALL_V1 = 0x1FF2  # write file, remove dir/file, make char/dir/reg/sock/fifo/block/sym
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall(nr: int, *args) -> int:
    return _LIBC.syscall(ctypes.c_long(nr), *args)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is absent or refused."""
    v = _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(v, 0)


def _fs_rights(abi: int) -> tuple[int, int]:
    """(read-only rights, all rights) this ABI knows."""
    everything = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR | _FS_WRITE_ALL_V1
    everything |= (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    everything |= _FS_IOCTL_DEV if abi >= 5 else 0
    return _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR, everything


def landlock(read: list[str], write: list[str], allow_network: bool = False) -> str:
    """Restrict this process (and all it starts) to `read` and `write`, nothing else."""
    abi = landlock_abi()
    if abi <= 0:
        return f"unavailable ({_errno()}: kernel without Landlock or refused by seccomp)"
    ro, everything = _fs_rights(abi)
    net = 0 if allow_network or abi < 4 else _NET_BIND_TCP | _NET_CONNECT_TCP
    scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(everything, net, scoped)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    fd = _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                  ctypes.c_uint32(0))
    if fd < 0:
        return f"refused ({_errno()})"
    try:
        granted = [(p, ro) for p in read] + [(p, everything) for p in write]
        for path, rights in granted:
            _allow_beneath(fd, path, rights, everything)
        _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            return f"refused ({_errno()})"
    finally:
        os.close(fd)
    what = ["file system (read-only task and libraries, writable scratch)"]
    what += ["no TCP bind/connect"] if net else []
    what += ["no abstract Unix sockets or signals outside"] if scoped else []
    return f"ABI {abi}: " + ", ".join(what)


def _allow_beneath(ruleset: int, path: str, rights: int, everything: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # absent on this system: nothing to allow
    try:
        if not os.path.isdir(path):  # files take file rights only
            rights &= _FS_EXECUTE | _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
        rule = _PathBeneath(rights & everything, fd)
        _syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                 ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)


def forbid_writes() -> str:
    """A further Landlock layer with no write anywhere: one checkpoint's metrics leave no
    trace for the next (a metric that counts its calls in a file cannot draw a curve)."""
    return landlock(["/"], ["/dev/null"], allow_network=True)


# --------------------------------------------------------------------------- seccomp
def seccomp(allow_network: bool = False) -> str:
    """Deny the syscalls an attacker needs; libseccomp builds the BPF for this arch."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError, OSError) as exc:  # RuntimeError: no libseccomp.so
        return f"unavailable ({type(exc).__name__}: {exc})"
    eperm = sc.ERRNO(errno.EPERM)
    try:
        f = sc.SyscallFilter(sc.ALLOW)
        for name in DENIED_SYSCALLS:
            try:
                f.add_rule(eperm, name)
            except (OSError, ValueError, RuntimeError):
                pass  # unknown on this architecture or libseccomp version
        for flag in CLONE_NEW_FLAGS:
            f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory that seccomp cannot read: ENOSYS makes libc
        # fall back to clone, whose flags the rules above check.
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        if not allow_network:
            f.add_rule(eperm, "socket")  # socketpair() (pipes between threads) stays
        f.load()
    except OSError as exc:
        return f"refused ({exc})"
    return ("no mount/namespace/ptrace/bpf/keyring syscalls"
            + ("" if allow_network else ", no socket()"))


# --------------------------------------------------------------------------- rlimits
def _rlimits(lim: dict[str, Any], nobody: bool) -> None:
    for name, key in (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_CPU", "cpu_seconds"),
                      ("RLIMIT_FSIZE", "file_bytes")):
        value = lim.get(key)
        if value:
            resource.setrlimit(getattr(resource, name), (int(value), int(value)))
    if lim.get("nproc") and nobody:
        resource.setrlimit(resource.RLIMIT_NPROC, (int(lim["nproc"]), int(lim["nproc"])))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
