"""Shared test settings: a hypothesis profile sized for compile-heavy examples, and the ``example`` fixture."""

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Each example traces and compiles a scan, so examples are few and untimed; derandomized so CI is repeatable.
settings.register_profile(
    "recurrax",
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("recurrax")


@pytest.fixture
def example(monkeypatch):
    """``example(name)``: the module ``examples/<name>.py``, imported by path for this test only."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # Flax modules are dataclasses: they look it up
        spec.loader.exec_module(module)
        return module

    return load
