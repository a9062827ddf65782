"""Small helpers shared by the package."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any


def _rebuild(cls: type, kwargs: dict[str, Any]) -> Any:
    return cls(**kwargs)


def frozen_reduce(obj: Any) -> tuple:
    """``__reduce__`` for frozen dataclasses that hold read-only mappings.

    ``types.MappingProxyType`` cannot be pickled; the object is rebuilt from its
    fields (proxies as plain dicts), so ``__post_init__`` validates it again.
    """
    kwargs = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        kwargs[f.name] = dict(v) if isinstance(v, MappingProxyType) else v
    return (_rebuild, (type(obj), kwargs))
