"""Build script: compiles the Cython hot path ``zactor.wire._fast``.

Everything else about the package lives in ``pyproject.toml``.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "zactor.wire._fast",
        ["zactor/wire/_fast.pyx"],
        extra_compile_args=["-O3"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    ),
)
