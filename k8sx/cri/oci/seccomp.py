"""Seccomp profiles for containers: ``runtime/default``, ``localhost/<path>`` and unconfined.

Why it exists: CRI's ``RuntimeDefault`` means "the runtime's default profile", and kubelet, containerd
and CRI-O all mean Docker's default profile by it: an allow-list that returns EPERM for anything else
(keyctl, add_key, pivot_root, swapon, kexec, ...), with the syscalls that only make sense with a
capability (mount, unshare, chroot, ptrace, settimeofday...) allowed only when the container holds
that capability, and clone restricted to no new namespaces without CAP_SYS_ADMIN. The rules below are
our own tables written from that profile's documented behaviour; :func:`runtime_default` turns them
into the OCI ``linux.seccomp`` object for a given capability set, as containerd does at create time.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

from k8sx.errors import K8sxError

EPERM = 1
ENOSYS = 38

# Allowed for everyone (grouped by purpose only to keep the table readable).
_ALLOWED_TEXT = """
accept accept4 bind connect getpeername getsockname getsockopt listen recv recvfrom recvmmsg
recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt shutdown socketcall socketpair
access faccessat faccessat2 chdir fchdir getcwd chmod fchmod fchmodat fchmodat2 chown chown32 fchown
fchown32 fchownat lchown lchown32 creat open openat openat2 close close_range dup dup2 dup3 link
linkat symlink symlinkat unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir mknod mknodat
readlink readlinkat stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx statfs statfs64
fstatfs fstatfs64 truncate truncate64 ftruncate ftruncate64 fallocate fadvise64 fadvise64_64
umask utime utimes utimensat utimensat_time64 futimesat getdents getdents64
read readv pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2 lseek _llseek sendfile
sendfile64 splice tee vmsplice copy_file_range readahead sync syncfs fsync fdatasync sync_file_range
flock fcntl fcntl64 ioctl
getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr setxattr lsetxattr fsetxattr
removexattr lremovexattr fremovexattr
inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2
poll ppoll ppoll_time64 select _newselect pselect6 pselect6_time64 eventfd eventfd2 signalfd signalfd4
timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 pipe pipe2
io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock munlockall
remap_file_pages membarrier memfd_create memfd_secret pkey_alloc pkey_free pkey_mprotect
process_mrelease cachestat map_shadow_stack
execve execveat exit exit_group fork vfork wait4 waitid waitpid kill tkill tgkill pause
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaltstack sigprocmask sigreturn restart_syscall
pidfd_open pidfd_send_signal futex futex_time64 futex_waitv futex_wait futex_wake futex_requeue
set_robust_list get_robust_list set_tid_address rseq set_thread_area get_thread_area
getpid getppid gettid getpgid getpgrp getsid setsid setpgid
getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid getresuid32 getresgid
getresgid32 getgroups getgroups32 setuid setuid32 setgid setgid32 setreuid setreuid32 setregid
setregid32 setresuid setresuid32 setresgid setresgid32 setfsuid setfsuid32 setfsgid setfsgid32
setgroups setgroups32 capget capset prctl seccomp
getrlimit setrlimit ugetrlimit prlimit64 getrusage getpriority setpriority ioprio_get ioprio_set
sched_getaffinity sched_setaffinity sched_getattr sched_setattr sched_getparam sched_setparam
sched_getscheduler sched_setscheduler sched_get_priority_max sched_get_priority_min sched_yield
sched_rr_get_interval sched_rr_get_interval_time64 getcpu
time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64 clock_nanosleep
clock_nanosleep_time64 nanosleep adjtimex clock_adjtime clock_adjtime64 alarm getitimer setitimer
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 times
uname sysinfo getrandom
ipc msgctl msgget msgrcv msgsnd semctl semget semop semtimedop semtimedop_time64 shmat shmctl shmdt
shmget mq_open mq_unlink mq_getsetattr mq_notify mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64
landlock_add_rule landlock_create_ruleset landlock_restrict_self
ptrace process_vm_readv process_vm_writev
"""
_ALLOWED = _ALLOWED_TEXT.split()

# personality(2): only the harmless personas (Linux, Linux32, with UNAME26, and the query value).
_PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]

# Syscalls allowed only with a capability in the bounding set.
_BY_CAPABILITY: dict[str, list[str]] = {
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
    "CAP_SYS_ADMIN": ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen",
                      "fspick", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
                      "name_to_handle_at", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
                      "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2",
                      "unshare"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "init_module", "finit_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
}

# The namespace flags of clone(2) that need CAP_SYS_ADMIN: NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET.
_CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Per machine: the seccomp architectures to list and the arch-only syscalls to allow.
_ARCHES: dict[str, tuple[list[str], list[str]]] = {
    "x86_64": (["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], ["arch_prctl", "modify_ldt"]),
    "aarch64": (["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                 "cacheflush", "set_tls"]),
}


def _allow(names: list[str], **extra: Any) -> dict[str, Any]:
    return {"names": sorted(set(names)), "action": "SCMP_ACT_ALLOW", **extra}


def runtime_default(capabilities: set[str], machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object of ``runtime/default`` for a container whose bounding set is
    ``capabilities`` (names with the ``CAP_`` prefix)."""
    arches, arch_calls = _ARCHES.get(machine or platform.machine(), ([], []))
    rules: list[dict[str, Any]] = [_allow(_ALLOWED + arch_calls)]
    rules += [_allow(["personality"], args=[{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}])
              for v in _PERSONALITIES]
    # socket(2) for every family but AF_VSOCK (40).
    rules.append(_allow(["socket"], args=[{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]))
    for cap, names in _BY_CAPABILITY.items():
        if cap in capabilities:
            rules.append(_allow(names))
    if "CAP_SYS_ADMIN" not in capabilities:
        rules.append(_allow(["clone"], args=[{"index": 0, "value": _CLONE_NS_FLAGS, "valueTwo": 0,
                                               "op": "SCMP_CMP_MASKED_EQ"}]))
        # clone3 hides its flags in a struct seccomp cannot read: make libc fall back to clone.
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    profile: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM,
                               "syscalls": rules}
    if arches:
        profile["architectures"] = arches
    return profile


def localhost(path: str) -> dict[str, Any]:
    """A profile file on the host: OCI ``linux.seccomp`` JSON, or the Docker format (which has the same
    keys apart from ``archMap``, folded into ``architectures`` here)."""
    if not os.path.isabs(path):
        raise K8sxError(f"seccomp localhost profile {path!r}: the path must be absolute")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise K8sxError(f"seccomp localhost profile {path}: {e.strerror}") from e
    except ValueError as e:
        raise K8sxError(f"seccomp localhost profile {path}: not JSON ({e})") from e
    if not isinstance(data, dict) or "defaultAction" not in data:
        raise K8sxError(f"seccomp localhost profile {path}: no defaultAction")
    arch_map = data.pop("archMap", None)
    if arch_map and "architectures" not in data:
        machine = platform.machine()
        want = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(machine)
        for entry in arch_map:
            if entry.get("architecture") == want:
                data["architectures"] = [want, *entry.get("subArchitectures", [])]
    data.pop("defaultErrno", None)
    return data
