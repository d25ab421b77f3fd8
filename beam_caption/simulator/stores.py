"""IdStore: objects by id (files, batches), with fresh sequential ids and the API's 404."""

from __future__ import annotations

import itertools
from typing import Generic, TypeVar

from beam_caption.simulator.apierror import not_found

T = TypeVar("T")


class IdStore(Generic[T]):
    """Objects by id in insertion order; ids are `prefix` plus a zero-padded counter."""

    def __init__(self, prefix: str, noun: str, param: str) -> None:
        self._items: dict[str, T] = {}
        self._ids = itertools.count(1)
        self._prefix = prefix
        self._noun = noun  # as the 404 names it: "No such {noun} object"
        self._param = param

    def new_id(self) -> str:
        """A fresh id."""
        return f"{self._prefix}{next(self._ids):08d}"

    def put(self, item_id: str, item: T) -> T:
        """Store `item` under `item_id` and return it."""
        self._items[item_id] = item
        return item

    def get(self, item_id: str) -> T:
        """The object, or 404 as the API answers."""
        try:
            return self._items[item_id]
        except KeyError:
            raise not_found(f"No such {self._noun} object: {item_id}", param=self._param) \
                from None

    def values(self) -> list[T]:
        """Every object, oldest first."""
        return list(self._items.values())
