"""The runner's side of :mod:`harness.zygote`: start warm servers, run one cell in each child.

One server per distinct cell environment (a task's ``env`` must be in place when the
interpreter starts). :meth:`Spawner.run` is thread-safe and blocks until the cell's process
ended, was killed at its timeout, or the server died; it returns what the process left: its
exit status, the signal that ended it, its peak RSS, whether the kernel's OOM killer fired
meanwhile, and the tail of its output as bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRATCH_PREFIX = "archbench-run-"
START_TIMEOUT_S = 300.0  # importing torch on a busy machine, with room to spare
LOG_TAIL = 8000  # bytes of a cell's output kept for its error text


@dataclass
class Exit:
    """How a cell process ended."""

    returncode: int | None  # exit code, None when a signal ended it
    signal: str | None  # e.g. "SIGKILL"
    timed_out: bool
    maxrss_kib: int | None
    oom_killed: bool  # the kernel's oom_kill counter rose while the cell ran
    log_tail: str  # its stdout and stderr, decoded with replacement
    outcome: bytes | None  # what the cell wrote as its outcome, None when it wrote nothing
    server_error: str | None = None  # the server died or never started


def oom_kills() -> int | None:
    """The kernel's count of OOM kills since boot (/proc/vmstat ``oom_kill``, Linux >= 4.13)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def read_tail(path: Path, limit: int = LOG_TAIL) -> str:
    """The last ``limit`` bytes of a file, decoded as UTF-8 with replacement: a cell's output is
    untrusted and may be any bytes."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").replace("\x00", "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_scratch(base: str | None = None) -> list[str]:
    """Remove scratch folders whose runner is dead (a SIGKILLed runner cannot clean up);
    returns those runs' ids, so they can be closed as abandoned at once."""
    base = base or tempfile.gettempdir()
    dead: list[str] = []
    for folder in Path(base).glob(SCRATCH_PREFIX + "*"):
        try:
            pid = int((folder / "runner.pid").read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and _pid_alive(pid):
            continue
        if not pid and time.time() - folder.stat().st_mtime < 60:
            continue  # just created by a runner that has not written its pid yet
        shutil.rmtree(folder, ignore_errors=True)
        run_id = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if run_id:
            dead.append(run_id)
    return dead


class _Server:
    def __init__(self, env: dict[str, str], plugins: tuple[str, ...], scratch: Path) -> None:
        self.lock = threading.Lock()
        self.waiters: dict[str, queue.Queue[dict[str, Any]]] = {}
        self.error: str | None = None
        self.ready = threading.Event()
        self.log = open(scratch / "server.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.zygote", *plugins],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            env={**env, "ARCHBENCH_RUNNER_PID": str(os.getpid())},
            start_new_session=True,  # a Ctrl-C at the terminal reaches the runner, not the cells
        )
        self.reader = threading.Thread(target=self._read, daemon=True, name="archbench-zygote")
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("ready"):
                self.ready.set()
                continue
            with self.lock:
                waiter = self.waiters.get(msg.get("id", ""))
            if waiter is not None:
                waiter.put(msg)
        code = self.proc.wait()
        with self.lock:
            self.error = f"the cell server exited with {code}"
            waiters = list(self.waiters.values())
        self.ready.set()
        for waiter in waiters:
            waiter.put({"server_error": self.error})

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and self.error is None

    def submit(self, request: dict[str, Any]) -> queue.Queue[dict[str, Any]]:
        waiter: queue.Queue[dict[str, Any]] = queue.Queue()
        with self.lock:
            if self.error:
                waiter.put({"server_error": self.error})
                return waiter
            self.waiters[request["id"]] = waiter
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                waiter.put({"server_error": "the cell server is gone"})
        return waiter

    def forget(self, ident: str) -> None:
        with self.lock:
            self.waiters.pop(ident, None)

    def close(self) -> None:
        if not self.ready.is_set():  # still importing, so no children: no need to wait
            self.proc.kill()
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # end of input: the server kills its children and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Spawner:
    """Warm cell servers for one run; use as a context manager."""

    def __init__(self, plugins: tuple[str, ...] = (), run_id: str = "") -> None:
        """``run_id``: the run these cells belong to (a new one when empty); it names the
        scratch folder, by which a dead runner's run is found (:func:`sweep_scratch`)."""
        import uuid

        self.plugins, self.run_id = plugins, run_id or uuid.uuid4().hex[:16]
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{self.run_id}-"))
        (self.scratch / "runner.pid").write_text(str(os.getpid()))
        self.servers: dict[tuple[tuple[str, str], ...], _Server] = {}
        self.lock = threading.Lock()
        self.counter = 0

    def __enter__(self) -> Spawner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def warm(self, start_env: dict[str, str] | None = None) -> None:
        """Start the server for ``start_env`` now, so it imports torch while the runner does
        other work."""
        self._server(start_env or {})

    def _server(self, start_env: dict[str, str]) -> _Server:
        """The server whose interpreter started with ``start_env`` on top of this process's
        environment: what must be in place at start-up (e.g. malloc settings) differs by task;
        everything else (threads, paths) is set in each child."""
        key = tuple(sorted(start_env.items()))
        with self.lock:
            server = self.servers.get(key)
            if server is None or not server.alive:
                if server is not None:
                    server.close()
                server = self.servers[key] = _Server({**os.environ, **start_env}, self.plugins,
                                                     self.scratch)
            return server

    def run(self, spec: dict[str, Any], env: dict[str, str], timeout_s: float,
            memory_limit: int | None = None, start_env: dict[str, str] | None = None) -> Exit:
        """Run one cell: ``env`` is the child's whole environment, ``start_env`` what its
        server's interpreter must have started with (``Task.env``)."""
        with self.lock:
            self.counter += 1
            ident = f"c{self.counter}"
        folder = self.scratch / ident
        folder.mkdir()
        try:
            return self._run(ident, folder, spec, env, timeout_s, memory_limit, start_env or {})
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _run(self, ident: str, folder: Path, spec: dict[str, Any], env: dict[str, str],
             timeout_s: float, memory_limit: int | None, start_env: dict[str, str]) -> Exit:
        spec_path, out, log = folder / "spec.json", folder / "out.json", folder / "log"
        spec_path.write_text(json.dumps(spec))
        server = self._server(start_env)
        if not server.ready.wait(START_TIMEOUT_S) or server.error:
            return Exit(None, None, False, None, False, read_tail(self.scratch / "server.log"),
                        None, server_error=server.error or "the cell server did not start")
        before = oom_kills()
        waiter = server.submit({"id": ident, "spec": str(spec_path), "out": str(out),
                                "log": str(log), "env": env, "memory_limit": memory_limit})
        try:
            started = waiter.get(timeout=START_TIMEOUT_S)
            if "server_error" in started:
                return Exit(None, None, False, None, False, read_tail(log), None,
                            server_error=started["server_error"])
            pid = started["pid"]
            timed_out = False
            try:
                ended = waiter.get(timeout=timeout_s)
            except queue.Empty:
                timed_out = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                ended = waiter.get(timeout=60)
            except BaseException:  # interrupted: the cell's whole group goes with the run
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                raise
        except queue.Empty:
            return Exit(None, None, False, None, False, read_tail(log), None,
                        server_error="the cell server stopped answering")
        finally:
            server.forget(ident)
        if "server_error" in ended:
            return Exit(None, None, timed_out, None, False, read_tail(log), None,
                        server_error=ended["server_error"])
        status = ended["status"]
        after = oom_kills()
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return Exit(
            returncode=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            signal=signal.Signals(sig).name if sig else None,
            timed_out=timed_out, maxrss_kib=ended.get("maxrss_kib"),
            oom_killed=before is not None and after is not None and after > before,
            log_tail=read_tail(log), outcome=out.read_bytes() if out.is_file() else None,
        )

    def close(self) -> None:
        with self.lock:
            servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            server.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
