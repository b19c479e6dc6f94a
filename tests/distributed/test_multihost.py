"""Two JAX processes on this machine (loopback coordinator, 2 CPU devices each) train one data-parallel step.

Each process sees its 2 local devices and the 4 global ones, feeds half the batch, and gets the
gradients all-reduced across processes; both must equal the one-device step on the whole batch and
each other. Bodies in _child_multihost.py. The processes are always killed at the end.
"""

from __future__ import annotations

import json

from _multidevice import MARKER, finish, kill

TIMEOUT = 300  # both processes start with the session's other children (conftest.py)


def test_two_processes_agree_on_a_data_parallel_step(children):
    procs = children["procs"]["multihost"]
    try:
        outcomes = [finish(proc, TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            kill(proc)
    losses = []
    for pid, (code, out, err) in enumerate(outcomes):
        lines = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith("@@"))
        assert code == 0 and MARKER.strip() in lines, f"process {pid} exited with {code}:\n{out[-2000:]}\n{err[-4000:]}"
        for name, outcome in json.loads(lines[MARKER.strip()]).items():
            assert outcome == "ok", f"process {pid}, {name}:\n{outcome}"
        losses.append(json.loads(lines["@@values@@"])["loss"])
    assert losses[0] == losses[1] > 0
