"""The sandbox's view of the filesystem: a root of its own, built from namespaces.

A sandbox child (the "keeper") unshares user, mount, PID, network and IPC namespaces and
forks the jail's init, which becomes PID 1 of the new PID namespace: when it dies, the
kernel kills every process in it, whatever uid, session or parent they arranged for
themselves. The init builds a new root on a size-limited tmpfs and pivots into it:

- read-only, `nosuid,nodev`: /usr (and the /bin, /lib... links or folders beside it), the
  Python installation and environment this process runs from (every entry of its
  sys.path, except that a project checkout contributes only stop's own packages), the
  dynamic loader's cache, and whatever paths the job names (`read_paths`);
- writable and private, gone with the sandbox: the working directory, HOME, /tmp,
  /var/tmp, /dev/shm and /run/lock, all on one tmpfs of `SCRATCH_MB`;
- /dev/null, /dev/zero, /dev/random, /dev/urandom, and a /proc of its own PID namespace;
- nothing else: no /root, /home, /srv, no checkout, no runs folder, no response cache.

Inside, the sandbox is user `SANDBOX_ID` of its own user namespace. As root that id
maps to a private uid from the reaper's range; as an ordinary user it maps to the user's
own uid, which the PID namespace and the empty view keep from reaching anything the user
owns. Before any job code runs, the init sets no_new_privs, drops every capability and
forbids further user namespaces (a nested one could mount an unbounded tmpfs).

Everything here is trusted code; it runs before the job is known, so a pooled spare
child has its jail ready when the job arrives.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import signal
import stat
import sys
import tempfile
from pathlib import Path
from typing import Literal

from stop.errors import SandboxError

SANDBOX_ID = 1000  # the sandbox's uid and gid inside its user namespace
WORKDIR = "/sandbox"  # the job's working directory inside the jail
HOME = "/home/sandbox"
SCRATCH_MB = 64  # one tmpfs for every writable folder: files count like memory does
SCRATCH = (WORKDIR, HOME, "/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_DEVICES = ("null", "zero", "random", "urandom")
# Folders and links at the top of a usr-merged system, bound or linked as the host has them.
_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC = ("/etc/ld.so.cache", "/etc/localtime")

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
_CLONE_NEWNET, _CLONE_NEWIPC = 0x40000000, 0x08000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_SET_DUMPABLE = 1, 38, 4
_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_CAP_LAST = 63  # past the last capability the kernel knows: EINVAL, which we ignore
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_PIVOT_ROOT, _SYS_CAPSET = 155, 126  # x86-64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class JailError(SandboxError):
    """The jail could not be built: the kernel refused a namespace or a mount."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        code = ctypes.get_errno()
        raise JailError(f"{what}: {os.strerror(code)} (errno {errno.errorcode.get(code, code)})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    ok = _libc.mount(enc(source), enc(target), enc(fstype), flags, data.encode() or None) == 0
    _check(ok, f"cannot mount {source or fstype} on {target}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# ---- the view ----------------------------------------------------------------------------


def view(read_paths: tuple[str, ...] = ()) -> list[str]:
    """The host paths the jail shows read-only: the system's software, this Python and its
    packages, and `read_paths`; nested paths are left out when a parent is already shown."""
    package_root = str(Path(__file__).resolve().parents[2])
    wanted = ["/usr", sys.base_prefix, sys.prefix, *_ETC]
    for entry in sys.path:
        if not entry or not os.path.exists(entry):
            continue
        if os.path.realpath(entry) == package_root:
            # A checkout of stop (an editable install, or the child's own bootstrap):
            # only stop's packages, not its tests, runs, caches or .git.
            wanted += [os.path.join(package_root, p) for p in _OWN_PACKAGES]
        else:
            wanted.append(entry)
    wanted += [os.path.join(package_root, p) for p in _OWN_PACKAGES]
    wanted += read_paths
    paths: list[str] = []
    for path in sorted({os.path.realpath(p) for p in wanted if os.path.exists(p)}):
        if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths):
            paths.append(path)
    return paths


_OWN_PACKAGES = ("stop", "seed_improvers", "utilities")


# ---- building it -------------------------------------------------------------------------


def enter(stage: str, private_uid: int | None, paths: list[str]) -> tuple[bool, int]:
    """In the keeper: create the namespaces and fork the jail's init, which builds the
    jail on the empty folder `stage`. Returns (whether this is the init, the init's pid
    as the host sees it) in both processes.

    The sandbox is SANDBOX_ID inside its user namespace: as root, `private_uid` outside
    (the map is written by a helper left outside the namespace, as only a privileged
    process may map another id); as an ordinary user, the user's own id.

    Raises JailError, in whichever of the two processes failed, if the kernel refuses."""
    try:
        return _enter(stage, private_uid, paths)
    except OSError as exc:  # a path or a /proc file the kernel would not give us
        raise JailError(f"cannot build the sandbox's jail: {exc}") from exc


def _enter(stage: str, private_uid: int | None, paths: list[str]) -> tuple[bool, int]:
    flags = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC
    if private_uid is None:
        uid, gid = os.geteuid(), os.getegid()
        _check(_libc.unshare(flags) == 0, "cannot create the sandbox's namespaces")
        _write("/proc/self/setgroups", "deny")
        _map("self", uid, gid)
    else:
        _unshare_mapped_by_helper(flags, private_uid)
    pid = os.fork()
    if pid:
        return False, pid
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the keeper gone: the jail goes
    # A session of its own: a signal to "my process group" from inside must not reach
    # the keeper, whose process group number the jail cannot even see.
    os.setsid()
    outer_pid = int(os.readlink("/proc/self"))  # the host's /proc, until the pivot
    # Opened while this process is still who the keeper was outside (root can reach
    # /root, mode 0700, by owning it); bound from these descriptors once it is not.
    sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in _with_top(paths)}
    os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the uid change cleared it
    _build(stage, sources)
    for fd in sources.values():
        os.close(fd)
    global inside
    inside = True
    return True, outer_pid


def _map(pid: str, uid: int, gid: int) -> None:
    _write(f"/proc/{pid}/uid_map", f"{SANDBOX_ID} {uid} 1\n")
    _write(f"/proc/{pid}/gid_map", f"{SANDBOX_ID} {gid} 1\n")


def _unshare_mapped_by_helper(flags: int, uid: int) -> None:
    r, w = os.pipe()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            os.close(w)
            if os.read(r, 1) == b"u":
                _map(str(os.getppid()), uid, uid)
                code = 0
        finally:
            os._exit(code)
    os.close(r)
    try:
        _check(_libc.unshare(flags) == 0, "cannot create the sandbox's namespaces")
        os.write(w, b"u")
    finally:
        os.close(w)
        _, status = os.waitpid(helper, 0)
    if status != 0:
        raise JailError("cannot map the sandbox's user id into its namespace")


def _with_top(paths: list[str]) -> list[str]:
    top = [f"/{name}" for name in _TOP if not os.path.islink(f"/{name}")]
    top = [path for path in top if os.path.isdir(path)]
    return [*paths, *top, *(f"/dev/{name}" for name in _DEVICES)]


def _build(stage: str, sources: dict[str, int]) -> None:
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing propagates back to the host
    # The skeleton: a small tmpfs, read-only once built.
    _mount("stop-jail", stage, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    root = stage.rstrip("/")
    # The writable folders come first, so that a view path inside one (a virtual
    # environment in /tmp) is bound over them, not hidden by them.
    for path in (*SCRATCH, _SCRATCH_MOUNT):
        _makedirs(f"{root}{path}")
    _mount_scratch(root)
    for name in _TOP:
        if os.path.islink(f"/{name}"):
            os.symlink(os.readlink(f"/{name}"), f"{root}/{name}")
    for path, fd in sources.items():
        folder = stat.S_ISDIR(os.fstat(fd).st_mode)
        _bind(fd, f"{root}{path}", folder, device=path.startswith("/dev/"))
    # What a worker's fresh scratch would hide, and so binds again (see fresh_scratch).
    _in_scratch[:] = [p for p in sources if any(p.startswith(f"{s}/") for s in SCRATCH)]
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        os.symlink(f"/proc/self/fd/{fd}", f"{root}/dev/{name}")
    os.symlink("/proc/self/fd", f"{root}/dev/fd")
    _makedirs(f"{root}/proc")
    _mount("proc", f"{root}/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _makedirs(f"{root}/etc")
    with open(f"{root}/etc/passwd", "w") as f:
        f.write(f"sandbox:x:{SANDBOX_ID}:{SANDBOX_ID}:stop sandbox:{HOME}:/bin/sh\n")
    with open(f"{root}/etc/group", "w") as f:
        f.write(f"sandbox:x:{SANDBOX_ID}:\n")
    os.chdir(root)
    _check(_libc.syscall(_SYS_PIVOT_ROOT, b".", b".") == 0, "cannot switch to the jail's root")
    _check(_libc.umount2(b".", _MNT_DETACH) == 0, "cannot let go of the host's root")
    os.chdir("/")
    _mount(None, "/", None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    # No user namespaces below this one: in one, the sandbox could mount a tmpfs of its own
    # with no size limit.
    _write("/proc/sys/user/max_user_namespaces", "0")
    # No process of the jail may ptrace the init (nor its forks each other), where the
    # harness that times candidates runs. (A process may always read its own
    # /proc/self/fd, through which the sources were bound.)
    _libc.prctl(_PR_SET_DUMPABLE, 0)


_SCRATCH_MOUNT = "/run/.scratch"  # where a new scratch tmpfs is mounted, then detached


def _mount_scratch(root: str) -> None:
    """One tmpfs of SCRATCH_MB, its folders bound onto the SCRATCH folders under `root`,
    then detached from where it was mounted, so that only those folders remain of it."""
    scratch = f"{root}{_SCRATCH_MOUNT}"
    _mount("stop-scratch", scratch, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={SCRATCH_MB}m")
    for path in SCRATCH:
        folder = f"{scratch}/{path.strip('/').replace('/', '-')}"
        os.mkdir(folder)
        os.chmod(folder, 0o700 if path in (WORKDIR, HOME) else 0o1777)  # past the umask
        _mount(folder, f"{root}{path}", None, _MS_BIND)
    _check(_libc.umount2(os.fsencode(scratch), _MNT_DETACH) == 0, "cannot detach the scratch")


_in_scratch: list[str] = []  # view paths inside a scratch folder (a venv in /tmp)


def fresh_scratch() -> None:
    """In a worker, before the candidate: private folders of its own, empty, in mount
    and IPC namespaces of its own, so that nothing an earlier call left is there."""
    _check(_libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC) == 0, "cannot renew the scratch")
    kept = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in _in_scratch}
    _mount_scratch("")
    for path, fd in kept.items():
        _bind(fd, path, stat.S_ISDIR(os.fstat(fd).st_mode), device=False)
        os.close(fd)
    os.chdir(WORKDIR)  # the old one is still where this process stood


def _makedirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind(fd: int, target: str, folder: bool, device: bool) -> None:
    """Bind what `fd` opened read-only at `target` (a device: read-write, but no exec)."""
    if folder:
        _makedirs(target)
    else:
        _makedirs(os.path.dirname(target))
        open(target, "a").close()
    _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND)
    # A remount may add flags, never drop the ones the source mount has locked.
    flags = _MS_BIND | _MS_REMOUNT | _MS_NOSUID | _locked(fd)
    flags |= _MS_NOEXEC if device else _MS_RDONLY | _MS_NODEV
    _mount(None, target, None, flags)


def _locked(fd: int) -> int:
    """The mount flags of what `fd` opened that a remount in a user namespace must keep."""
    have = os.fstatvfs(fd).f_flag
    flags = 0
    for st, ms in (
        (os.ST_NOEXEC, _MS_NOEXEC),
        (os.ST_NOATIME, _MS_NOATIME),
        (os.ST_NODIRATIME, _MS_NODIRATIME),
        (os.ST_RELATIME, _MS_RELATIME),
    ):
        if have & st:
            flags |= ms
    return flags


# ---- closing it --------------------------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def no_new_privs() -> None:
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "cannot set no_new_privs")


def lock() -> None:
    """Just before untrusted code runs (an improver in the init, a candidate in its
    worker): no capabilities and no way to gain any."""
    no_new_privs()
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(_CAP_LAST + 1):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    ok = _libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)) == 0
    _check(ok, "cannot drop the sandbox's capabilities")


# Set by the CLI's --weak-sandbox: where no jail can be built, run sandboxes without one.
weak_allowed = False
inside = False  # True in a jail's init and its workers
Sandbox = Literal["jail", "weak"]  # as a run records it


def sandbox_kind() -> Sandbox:
    """What runs untrusted code here; raises JailError where that would be nothing."""
    return "weak" if weak() else "jail"


def weak() -> bool:
    """Whether sandboxes run without a jail: only where none can be built, and only when
    the user said so. Raises JailError otherwise, saying why none can be built."""
    why = unavailable()
    if why is None:
        return False
    if weak_allowed:
        return True
    raise JailError(
        f"cannot build the sandbox's jail here ({why}); stop does not run untrusted code "
        "without it. --weak-sandbox runs it anyway, with limits and namespaces where "
        "they can be had, but able to read your files"
    )


@functools.cache
def unavailable() -> str | None:
    """None if a jail can be built here, else why not (one line). Forks a probe once."""
    stage = tempfile.mkdtemp(prefix="stop-jail-probe-")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the probe: build a jail, report, and end
        why = b""
        try:
            os.close(r)
            if enter(stage, 200_000 if os.geteuid() == 0 else None, view())[0]:
                lock()
                os._exit(0)  # the init built its root and locked itself in: success
            _, status = os.waitpid(-1, 0)
            if status != 0:
                why = b"the jail's init could not build its root"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            why = str(exc).encode()[:500]
        finally:
            os.write(w, why)
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reason = f.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    os.rmdir(stage)
    return reason or None
