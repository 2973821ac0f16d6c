"""Build hook only (metadata lives in pyproject.toml): the optional compiled heatmap kernel.

`ray_gait.heatmap._kernel` (ray_gait/heatmap/_kernel.c, plain C on Python.h) speeds up step 1's
map rendering.  It is optional: when it cannot be compiled (no C compiler, no Python headers) the
install still succeeds with a warning, and `ray_gait.heatmap.fast.available()` reports False.
"""
from __future__ import annotations

import sys
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Baseline instruction set only (the wheel must run on any x86-64 / aarch64): no -march flags; on
# x86-64 the kernel adds an AVX2 build of its loops itself, picked at run time.
# -fno-trapping-math only drops FP-exception semantics (results are unchanged); it lets gcc
# if-convert and vectorize the inner loops.  -ffp-contract=off: no fused multiply-adds, so the
# float32 roundings do not depend on the CPU (the SSE2 and AVX2 builds give identical maps, tested;
# aarch64, where gcc would otherwise fuse, should match too but is untested).
UNIX_FLAGS = ["-O3", "-fno-trapping-math", "-ffp-contract=off"]


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the kernel cannot be built."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type != "msvc":
            for ext in self.extensions:
                ext.extra_compile_args = list(ext.extra_compile_args or []) + UNIX_FLAGS
        super().build_extensions()

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler raises various distutils errors
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._skip(exc, ext.name)

    @staticmethod
    def _skip(exc: BaseException, name: str = "ray_gait.heatmap._kernel") -> None:
        message = (f"could not build the optional extension {name} ({type(exc).__name__}: {exc}); "
                   "ray_gait falls back to its numpy renderer")
        warnings.warn(message)
        print(f"WARNING: {message}", file=sys.stderr)


setup(
    ext_modules=[Extension("ray_gait.heatmap._kernel", sources=["ray_gait/heatmap/_kernel.c"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
