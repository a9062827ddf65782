"""``render_mode="human"``: the ``rgb_array`` frames shown in a matplotlib window.

Gymnasium's own fallback for ``"human"`` (its ``HumanRendering`` wrapper, applied inside
``gym.make`` when an env lists only ``rgb_array``) needs pygame, which CoEL-Gym does not
depend on; matplotlib it already uses. Where matplotlib can open no window (no
display, or a non-interactive backend such as Agg), one notice on stderr says so and
the frames are not drawn: the env runs as it would without rendering.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def interactive_backend() -> str | None:
    """The name of matplotlib's backend when it can open windows, else None."""
    import matplotlib
    import matplotlib.pyplot as plt  # resolves the automatic backend choice

    name = str(plt.get_backend())
    try:
        from matplotlib.backends import BackendFilter, backend_registry
    except ImportError:  # matplotlib < 3.9
        interactive = {b.lower() for b in matplotlib.rcsetup.interactive_bk}
    else:
        interactive = set(backend_registry.list_builtin(BackendFilter.INTERACTIVE))
    return name if name.lower() in interactive else None


class HumanWindow:
    """One matplotlib window, updated with each frame :meth:`show` is given."""

    def __init__(self) -> None:
        self._fig: Any = None
        self._image: Any = None
        self._off = False

    def show(self, frame: np.ndarray) -> None:
        """Draw ``frame`` (an RGB array) in the window, opening it when needed; without
        a display, say once on stderr that nothing can be shown."""
        if self._off:
            return
        if interactive_backend() is None:
            import matplotlib.pyplot as plt

            print(
                "notice: render_mode='human' cannot open a window (matplotlib backend "
                f"{plt.get_backend()!r}: no display); frames are not shown. "
                "render_mode='rgb_array' returns them as arrays",
                file=sys.stderr,
            )
            self._off = True
            return
        import matplotlib.pyplot as plt

        if self._fig is None or not plt.fignum_exists(self._fig.number):
            plt.ion()
            self._fig, ax = plt.subplots(num="CoEL-Gym")
            ax.set_axis_off()
            self._image = ax.imshow(frame)
            self._fig.tight_layout()
        else:
            self._image.set_data(frame)
        self._fig.canvas.draw_idle()
        plt.pause(0.001)  # lets the window's event loop draw it

    def close(self) -> None:
        """Close the window (if one is open)."""
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
            self._fig = self._image = None
