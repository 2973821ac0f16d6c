"""Build hook only (metadata lives in pyproject.toml): the optional compiled heatmap kernel.

`ray_gait.heatmap._kernel` (ray_gait/heatmap/_kernel.c, plain C on Python.h) speeds up step 1's
map rendering.  It is optional: when it cannot be compiled (no C compiler, no Python headers) the
install still succeeds with a warning, and `ray_gait.heatmap.fast.available()` reports False.
"""
from __future__ import annotations

import os
import runpy
import sys
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The kernel's compiler flags live beside it (ray_gait/heatmap/kernel_build.py, stdlib only), so that a
# build at run time (where an uploaded copy of the project lacks the compiled file) uses the same ones.
UNIX_FLAGS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_gait", "heatmap",
                                         "kernel_build.py"))["UNIX_FLAGS"]


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
