"""A warm process that forks one isolated child per cell: torch is imported once, not per cell.

Why not ``multiprocessing``'s forkserver: a cell must run in its own process *group* (so a
helper it spawns dies with it), the whole group must die when the runner dies, its exit must
be reported with the signal that ended it and its peak memory, and cells whose task asks for
a different environment at interpreter start (``Task.env``, e.g. malloc settings read once
by glibc) need a server started with that environment. This module does those four things in
~150 lines with ``os.fork``; the forkserver offers none of them.

Protocol (one JSON object per line): the runner writes ``{"id", "spec", "out", "log", "env",
"memory_limit"}`` to the server's stdin; the server answers ``{"id", "pid"}`` when the child
started and ``{"id", "pid", "status", "maxrss_kib"}`` when it ended (``status`` as
``os.waitpid`` gives it). End of input (or SIGTERM, sent when the runner dies) means the runner
is gone: every child's process group is killed and the server exits.

Each child: a new session (its own process group), SIGKILL when the server dies
(``PR_SET_PDEATHSIG``, then the parent checked, closing the race where the parent died
first), stdin from /dev/null, stdout and stderr into the cell's log file (read back by the
runner as bytes, decoded with replacement), the cell's environment, an address-space cap
(``RLIMIT_AS``) when one is given, then :func:`harness.cell.main`.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import sys
import traceback
from typing import Any

from tasks.instruments.procs import die_with_parent

POLL_S = 0.01  # how often a child's exit is looked for while no request arrives
PRELOAD = ("torch", "numpy", "architectures", "tasks", "harness.cell", "tasks.instruments.context",
           "tasks.instruments.timing", "tasks.instruments.stats", "tasks.instruments.memory",
           "tasks.instruments.contention")


def _send(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _child(req: dict[str, Any], server: int) -> None:
    """In the forked child: isolate, redirect, cap, run the cell; never returns."""
    code = 1
    try:
        os.setsid()
        die_with_parent(server)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.clear()
        os.environ.update(req["env"])
        if req.get("memory_limit"):
            limit = int(req["memory_limit"])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        from harness import cell  # lazy: preloaded by _serve, which reports a failing import

        code = cell.main([req["spec"], req["out"]])
    except BaseException:  # noqa: BLE001 - the child reports through its exit code and log
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap(children: dict[int, str]) -> None:
    while children:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ident = children.pop(pid, None)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # helpers the cell left behind in its group
        if ident is not None:
            _send({"id": ident, "pid": pid, "status": status, "maxrss_kib": usage.ru_maxrss})


def _shutdown(children: dict[int, str]) -> None:
    """Kill every child's process group and reap them. The scratch folder stays: a runner that
    died is found by it (the next runner removes it and closes that run as abandoned)."""
    for pid in list(children):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


class _Stop(Exception):
    pass


def _stop(signum: int, frame: Any) -> None:
    raise _Stop


def serve(plugins: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when cells stop
    children: dict[int, str] = {}
    try:
        _serve(plugins, children)
    except _Stop:
        pass
    _shutdown(children)


def _serve(plugins: list[str], children: dict[int, str]) -> None:
    import importlib

    failed: list[str] = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a cell that needs it reports the error
            failed.append(f"{name}: {type(err).__name__}: {err}")
    try:
        from harness import plugins as plugin_loader  # lazy: a failure is reported, not fatal

        plugin_loader.load_entry_points()
        for path in plugins:
            plugin_loader.load(path)
    except Exception as err:  # noqa: BLE001 - every cell will meet it; say so once
        failed.append(f"plugins: {type(err).__name__}: {err}")
    _send({"ready": True, "pid": os.getpid(), "preload_errors": failed})
    stdin = sys.stdin.buffer
    buf = b""
    me = os.getpid()
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:  # the runner is gone
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(req, me)
                children[pid] = req["id"]
                _send({"id": req["id"], "pid": pid})
        _reap(children)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    parent = int(os.environ.get("ARCHBENCH_RUNNER_PID", "0"))
    signal.signal(signal.SIGTERM, _stop)
    if parent:  # backstop for end of stdin: SIGTERM, so the children's groups are killed
        die_with_parent(parent, signal.SIGTERM)
    serve(list(args))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (torch's takes ~0.5 s); the children are reaped


if __name__ == "__main__":
    raise SystemExit(main())
