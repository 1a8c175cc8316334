"""Child processes and everything they start.

- The command line and the benchmarks start processes in a process group of their own (the
  backend in the demo, a GUI): :func:`wait_for_log_line` waits until one says it is ready,
  :func:`stop_process_group` stops one with its children.
- Nothing a context-file worker (or a Slurm job) starts outlives it, even a process detached
  with ``setsid`` (a double fork) when the worker is killed or crashes:
  :func:`keep_descendants` makes the worker's parent a *keeper* (a child subreaper) that kills
  what is left when the worker ends, and the backend puts each worker in a cgroup of its own
  (:class:`Cgroup`) where this user may create one (cgroup v2: as root, or a delegated
  subtree). :func:`descendants` and :func:`kill_descendants` walk and clear a process's tree.

Pure standard library (the keeper runs in the context file's Python); Linux (``/proc``,
``prctl``) for the process-tree parts, which do nothing elsewhere.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def wait_for_log_line(log_path: str | os.PathLike, proc: subprocess.Popen, marker: bytes = b" Ready",
                      timeout: float = 120.0) -> bool:
    """Wait until ``marker`` appears in ``log_path`` after its current end (the backend writes
    ``... Ready`` into ``amore.log`` once its sources listen). Returns False if ``proc`` exits
    first or ``timeout`` seconds pass."""
    log_path = Path(log_path)
    deadline = time.monotonic() + timeout
    start = log_path.stat().st_size if log_path.exists() else 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if log_path.exists():
            with open(log_path, "rb") as f:
                f.seek(start)
                if marker in f.read():
                    return True
        time.sleep(0.2)
    return False


def stop_process_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL it
    after ``grace`` seconds, and reap ``proc``. Nothing happens if it has exited already."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# --- Nothing a process starts outlives it ------------------------------------------------------

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

#: Environment variable with the cgroup (v2 directory) a kept program joins, see
#: :func:`keep_descendants` and :meth:`Cgroup.create`.
CGROUP_ENV = "AMORE_CGROUP"


def prctl(option: int, arg: int) -> bool:
    """Linux ``prctl(option, arg)``; False where it is not available or fails."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_of(pid: int) -> list[int] | None:
    """Living and zombie children of ``pid`` from ``/proc/PID/task/*/children`` (one read per
    thread: consistent even while processes come and go); [] if ``pid`` is gone, None where
    the kernel has no such file."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    except OSError:
        return None
    out: list[int] = []
    for tid in tasks:
        try:
            fd = os.open(f"/proc/{pid}/task/{tid}/children", os.O_RDONLY)
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}/stat"):
                continue  # the thread ended meanwhile
            return None   # a kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
        try:
            out += map(int, os.read(fd, 1 << 20).split())
        except OSError:
            pass
        finally:
            os.close(fd)
    return out


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # gone
    return stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X")


def _descendants_by_scan(root: int) -> list[int]:
    """As :func:`descendants`, from every process's ``/proc/PID/stat`` (slower: reads them all)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..."; comm may contain spaces and parentheses
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and fields[0] not in (b"Z", b"X"):
            children.setdefault(int(fields[1]), []).append(int(e))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def descendants(root: int) -> list[int]:
    """PIDs of every living (not zombie) descendant of process ``root``: its children, theirs,
    and so on ([] where there is no ``/proc``). Walks down from ``root`` (``/proc/PID/task/
    TID/children``, Linux >= 3.5): a few milliseconds however many other processes run;
    reads every process's ``/proc/PID/stat`` where the kernel lacks those files."""
    out: list[int] = []
    todo = [root]
    while todo:
        kids = _children_of(todo.pop())
        if kids is None:
            return _descendants_by_scan(root)
        for c in kids:
            if not _is_zombie(c):  # (a zombie's children went to a subreaper or init)
                out.append(c)
                todo.append(c)
    return out


def _reap_children() -> list[tuple[int, int]]:
    """Reap every child of this process that has ended: ``[(pid, wait status)]``."""
    out = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status))


def kill_descendants(keep: set[int] | frozenset = frozenset(), timeout: float = 5.0) -> int:
    """SIGKILL every living descendant of this process except the PIDs in ``keep`` (those
    processes only: what they start is not kept), and reap the children that ended, again
    until none is left (as a child subreaper this process inherits the orphans of those
    killed) or ``timeout`` seconds passed. Returns how many processes were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in descendants(os.getpid()) if p not in keep]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        _reap_children()
        if not left or time.monotonic() > deadline:
            return len(killed)
        time.sleep(0.002)


class Cgroup:
    """A cgroup (v2) of its own for a process and everything it starts: its processes can be
    killed at once (``cgroup.kill``), however they detached. Only where this user may create
    one below its own cgroup: root, or a subtree delegated to the user (systemd
    ``Delegate=yes``); not on a typical HPC login node, where :func:`keep_descendants` does the
    job alone."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @staticmethod
    def own_dir() -> Path | None:
        """This process's cgroup v2 directory (``/proc/self/cgroup`` below the ``cgroup2``
        mount of ``/proc/self/mountinfo``), None without cgroup v2."""
        try:
            with open("/proc/self/cgroup") as f:
                rel = next((line[3:].strip() for line in f if line.startswith("0::")), None)
            if rel is None:
                return None
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    pre, _, post = line.partition(" - ")
                    if post.split()[:1] != ["cgroup2"]:
                        continue
                    fields = pre.split()
                    root = fields[3]
                    mount = fields[4].replace("\\040", " ")
                    if root == "/":
                        return Path(mount) / rel.lstrip("/")
                    if rel == root or rel.startswith(root + "/"):
                        return Path(mount) / rel[len(root):].lstrip("/")
        except (OSError, IndexError):
            pass
        return None

    @classmethod
    def create(cls, name: str) -> "Cgroup | None":
        """A new cgroup ``name`` below this process's own, or None where this user may not make
        one (no cgroup v2, not delegated, read-only)."""
        own = cls.own_dir()
        if own is None or not os.access(own / "cgroup.procs", os.W_OK):
            return None
        try:
            (own / name).mkdir()
        except OSError:
            return None
        return cls(own / name)

    def join(self, pid: int | None = None) -> None:
        """Move process ``pid`` (default: this one) into the cgroup; its future children are
        born in it. Raises ``OSError`` if the kernel refuses."""
        with open(self.path / "cgroup.procs", "w") as f:
            f.write(str(pid or os.getpid()))

    def pids(self) -> list[int]:
        """The processes in the cgroup ([] once it is removed)."""
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup: at once with ``cgroup.kill`` (Linux >= 5.14),
        else one by one until none is left or ``timeout`` seconds passed. True if done."""
        try:
            (self.path / "cgroup.kill").write_text("1")
            return True
        except FileNotFoundError:
            if not self.path.exists():
                return True
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def remove(self, timeout: float = 2.0) -> bool:
        """Remove the (empty) cgroup, waiting up to ``timeout`` seconds for processes that are
        ending to leave it. True if it is gone."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)


def _end_like(status: int) -> None:
    """End this process as a process with wait status ``status`` ended: the same exit code, or
    killed by the same signal (without a core dump of its own)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        prctl(PR_SET_DUMPABLE, 0)  # no core dump: the crash was the program's, not ours
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL, SIGSTOP
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default is not to end the process
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


#: Seconds between the keeper's checks that its own parent still lives.
KEEPER_POLL = 0.5


def keep_descendants(what: str = "process") -> None:
    """Make sure nothing this process starts outlives it, however it ends (Linux).

    Forks: the child returns from this call and goes on as the program; this process stays
    behind as its *keeper* and never returns. The keeper is the program's child subreaper
    (``PR_SET_CHILD_SUBREAPER``), so everything the program starts stays its descendant, even
    a process detached with ``setsid`` (a double fork). When the program ends (exit, crash,
    SIGKILL, out of memory) the keeper kills what is left of its descendants and reaps them,
    says on stderr how many there were (naming the program ``what``), and ends the way the
    program did: the same exit status, or killed by the same signal. The keeper also ends the
    program and everything it started when it gets SIGTERM, SIGINT or SIGHUP (the backend's
    kill, Slurm's cancel) or when its own parent goes away (checked every
    :data:`KEEPER_POLL` seconds).

    The program is a child subreaper too (what its processes leave behind stays its
    descendant, for :func:`kill_descendants`), and a thread of it watches the keeper: should
    the keeper be killed, the program kills its descendants and exits (status 3) within a
    second. Where the platform has no child subreapers there is no keeper: the thread then
    watches the process that started the program.

    If ``$AMORE_CGROUP`` names a cgroup (made by the parent, see :meth:`Cgroup.create`), the
    program joins it before anything else and the keeper kills the cgroup (``cgroup.kill``:
    nothing escapes, not even a process forking at that moment) and removes it.

    The keeper holds none of the program's standard input and output (they are ``/dev/null``
    in the keeper, so a pipe to the program ends when the program does); it shares stderr."""
    if not hasattr(os, "fork") or not prctl(PR_SET_CHILD_SUBREAPER, 1):
        _exit_with_parent()
        return
    cgroup = Cgroup(os.environ.pop(CGROUP_ENV)) if os.environ.get(CGROUP_ENV) else None
    watched = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, watched)  # none is lost until we wait
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        _exit_with_parent()
        return
    if pid == 0:  # the program
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # (not inherited)
        if cgroup is not None:
            try:
                cgroup.join()
            except OSError as e:
                print(f"AMORE: could not join the cgroup {cgroup.path} ({e}); processes left "
                      f"behind are still killed when the {what} ends", file=sys.stderr)
        _exit_with_parent()
        return
    try:
        _keep(pid, cgroup, what, watched)
    except BaseException:  # never leave the program and its processes without a keeper
        try:
            os.kill(pid, signal.SIGKILL)
            kill_descendants()
        finally:
            os._exit(1)


def _exit_with_parent() -> None:
    """Start a daemon thread that, once this process's parent is gone (its keeper killed, or
    the backend that started it), kills this process's descendants and exits (status 3)."""
    import threading
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                kill_descendants()
                os._exit(3)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _keep(pid: int, cgroup: Cgroup | None, what: str, watched: set) -> None:
    """The keeper's life (see :func:`keep_descendants`); ends this process."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    parent = os.getppid()
    status = None
    while status is None:
        info = signal.sigtimedwait(watched, KEEPER_POLL)
        if (info is not None and info.si_signo != signal.SIGCHLD) or os.getppid() != parent:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for child, st in _reap_children():
            if child == pid:
                status = st
    left = descendants(os.getpid())
    if cgroup is not None:
        cgroup.kill()
    kill_descendants()
    if cgroup is not None:
        cgroup.remove()
    if left:
        try:
            print(f"AMORE: killed {len(left)} process(es) the {what} (PID {pid}) left behind "
                  f"when it ended", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass  # nobody reads stderr any more
    _end_like(status)
