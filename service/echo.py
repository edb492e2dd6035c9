"""Values from the network as an error message may repeat them: cut short, with their length.

A status message travels back in a trailer, and stock clients refuse metadata over 16 KiB, so a
1 MB model name echoed whole would turn NOT_FOUND into RESOURCE_EXHAUSTED; and no log line or
status should carry unbounded input. Every place that repeats a client's value uses these.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_SHOWN = 48  # characters of a client's value that an error message repeats


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """A value from the network, as an error message may repeat it: its repr, cut to `limit`
    characters with the full length said, so a 1 MB name never travels back in a status."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    cut = repr(text[:limit]) if isinstance(value, str) else text[:limit]
    return f"{cut}... ({len(text)} characters)"


def shown_list(values: Iterable[object], limit: int = 8) -> str:
    """A list from the network (a tensor shape, alphas): its first `limit` items and its length."""
    items = list(values)
    if len(items) <= limit:
        return str(items)
    head = ", ".join(shown(v, 16) for v in items[:limit])
    return f"[{head}, ...] ({len(items)} items)"
