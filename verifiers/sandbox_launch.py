"""Sandbox launcher: isolates its own process, then execs the untrusted program.

Started by `verifiers.sandbox.run` as `python -I -S sandbox_launch.py '<json>'` in a new
session, so nothing of the verifier process (threads, locks, secrets) is inherited.
Standard library only. It reports on the status fd one line, "OK <json of the layers
applied>" just before exec, or "ERR <message>"; the fd is close-on-exec, so the parent
reads EOF the moment the program starts.

Layers, in order: new network + mount namespaces (best effort; as non-root inside a new
user namespace), a size-limited tmpfs holding a copy of the sandbox files mounted on
/tmp and bound over the other world-writable directories, resource limits, the
unprivileged uid (when started as root), no_new_privs and a parent-death signal.
"""
import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
# World-writable places an unprivileged uid could otherwise leave files in; /tmp last.
SHARED_DIRS = ("/var/tmp", "/dev/shm", "/run/lock")

libc = ctypes.CDLL(None, use_errno=True)


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _unshare(cfg, layers):
    """Enter new namespaces; returns the flags obtained (0 when none could be had)."""
    wanted = (0 if cfg["network"] else CLONE_NEWNET) | (CLONE_NEWNS if cfg["private_tmp"] else 0)
    root = os.getuid() == 0
    for flags in (wanted, wanted & CLONE_NEWNET, wanted & CLONE_NEWNS):
        if not flags:
            continue
        if libc.unshare(flags | (0 if root else CLONE_NEWUSER)) == 0:
            if not root:  # map our own ids, or files created inside would fail with EOVERFLOW
                uid, gid = os.getuid(), os.getgid()
                _write("/proc/self/setgroups", "deny")
                _write("/proc/self/uid_map", f"{uid} {uid} 1")
                _write("/proc/self/gid_map", f"{gid} {gid} 1")
            return flags
        layers.setdefault("unshare_errors", []).append(os.strerror(ctypes.get_errno()))
    return 0


def _private_tmp(cfg, layers):
    """A fresh tmpfs on /tmp with a copy of the sandbox files; bound over the other shared dirs."""
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    src = os.open(cfg["dir"], os.O_PATH | os.O_DIRECTORY)  # still reachable after /tmp is covered
    uid = cfg["uid"] if cfg["uid"] is not None else os.getuid()
    gid = cfg["uid"] if cfg["uid"] is not None else os.getgid()
    opts = f"size={cfg['disk_mb']}m,nr_inodes=4096,mode=700,uid={uid},gid={gid}".encode()
    _check(libc.mount(b"sandbox", b"/tmp", b"tmpfs", 0, opts), "mount tmpfs on /tmp")
    for name in cfg["files"]:
        with open(f"/proc/self/fd/{src}/{name}", "rb") as f_in, open(f"/tmp/{name}", "wb") as f_out:
            f_out.write(f_in.read())
    os.close(src)
    bound = ["/tmp"]
    for target in SHARED_DIRS:
        if os.path.isdir(target) and libc.mount(b"/tmp", target.encode(), None, MS_BIND, None) == 0:
            bound.append(target)
    layers["private_tmp"] = bound
    return "/tmp"


def _limits(cfg):
    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _drop_privileges(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
        raise OSError(f"could not switch to uid {uid}")


def setup(cfg):
    layers = {"uid": cfg["uid"], "network_off": False, "private_tmp": [], "rlimits": True}
    workdir = cfg["dir"]
    flags = _unshare(cfg, layers) if (not cfg["network"] or cfg["private_tmp"]) else 0
    layers["network_off"] = bool(flags & CLONE_NEWNET)
    if flags & CLONE_NEWNS:
        workdir = _private_tmp(cfg, layers)
    _limits(cfg)
    if cfg["uid"] is not None:
        _drop_privileges(cfg["uid"])
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
    # Set after the uid change, which clears it: the program dies with the verifier.
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(pdeathsig)")
    os.chdir(workdir)
    layers["workdir"] = workdir
    return layers, workdir


def main():
    cfg = json.loads(sys.argv[1])
    fd = cfg["status_fd"]
    os.umask(0o022)  # the copied files must be readable by the sandbox uid
    os.set_inheritable(fd, False)
    try:
        layers, workdir = setup(cfg)
        env = dict(cfg["env"], HOME=workdir, TMPDIR=workdir)
        os.write(fd, b"OK " + json.dumps(layers).encode() + b"\n")
        os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", cfg["main"]], env)
    except Exception as e:  # noqa: BLE001 - any failure here is the sandbox's, reported as such
        os.write(fd, f"ERR {type(e).__name__}: {e}\n".encode())
        os._exit(126)


if __name__ == "__main__":
    main()
