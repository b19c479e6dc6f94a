"""The recurrax JIT benchmark harness: recurrax beside its peers, in one process, on the same shapes.

Run from the repository root::

    python -m benchmarks --suite cpu            # the default CPU matrix (~265 measurements)
    python -m benchmarks --suite cpu --cells lstm --cases b32-t128-i256-h256 --repeats 5
    python -m benchmarks --list                 # suites, cells, sizes, implementations

Modules: :mod:`~benchmarks.cases` (what is measured), :mod:`~benchmarks.peers` (the implementations),
:mod:`~benchmarks.timing` (how), :mod:`~benchmarks.environment` (where), :mod:`~benchmarks.report`
(JSON, Markdown, plot) and :mod:`~benchmarks.runner` (the loop with its progress display).
"""
