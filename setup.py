"""Only the C extension lives here; everything else is in pyproject.toml.

The native load-generator engine is optional: where no C compiler (or no Python headers) is present the build
of the extension fails quietly, the package installs without it, and the load generator uses its Python engine
(it says so on stderr and in the result JSON).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "loadgen.engine._native",
            ["loadgen/engine/_native.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            libraries=["m"],  # sqrt, ceil: a load profile's schedule
            optional=True,
        )
    ]
)
