"""The public surface of configd_client is exactly its sorted ``__all__`` (as httpx tests its own)."""

from __future__ import annotations

import configd_client


def test_all_is_sorted_and_complete() -> None:
    exported = configd_client.__all__
    assert exported == sorted(exported)
    assert len(exported) == len(set(exported))
    public = {name for name in dir(configd_client) if not name.startswith("_")}
    assert public == set(exported), f"exported but not in __all__: {public - set(exported)}"
    for name in exported:
        assert getattr(configd_client, name).__module__.startswith("configd_client")
