"""Fixtures that run the multi-device child scripts once per session (see _multidevice.py).

The children that do not depend on each other start together, at the first test that needs any of
them, so their JAX start-ups and compilations overlap; every child is killed at the end of the session.
"""

from __future__ import annotations

import pytest
from _multidevice import HERE, collect, free_port, kill, start


@pytest.fixture(scope="session")
def children(tmp_path_factory):
    """Started children: the 8-device checks, the two processes of the multi-host run, the killed save."""
    checkpoint = tmp_path_factory.mktemp("sharded") / "params"
    killed_save = tmp_path_factory.mktemp("killed_save")
    port = str(free_port())
    procs = {
        "sharded": start("_child_sharded.py", str(checkpoint), devices=8),
        "multihost": [start("_child_multihost.py", str(pid), port, devices=2) for pid in (0, 1)],
        "killed_save": start("_child_interrupted_save.py", str(killed_save), devices=None),
    }
    yield {"procs": procs, "checkpoint": checkpoint, "killed_save": killed_save}
    for proc in (procs["sharded"], *procs["multihost"], procs["killed_save"]):
        kill(proc)


@pytest.fixture(scope="session")
def eight_devices(children):
    """The outcomes of _child_sharded.py's checks on 8 CPU devices, and the checkpoint it saved there."""
    return collect(children["procs"]["sharded"], timeout=300), children["checkpoint"]


@pytest.fixture(scope="session", autouse=True)
def _start_children_early(request):
    # Started at the first test of this folder, the children run while the one-process tests do.
    if any("children" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("children")


def pytest_collection_modifyitems(session, config, items):
    """Within this folder's tests, those that wait for a child run last (their slots among all items kept)."""
    here = [i for i, item in enumerate(items) if item.path.parent == HERE]
    mine = sorted((items[i] for i in here), key=lambda item: "children" in item.fixturenames)
    for i, item in zip(here, mine):
        items[i] = item
        # Under pytest-xdist, every test of this folder runs on one worker, so the session's children start once.
        item.add_marker(pytest.mark.xdist_group("distributed"))
