"""Building the compiled map kernel (`_kernel.c`): the flags setup.py uses, and a build where the work runs.

`pip install` builds the kernel into the package.  A copy of the project that travels without it (the
upload of `ray job submit --working-dir .`, where `.gitignore` leaves out every `*.so`, placed first on
each worker's Python path) would render with numpy, about 10x slower; there `fast` builds the kernel
once per machine from the `_kernel.c` that did travel, with the same compiler flags as setup.py, into a
private folder under the system's temporary folder (`<tmp>/ray_gait-<uid>/kernel-<digest>/`, the
digest covering the source, the flags and the Python ABI), and loads it from there.

Stdlib only: setup.py reads UNIX_FLAGS from this file before the package is installed.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
import sys
import sysconfig
import tempfile
import uuid

# Baseline instruction set only (the wheel must run on any x86-64 / aarch64): no -march flags; on
# x86-64 the kernel adds an AVX2 build of its loops itself, picked at run time.
# -fno-trapping-math only drops FP-exception semantics (results are unchanged); it lets gcc
# if-convert and vectorize the inner loops.  -ffp-contract=off: no fused multiply-adds, so the
# float32 roundings do not depend on the CPU (the SSE2 and AVX2 builds give identical maps, tested).
UNIX_FLAGS = ["-O3", "-fno-trapping-math", "-ffp-contract=off"]

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_kernel.c")
MODULE = "ray_gait.heatmap._kernel"
# Set to 0 to never build the kernel at run time (the numpy renderer is used where it is not installed).
BUILD_ENV = "RAY_GAIT_BUILD_KERNEL"
COMPILE_TIMEOUT_S = 120


class KernelBuildError(RuntimeError):
    """The kernel could not be built here (no compiler, no Python headers, a compile error)."""


def _compiler() -> list[str]:
    """The C compiler and the flags Python's own extensions are built with (what setuptools uses)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cflags = sysconfig.get_config_var("CFLAGS") or ""
    ccshared = sysconfig.get_config_var("CCSHARED") or "-fPIC"
    return [*shlex.split(cc), *shlex.split(cflags), *shlex.split(ccshared)]


def build_digest() -> str:
    """What a built kernel depends on: the source, the flags, the compiler command and the Python ABI."""
    digest = hashlib.sha256()
    with open(SOURCE, "rb") as handle:
        digest.update(handle.read())
    for part in (*_compiler(), *UNIX_FLAGS, sysconfig.get_config_var("EXT_SUFFIX") or "", sys.version):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _private_folder(path: str) -> str:
    """Create `path` (mode 700) or check that it is this user's and writable by nobody else."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise KernelBuildError(f"{path} is not a private folder of this user: not loading a kernel from it")
    return path


def cache_folder(root: str | None = None) -> str:
    """This machine's folder for run-time builds: `<tmp>/ray_gait-<uid>/kernel-<digest>` (private to the user)."""
    base = _private_folder(os.path.join(root or tempfile.gettempdir(), f"ray_gait-{os.getuid()}"))
    return _private_folder(os.path.join(base, f"kernel-{build_digest()}"))


def built_kernel_path(root: str | None = None) -> str:
    """The kernel built here before (or now): compiled once per machine, concurrent builds replace it atomically."""
    if not os.path.exists(SOURCE):
        raise KernelBuildError(f"the kernel's source {SOURCE} is not here")
    folder = cache_folder(root)
    target = os.path.join(folder, "_kernel" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    if os.path.exists(target):
        return target
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        raise KernelBuildError(f"no Python headers (Python.h) in {include}")
    partial = os.path.join(folder, f".build-{uuid.uuid4().hex[:8]}.so")
    command = [*_compiler(), *UNIX_FLAGS, f"-I{include}", "-shared", SOURCE, "-o", partial, "-lm"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            raise KernelBuildError(f"{command[0]} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        os.replace(partial, target)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelBuildError(f"{command[0]}: {exc}") from exc
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def load_built_kernel(root: str | None = None):
    """Build (once per machine) and import the kernel as `ray_gait.heatmap._kernel`; KernelBuildError if it cannot be."""
    import importlib.machinery
    import importlib.util
    path = built_kernel_path(root)
    loader = importlib.machinery.ExtensionFileLoader(MODULE, path)
    spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
    try:
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except ImportError as exc:
        raise KernelBuildError(f"{path}: {exc}") from exc
    return module


def build_allowed() -> bool:
    """False when RAY_GAIT_BUILD_KERNEL=0 forbids building the kernel at run time."""
    return os.environ.get(BUILD_ENV, "1") != "0"
