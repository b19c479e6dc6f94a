"""Compiles the native CPU kernels on first use, caches the shared library, registers its FFI targets.

The kernel source ships with the package (``recurrences_cpu.cc``) and is built by the system C++
compiler (``$CXX``, else ``c++``) with ``-O3 -march=native`` and ``$CXXFLAGS`` against the XLA FFI
headers of the installed jaxlib, into ``$RECURRAX_CACHE_DIR`` (default ``~/.cache/recurrax``). The file
name hashes the source, the jaxlib version, the compiler, the flags and the CPU's feature flags, so a
different machine, compiler or jaxlib never loads a stale build. Where no compiler is found or the
build fails, :func:`load` warns once and returns ``None``, and recurrax runs the XLA loop instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from importlib import metadata, resources
from pathlib import Path

import jax

SOURCE = "recurrences_cpu.cc"
TARGETS = {
    "recurrax_lstm_forward": "RecurraxLstmForward",
    "recurrax_lstm_backward": "RecurraxLstmBackward",
    "recurrax_gru_forward": "RecurraxGruForward",
    "recurrax_gru_backward": "RecurraxGruBackward",
}
"""FFI target name -> symbol in the library."""


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$RECURRAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/recurrax`` (``~/.cache``)."""
    if env := os.environ.get("RECURRAX_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recurrax"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++"))


def _cpu_features() -> str:
    """The CPU's feature flags (``-march=native`` depends on them), or the processor name where unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flags() -> list[str]:
    """``-O3 -march=native``, then ``$CXXFLAGS`` (for example ``-mno-avx512f`` for the 8-wide AVX2 kernels)."""
    return ["-O3", "-march=native", "-std=c++17", *shlex.split(os.environ.get("CXXFLAGS", ""))]


def _command(cxx: str, source: Path, output: Path) -> list[str]:
    include = jax.ffi.include_dir()
    return [cxx, *_flags(), "-shared", "-fPIC", "-isystem", include, str(source), "-o", str(output)]


def _library_name(cxx: str, source_text: bytes) -> str:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256()
    parts = (source_text, metadata.version("jaxlib"), version, _cpu_features(), " ".join(_flags()))
    for part in (p if isinstance(p, bytes) else p.encode() for p in parts):
        key.update(part)
    return f"recurrax_native_{key.hexdigest()[:16]}.so"


def build(directory: Path | None = None) -> Path:
    """Compiles the kernels (if not already cached) and returns the shared library's path.

    Raises:
      RuntimeError: no C++ compiler was found, or it failed (the message holds its output).
    """
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError(f"no C++ compiler found (looked for {os.environ.get('CXX', 'c++')!r}; set $CXX)")
    directory = cache_dir() if directory is None else directory
    source = resources.files("recurrax.backends.cpu").joinpath(SOURCE)
    text = source.read_bytes()
    path = directory / _library_name(cxx, text)
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: processes building at the same time never load half a file.
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        src = Path(tmp) / SOURCE
        src.write_bytes(text)
        out = Path(tmp) / path.name
        done = subprocess.run(_command(cxx, src, out), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE} failed:\n{done.stderr[-4000:]}")
        os.replace(out, path)
    return path


@functools.cache
def load() -> ctypes.CDLL | None:
    """Builds (once per machine) and loads the kernels and registers their FFI targets for CPU.

    Returns ``None``, after one warning, where they cannot be built; callers then use the XLA loop.
    """
    try:
        library = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as error:
        warnings.warn(
            f"recurrax: the native CPU kernels are unavailable ({error}); using the XLA loop instead.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return library
