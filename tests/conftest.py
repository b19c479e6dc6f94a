"""Shared test settings: a hypothesis profile sized for compile-heavy examples."""

from hypothesis import HealthCheck, settings

# Each example traces and compiles a scan, so examples are few and untimed; derandomized so CI is repeatable.
settings.register_profile(
    "recurrax",
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("recurrax")
