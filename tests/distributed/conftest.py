"""Fixtures that run the multi-device child scripts once per session (see _multidevice.py)."""

from __future__ import annotations

import pytest
from _multidevice import run_checks


@pytest.fixture(scope="session")
def eight_devices(tmp_path_factory):
    """The outcomes of _child_sharded.py's checks on 8 CPU devices, and the checkpoint it saved there."""
    checkpoint = tmp_path_factory.mktemp("sharded") / "params"
    return run_checks("_child_sharded.py", str(checkpoint), devices=8), checkpoint
