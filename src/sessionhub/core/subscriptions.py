"""The topics one connection follows, as a mapping that keeps a single entry in itself.

Nearly every realtime connection follows one topic. A ``dict`` of one entry costs 200 bytes
(its first table has room for five), which was the largest object an idle subscribed
connection kept after its transport; ``Subscriptions`` holds one entry in its own slots (72
bytes with the collector's header) and turns into a dict from the second topic on, so a
connection that follows many pays what it did before. It behaves as a ``dict`` does
(insertion order included), which ``tests/unit/test_subscriptions.py`` checks against one,
operation by operation.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, TypeVar, overload

if TYPE_CHECKING:
    from .connection import Subscription

_T = TypeVar("_T")
_MISSING: object = object()  # ``pop`` without a default


class Subscriptions(MutableMapping[str, "Subscription"]):
    """``topic -> Subscription`` for one connection (see the module docstring)."""

    __slots__ = ("_dict", "_key", "_value")

    def __init__(self) -> None:
        self._key: str | None = None
        self._value: Subscription | None = None
        #: Every entry once there have been two at once (then ``_key`` stays None).
        self._dict: dict[str, Subscription] | None = None

    def __len__(self) -> int:
        d = self._dict
        if d is not None:
            return len(d)
        return 0 if self._key is None else 1

    def __contains__(self, topic: object) -> bool:
        d = self._dict
        if d is not None:
            return topic in d
        return self._key is not None and topic == self._key

    def __iter__(self) -> Iterator[str]:
        d = self._dict
        if d is not None:
            return iter(d)
        return iter(() if self._key is None else (self._key,))

    def __getitem__(self, topic: str) -> Subscription:
        d = self._dict
        if d is not None:
            return d[topic]
        if self._key is not None and topic == self._key:
            assert self._value is not None
            return self._value
        raise KeyError(topic)

    def __setitem__(self, topic: str, sub: Subscription) -> None:
        d = self._dict
        if d is not None:
            d[topic] = sub
        elif self._key is None or topic == self._key:
            self._key, self._value = topic, sub
        else:
            assert self._value is not None
            self._dict = {self._key: self._value, topic: sub}
            self._key = self._value = None

    def __delitem__(self, topic: str) -> None:
        d = self._dict
        if d is not None:
            del d[topic]
        elif self._key is not None and topic == self._key:
            self._key = self._value = None
        else:
            raise KeyError(topic)

    @overload
    def get(self, topic: str, /) -> Subscription | None: ...
    @overload
    def get(self, topic: str, default: Subscription | _T, /) -> Subscription | _T: ...
    def get(self, topic: str, default: object = None, /) -> object:
        d = self._dict
        if d is not None:
            return d.get(topic, default)
        if self._key is not None and topic == self._key:
            return self._value
        return default

    @overload
    def pop(self, topic: str, /) -> Subscription: ...
    @overload
    def pop(self, topic: str, default: Subscription | _T, /) -> Subscription | _T: ...
    def pop(self, topic: str, default: object = _MISSING, /) -> object:
        d = self._dict
        if d is not None:
            return d.pop(topic) if default is _MISSING else d.pop(topic, default)
        if self._key is not None and topic == self._key:
            value = self._value
            self._key = self._value = None
            return value
        if default is _MISSING:
            raise KeyError(topic)
        return default

    def clear(self) -> None:
        self._key = self._value = self._dict = None

    def __repr__(self) -> str:
        return f"Subscriptions({dict(self.items())!r})"
