"""Sandbox launcher: isolates a process tree, then execs the untrusted program in it.

Started by `verifiers.sandbox.run` as `python -I -S launcher.py <hex of marshal>` in a new
session, so nothing of the verifier process (threads, locks, secrets) is inherited.
Standard library only. Three processes:

    launcher (host pid namespace, root)     joins the run's cgroup, unshares namespaces,
      |                                      waits, and exits as the program did
      +- init (pid 1 of a new pid namespace) builds the filesystem view, reaps orphans;
           |                                 when it exits the kernel kills the namespace
           +- program (the run's uid)        rlimits, no_new_privs, then exec python

It reports on the status fd one line, "OK <repr of the layers applied>" just before the
program's exec, or "ERR <message>"; the fd is close-on-exec and the others close it, so
the parent reads EOF the moment the program starts. Every layer is best effort where the
kernel or the privileges refuse it; the OK line says what was obtained.

Filesystem view (root, or in a user namespace): a fresh tmpfs becomes `/`, holding `/usr`
and the Python prefix bound read-only (the prefix's site-packages masked), `/dev/null`,
`zero`, `random`, `urandom`, a private `/proc`, and writable `/work` (the program's files),
`/tmp` and `/dev/shm`. Nothing else of the host (repos, homes, /etc, other processes) exists.
"""
import _signal as signal  # the C module: `signal` would import enum, slow for every run
import ctypes
import fcntl
import marshal
import os
import resource
import struct
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NS_FLAGS = {"mnt": CLONE_NEWNS, "pid": CLONE_NEWPID, "ipc": CLONE_NEWIPC, "net": CLONE_NEWNET,
            "uts": CLONE_NEWUTS}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2
HIGH_FD = 200  # the program's fds are arranged above this, then moved into place
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}.get(os.uname().machine)
DEVICES = ("null", "zero", "random", "urandom")
# Without a new root these world-writable places are covered by the private tmpfs instead.
SHARED_DIRS = ("/var/tmp", "/dev/shm", "/run/lock")

libc = ctypes.CDLL(None, use_errno=True)


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data, what):
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    _check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), what)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _die_with_parent(parent):
    """SIGKILL when the parent dies; `parent` is getppid() as seen right after the fork."""
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(pdeathsig)")
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(125)


def _unshare(cfg, layers):
    """Enter new namespaces, as many of the wanted ones as the kernel allows."""
    wanted = [n for n in ("mnt", "pid", "ipc", "uts", "net") if n != "net" or not cfg["network"]]
    root = os.getuid() == 0
    for names in (wanted, [n for n in wanted if n != "pid"], [n for n in wanted if n in ("mnt", "net")],
                  ["net"] if "net" in wanted else [], ["mnt"]):
        if not names:
            continue
        flags = sum(NS_FLAGS[n] for n in names)
        if libc.unshare(flags | (0 if root else CLONE_NEWUSER)) == 0:
            if not root:  # map our own ids, or files created inside would fail with EOVERFLOW
                uid, gid = os.getuid(), os.getgid()
                _write("/proc/self/setgroups", "deny")
                _write("/proc/self/uid_map", f"{uid} {uid} 1")
                _write("/proc/self/gid_map", f"{gid} {gid} 1")
                layers["user_namespace"] = True
            layers["namespaces"] = names
            return names
        layers.setdefault("unshare_errors", []).append(f"{'+'.join(names)}: {os.strerror(ctypes.get_errno())}")
    layers["namespaces"] = []
    return []


def _bind_ro(src, dst, what):
    _mount(src, dst, None, MS_BIND | MS_REC, None, f"bind {what}")
    # Read-only needs a remount; keep nosuid/nodev where the kernel insists (user namespaces).
    for extra in (MS_NOSUID | MS_NODEV, MS_NOSUID, 0):
        if libc.mount(None, dst.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | extra, None) == 0:
            return
    raise OSError(ctypes.get_errno(), f"remount {what} read-only: {os.strerror(ctypes.get_errno())}")


def _minimal_root(cfg, files, owner, layers):
    """Build the new root on a tmpfs at cfg['dir'] and pivot into it."""
    new = cfg["dir"]
    _mount("sandbox", new, "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['disk_mb']}m,nr_inodes=8192,mode=755",
           "mount tmpfs root")
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{new}/{name}")
        elif os.path.isdir(host):
            os.mkdir(f"{new}/{name}")
            _bind_ro(host, f"{new}/{name}", host)
    os.mkdir(f"{new}/usr")
    lib_dirs = cfg.get("lib_dirs") or ["/usr"]  # only the directories of the runtime's shared libraries
    layers["usr"] = lib_dirs
    for d in lib_dirs:
        os.makedirs(f"{new}{d}", mode=0o755, exist_ok=True)
        _bind_ro(d, f"{new}{d}", d)
    prefix = cfg["prefix"]
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        os.makedirs(f"{new}{prefix}", mode=0o755)
        _bind_ro(prefix, f"{new}{prefix}", prefix)
    for mask in cfg["mask"]:  # the host's installed packages are not the program's business
        if os.path.isdir(f"{new}{mask}"):
            _mount("masked", f"{new}{mask}", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=755",
                   "mask " + mask)
    os.makedirs(f"{new}/etc", mode=0o755)
    if os.path.isfile("/etc/ld.so.cache"):  # the dynamic loader's index of /usr/lib
        _write(f"{new}/etc/ld.so.cache", "")
        _bind_ro("/etc/ld.so.cache", f"{new}/etc/ld.so.cache", "/etc/ld.so.cache")
    os.mkdir(f"{new}/dev")
    for dev in DEVICES:
        _write(f"{new}/dev/{dev}", "")
        _mount(f"/dev/{dev}", f"{new}/dev/{dev}", None, MS_BIND, None, f"bind /dev/{dev}")
    for d in ("/tmp", "/dev/shm", "/work"):
        os.mkdir(f"{new}{d}")
        os.chmod(f"{new}{d}", 0o1777 if d != "/work" else 0o755)
    for name, data in files.items():
        with open(f"{new}/work/{name}", "wb") as f:
            f.write(data)
    for name in [*files, ""]:
        os.chown(f"{new}/work/{name}".rstrip("/"), owner, owner)
    os.mkdir(f"{new}/proc")
    if "pid" in layers["namespaces"]:
        # subset=pid: only the run's processes, no host-wide files (cmdline, kallsyms, sys, mounts of
        # the host's devices); older kernels refuse the option and get the whole (private) /proc.
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        if libc.mount(b"proc", f"{new}/proc".encode(), b"proc", flags, b"subset=pid") == 0:
            layers["proc"] = "subset=pid"
        else:
            _mount("proc", f"{new}/proc", "proc", flags, None, "mount /proc")
            layers["proc"] = "full"
    os.mkdir(f"{new}/.old")
    os.chdir(new)
    _check(libc.syscall(SYS_PIVOT_ROOT, b".", b".old"), "pivot_root")
    os.chroot(".")
    _check(libc.umount2(b"/.old", MNT_DETACH), "detach the old root")
    os.rmdir("/.old")
    os.chdir("/work")
    layers["root"] = "minimal"
    layers["private_tmp"] = ["/tmp", "/dev/shm", "/work"]
    return "/work"


def _private_tmp(cfg, files, owner, layers):
    """No new root: a fresh tmpfs on /tmp with the files, bound over the other shared dirs."""
    opts = f"size={cfg['disk_mb']}m,nr_inodes=4096,mode=700,uid={owner},gid={owner}"
    _mount("sandbox", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts, "mount tmpfs on /tmp")
    for name, data in files.items():
        with open(f"/tmp/{name}", "wb") as f:
            f.write(data)
        os.chown(f"/tmp/{name}", owner, owner)
    bound = ["/tmp"]
    for target in SHARED_DIRS:
        if os.path.isdir(target) and libc.mount(b"/tmp", target.encode(), None, MS_BIND, None) == 0:
            bound.append(target)
    layers["root"] = "host"
    layers["private_tmp"] = bound
    return "/tmp"


def _filesystem(cfg, files, layers):
    owner = cfg["uid"] if cfg["uid"] is not None else os.getuid()
    if "mnt" not in layers["namespaces"]:
        layers["root"], layers["private_tmp"] = "host", []
        return cfg["dir"]
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    if cfg["minimal_root"] and SYS_PIVOT_ROOT:
        try:
            return _minimal_root(cfg, files, owner, layers)
        except OSError as e:  # mounts so far are private to this namespace; fall back below
            layers["root_error"] = str(e)
            os.chdir("/")
            libc.umount2(cfg["dir"].encode(), MNT_DETACH)
    return _private_tmp(cfg, files, owner, layers)


# x86_64 system calls the program never needs and that widen what it can reach: tracing and
# reading other processes, namespaces and mounts, kernel keyrings, bpf, io_uring, modules.
DENIED_X86_64 = {
    "ptrace": 101, "syslog": 103, "personality": 135, "vhangup": 153, "pivot_root": 155, "chroot": 161,
    "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "pidfd_getfd": 438, "mount_setattr": 442,
}
CLONE_NS_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET


# Socket families a network namespace isolates (and AF_UNIX, which the mount view confines); any
# other (AF_VSOCK shares its port space with the host, AF_ALG, AF_PACKET, ...) fails with EAFNOSUPPORT.
SOCKET_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}
SYS_SOCKET, SYS_SOCKETPAIR, SYS_CLONE, SYS_CLONE3 = 41, 53, 56, 435


def _seccomp_filter():
    """(BPF program, note): the calls above fail with EPERM, clone() into new namespaces
    too, socket()/socketpair() of a family not in SOCKET_FAMILIES with EAFNOSUPPORT, clone3
    with ENOSYS (its flags cannot be inspected; libc falls back to clone), and any call
    through another ABI (i386, x32) is refused. (None, why) off x86_64."""
    if os.uname().machine != "x86_64":
        return None, "none: the filter is written for x86_64"
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, errno = 0x7FFF0000, 0x00050000
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, 0xC000003E), (ret, 0, 0, errno | 1), (ld, 0, 0, 0),
            (jge, 0, 1, 0x40000000), (ret, 0, 0, errno | 1), (jeq, 0, 1, SYS_CLONE3), (ret, 0, 0, errno | 38)]
    prog += [(jeq, "deny", 0, nr) for nr in sorted(DENIED_X86_64.values())]
    prog += [(jeq, "family", 0, SYS_SOCKET), (jeq, "family", 0, SYS_SOCKETPAIR)]
    prog += [(jeq, 0, "allow", SYS_CLONE), (ld, 0, 0, 16), (jset, "deny", "allow", CLONE_NS_FLAGS)]
    labels = {"family": len(prog)}
    prog += [(ld, 0, 0, 16)]  # the first argument (low word): the family
    prog += [(jeq, "allow", 0, f) for f in sorted(SOCKET_FAMILIES.values())]
    prog += [(ret, 0, 0, errno | 97)]  # EAFNOSUPPORT
    labels["allow"] = len(prog)
    prog += [(ret, 0, 0, allow)]
    labels["deny"] = len(prog)
    prog += [(ret, 0, 0, errno | 1)]

    def jump(i, to):
        return labels[to] - i - 1 if isinstance(to, str) else to

    prog = [(c, jump(i, jt), jump(i, jf), k) for i, (c, jt, jf, k) in enumerate(prog)]
    return b"".join(struct.pack("HBBI", *insn) for insn in prog), \
        f"{len(DENIED_X86_64)} calls denied (ptrace, mount, unshare, bpf, ...), no new namespaces, " \
        f"sockets only of {'/'.join(SOCKET_FAMILIES)}"


def _apply_seccomp(raw):
    """Install the filter (after no_new_privs); a failure stops the run as a sandbox error."""
    buf = ctypes.create_string_buffer(raw, len(raw))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Prog(len(raw) // 8, ctypes.addressof(buf))
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp filter")


def _let_go_of_program_fds(cfg: dict) -> None:
    """Hold none of the program's pipes open: stdio to /dev/null, the passed fds closed
    (so the host sees EOF when the program ends)."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for fd in map(int, cfg["fds"].values()):
        try:
            os.close(fd)
        except OSError:
            pass


def _program(cfg, workdir, status_fd, init_pid, seccomp):
    """In the program's process: fds, limits, identity, then exec. Never returns."""
    try:
        # Move every source out of the way first: a source may sit on another's target number.
        status_fd = fcntl.fcntl(status_fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
        high = {int(child): fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD) for child, fd in cfg["fds"].items()}
        keep = {0, 1, 2, status_fd, *high, *high.values()}
        for fd in range(3, HIGH_FD + 64):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for child, fd in high.items():
            os.dup2(fd, child, inheritable=True)
            os.close(fd)
        try:  # the kernel's OOM killer takes the program before init
            _write("/proc/self/oom_score_adj", "1000")
        except OSError:
            pass
        for name, (soft, hard) in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        os.chdir(workdir)  # before the uid change: the host's parents of a work dir may be closed to it
        if cfg["uid"] is not None:
            uid = cfg["uid"]
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
                raise OSError(f"could not switch to uid {uid}")
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
        _die_with_parent(init_pid)  # set after the uid change, which clears it
        if seccomp is not None:
            _apply_seccomp(seccomp)
        env = dict(cfg["env"], HOME=workdir, TMPDIR="/tmp" if workdir == "/work" else workdir)
        # Python opens the script by its absolute path: on the host that walks parents the
        # uid may not enter, so go through the cwd link instead.
        main = cfg["main"] if workdir == "/work" else f"/proc/self/cwd/{cfg['main']}"
        os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", main], env)
    except BaseException as e:  # noqa: BLE001 - reported to the verifier as a sandbox failure
        try:
            os.write(status_fd, f"ERR {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(126)


def _init(cfg, files, layers, status_fd, exit_w, parent):
    """pid 1 of the run: filesystem, then the program; reports its wait status. Never returns."""
    try:
        _die_with_parent(parent)
        try:
            _write("/proc/self/oom_score_adj", "-1000")
        except OSError:
            pass
        workdir = _filesystem(cfg, files, layers)
        layers["workdir"] = workdir
        seccomp, layers["seccomp"] = _seccomp_filter()
        if layers["root"] != "minimal":  # ours may sit where the run's uid cannot reach it
            if cfg["host_python"].startswith("!"):
                raise OSError(f"no minimal root ({layers.get('root_error') or 'no mount namespace'}) and "
                              f"{cfg['host_python'][1:]}")
            cfg["python"] = cfg["host_python"]
        os.write(status_fd, b"OK " + repr(layers).encode() + b"\n")
    except BaseException as e:  # noqa: BLE001
        os.write(status_fd, f"ERR {type(e).__name__}: {e}\n".encode())
        os._exit(126)
    child = os.fork()
    if child == 0:
        os.close(exit_w)
        _program(cfg, workdir, status_fd, os.getppid(), seccomp)
    os.close(status_fd)
    _let_go_of_program_fds(cfg)
    while True:  # reap everything; orphans of the namespace are reparented to us
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(125)
        except InterruptedError:
            continue
        if pid == child:
            os.write(exit_w, f"{status}\n".encode())
            os._exit(0)  # as pid 1: the kernel now kills whatever the program left running


def main():
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    status_fd = cfg["status_fd"]
    os.umask(0o022)
    os.set_inheritable(status_fd, False)
    layers = {"uid": cfg["uid"], "network_off": False, "rlimits": True, "cgroup": cfg["cgroup_note"]}
    try:
        _die_with_parent(cfg["parent"])
        for procs in cfg["cgroup_procs"]:  # before forking: everything below is charged to the run
            _write(procs, str(os.getpid()))
        files = {}
        for name in cfg["files"]:
            with open(os.path.join(cfg["dir"], name), "rb") as f:
                files[name] = f.read()
        names = _unshare(cfg, layers)
        layers["network_off"] = "net" in names
        exit_r, exit_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # (in a new pid namespace our parent reads as pid 0)
            os.close(exit_r)
            _init(cfg, files, layers, status_fd, exit_w, os.getppid())
    except BaseException as e:  # noqa: BLE001 - any failure here is the sandbox's, reported as such
        os.write(status_fd, f"ERR {type(e).__name__}: {e}\n".encode())
        os._exit(126)
    os.close(status_fd)
    os.close(exit_w)
    _let_go_of_program_fds(cfg)
    report = b""
    while chunk := os.read(exit_r, 64):
        report += chunk
    os.waitpid(pid, 0)
    if not report.strip():
        os._exit(125)  # init died without reporting (killed from outside)
    status = int(report)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP: default already
            pass
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal that does not kill by default
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
