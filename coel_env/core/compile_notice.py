"""A one-line notice on stderr while numba compiles the simulator's kernels.

The kernels (:mod:`coel_env.core.kernels`) are compiled on first use and cached on disk
(``cache=True``: beside their modules in ``__pycache__``, or under ``NUMBA_CACHE_DIR``).
A cold cache costs about 30 s the first time a world steps, which looks like a hang; so
the first time in a process that numba really compiles one of this package's functions
(not when it loads one from the cache), :data:`NOTICE` is printed to stderr, once.

It listens to numba's public event API: ``numba:compile`` is broadcast only on a cache
miss, just before the compiler runs, with the dispatcher whose function is compiled, so
the check costs nothing when the cache is warm and nothing after the first compile.
"""

from __future__ import annotations

import sys

from numba.core import event

NOTICE = "coel_env: compiling simulator kernels (first run only, ~30 s)..."

#: Functions of modules under this prefix are the simulator's kernels.
_PACKAGE = "coel_env."


class _Notice(event.Listener):
    """Prints :data:`NOTICE` when the first of the package's functions is compiled."""

    def __init__(self) -> None:
        self.shown = False

    def on_start(self, ev: event.Event) -> None:
        if self.shown:
            return
        dispatcher = (ev.data or {}).get("dispatcher")
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", None) or ""
        if module.startswith(_PACKAGE):
            self.shown = True
            print(NOTICE, file=sys.stderr, flush=True)

    def on_end(self, ev: event.Event) -> None:
        pass


_listener: _Notice | None = None


def install() -> None:
    """Listen for the first compile of a kernel (idempotent: one listener per process)."""
    global _listener
    if _listener is None:
        _listener = _Notice()
        event.register("numba:compile", _listener)


install()  # on import: coel_env.core.kernels imports this module before any kernel runs
