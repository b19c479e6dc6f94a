"""Running test code on several (forced) CPU devices, or in several processes, from a pytest run.

The pytest process has initialised JAX with one CPU device, and ``XLA_FLAGS`` only counts before JAX
is imported, so code that needs 8 devices runs in a child Python started with the flag set. A child
script registers named checks with :func:`check` and calls :func:`main`; the parent runs it once
(:func:`run_checks`) and turns each check's outcome into its own pytest test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARKER = "@@checks@@ "
_CHECKS: dict[str, Callable[[], object]] = {}


def child_env(devices: int | None) -> dict[str, str]:
    """The environment of a child: CPU only, ``devices`` forced host devices, imports from ``src`` and here."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE), env.get("PYTHONPATH", "")])
    return env


def start(script: str, *args: str, devices: int | None) -> subprocess.Popen:
    """Starts ``python script args...`` (``script`` in this folder) with ``devices`` CPU devices."""
    return subprocess.Popen(
        [sys.executable, str(HERE / script), *args],
        env=child_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a timeout kills it and anything it started
    )


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Waits for ``proc`` at most ``timeout`` seconds, killing its process group past that (or on any error)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill(proc)
        out, err = proc.communicate()
        err += f"\n[killed after {timeout} s]"
    return proc.returncode, out, err


def kill(proc: subprocess.Popen) -> None:
    """Kills ``proc``'s process group (only the group this module started)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(proc.pid, signal.SIGKILL)


def run_checks(script: str, *args: str, devices: int | None, timeout: float = 180) -> dict[str, str]:
    """Runs a check script in a child and returns ``{check name: "ok" or its traceback}``."""
    return collect(start(script, *args, devices=devices), timeout)


def collect(proc: subprocess.Popen, timeout: float = 180) -> dict[str, str]:
    """Waits for a started check script and returns its outcomes (see :func:`run_checks`)."""
    code, out, err = finish(proc, timeout)
    lines = [line for line in out.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise RuntimeError(
            f"{proc.args[1]} exited with {code} before reporting its checks:\n{out[-3000:]}\n{err[-6000:]}"
        )
    return json.loads(lines[-1][len(MARKER) :])


def assert_ok(results: dict[str, str], name: str) -> None:
    """Fails the calling test with the child's traceback unless the check ``name`` passed."""
    if name not in results:
        raise AssertionError(f"the child did not run the check {name!r}; it ran {sorted(results)}")
    if results[name] != "ok":
        raise AssertionError(f"{name} failed in the child process:\n{results[name]}")


def check(fn: Callable[[], object]) -> Callable[[], object]:
    """Registers ``fn`` as a named check of this child script."""
    _CHECKS[fn.__name__] = fn
    return fn


def main(names: Sequence[str] | None = None) -> None:
    """Runs the registered checks (all, or ``names``) and prints their outcomes as one JSON line."""
    results = {}
    for name, fn in _CHECKS.items():
        if names and name not in names:
            continue
        start = time.perf_counter()
        try:
            fn()
            results[name] = "ok"
        except BaseException:
            results[name] = traceback.format_exc()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    print(MARKER + json.dumps(results), flush=True)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
