"""A preallocated (static) key/value cache for the attention mixers' `step` and `prefill`.

`KVCache` keeps each per-token field (keys and values, (B, H, t, hd); mod also keeps its routing
flags, (B, 1, t)) in a buffer with room for more tokens than it holds, time on dim 2. Appending a
token writes one slot of each buffer instead of concatenating the whole cache into a new tensor
every step; a full buffer is replaced by one of twice the capacity (the live tokens copied over
once), so an append costs amortised O(1) copies. Attention reads the filled views `cache["k"]`,
`cache["v"]`: the cache is a `dict[str, Tensor]` (the mixer state contract) of its fields' filled
views, so `state_numel` counts the filled part only, never the spare capacity. The position of
the next token is the attribute `pos` (not an item). Fixed-size
tensors that are not per token (block_state's SSM state) ride along as `extra` items, replaced
whole with `with_extra`.

States share buffers: `append` writes the slot after the filled part and returns a NEW cache
whose length is one more, leaving the old cache object as it was. So the same state can be
stepped again and again (the decode benchmark times one step at context exactly L this way):
each call rewrites the same slot. An older state can also be stepped after a newer one wrote
further slots, since a cache only ever reads its own filled part; it overwrites the slot the
newer state wrote there, which makes that newer state stale (fork states by stepping them in
order, oldest last, or by copying).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["MIN_CAPACITY", "KVCache", "capacity_for"]

MIN_CAPACITY = 16  # the smallest buffer a cache allocates (slots per sequence)
_TIME = 2  # the time dim of every field: (B, H, t, hd) keys and values, (B, 1, t) flags


def capacity_for(held: int, window: int | None = None) -> int:
    """Slots for a buffer that holds `held` tokens and must take at least one more.

    Unwindowed: the smallest power of two >= held + 1 (at least MIN_CAPACITY), so a buffer that
    fills up is replaced by one of twice its size: geometric growth, amortised O(1) per token.
    Windowed (only the last `window` tokens are live): the same while the window is filling,
    capped at 2 x window; once held + 1 reaches the window, 2 x window, so the w - 1 live tokens
    are copied into a fresh buffer once every w + 1 appends (again amortised O(1)).
    """
    needed = held + 1
    if window is not None and needed >= window:
        return 2 * window
    capacity = max(MIN_CAPACITY, 1 << (needed - 1).bit_length())
    return capacity if window is None else min(capacity, 2 * window)


class KVCache(dict[str, Tensor]):
    """Per-token fields in preallocated buffers; a dict of their filled views (plus `extra`).

    `buffers`: field name -> (B, ..., capacity, ...) tensor, time on dim 2; the filled part is
    slots [start, end). `pos`: tokens appended over the cache's life (the position of the next
    token; the RoPE position when a window drops old tokens). `window`: when set, only the last
    `window` tokens stay live (sliding-window attention). `extra`: further tensors of the state,
    items beside the fields, carried unchanged by `append` and `cleared`. Build one with
    `from_tokens`; treat it as read-only (every change returns a new cache).
    """

    __slots__ = ("_buffers", "end", "extra", "pos", "start", "window")

    def __init__(self, buffers: dict[str, Tensor], start: int, end: int, pos: int,
                 window: int | None = None, extra: Mapping[str, Tensor] | None = None) -> None:
        self._buffers, self.start, self.end = buffers, start, end
        self.pos, self.window, self.extra = pos, window, dict(extra or {})
        if self.extra.keys() & buffers.keys():
            raise ValueError(f"KVCache extra items {sorted(self.extra)} clash with its fields")
        views = {name: b.narrow(_TIME, start, end - start) for name, b in buffers.items()}
        super().__init__({**views, **self.extra})

    def __reduce__(self) -> Any:  # copy and pickle rebuild from the buffers, not the items
        return (KVCache, (self._buffers, self.start, self.end, self.pos, self.window,
                          self.extra))

    @classmethod
    def from_tokens(cls, *, pos: int | None = None, window: int | None = None,
                    capacity: int | None = None, **fields: Tensor) -> KVCache:
        """A cache holding `fields` (each (B, ..., t, ...), time on dim 2, t may be 0).

        With a window only the last `window` tokens are kept. `pos` defaults to t (the fields
        are the whole sequence so far); `capacity` defaults to `capacity_for(held, window)`.
        """
        t = next(iter(fields.values())).shape[_TIME]
        keep = t if window is None else min(t, window)
        capacity = capacity_for(keep, window) if capacity is None else max(capacity, keep)
        buffers = {}
        for name, value in fields.items():
            if value.shape[_TIME] != t:
                raise ValueError(f"KVCache fields disagree on length: {name} has "
                                 f"{value.shape[_TIME]}, expected {t}")
            shape = (*value.shape[:_TIME], capacity, *value.shape[_TIME + 1 :])
            buffer = torch.empty(shape, device=value.device, dtype=value.dtype)
            buffer.narrow(_TIME, 0, keep).copy_(value.narrow(_TIME, t - keep, keep))
            buffers[name] = buffer
        return cls(buffers, 0, keep, t if pos is None else pos, window)

    def with_extra(self, **extra: Tensor) -> KVCache:
        """This cache (same buffers, same filled part) with `extra` items set or replaced."""
        return KVCache(self._buffers, self.start, self.end, self.pos, self.window,
                       {**self.extra, **extra})

    @property
    def capacity(self) -> int:
        """Slots of the buffers (filled or not)."""
        return next(iter(self._buffers.values())).shape[_TIME]

    @property
    def buffers(self) -> Mapping[str, Tensor]:
        """The whole preallocated buffers (spare capacity included), by field name."""
        return self._buffers

    # a mapping of tensors cannot compare by value (tensor == tensor is elementwise)
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return (f"KVCache(fields={list(self._buffers)}, held={self.end - self.start}, "
                f"pos={self.pos}, capacity={self.capacity}, window={self.window}, "
                f"extra={list(self.extra)})")

    def append(self, **fields: Tensor) -> KVCache:
        """A new cache with one more token: each field (B, ..., 1, ...) written into one slot.

        The buffers are shared with this cache unless they are full; then the live tokens are
        copied once into fresh, larger buffers (see `capacity_for`), leaving these untouched.
        """
        if fields.keys() != self._buffers.keys():
            raise ValueError(f"KVCache.append needs fields {list(self._buffers)}; "
                             f"got {list(fields)}")
        buffers, start, end = self._buffers, self.start, self.end
        if end == self.capacity:  # full: move the live tokens into fresh buffers
            if self.window is not None:  # the oldest live token falls out of the window now
                start = max(start, end - (self.window - 1))
            held = end - start
            capacity = capacity_for(held, self.window)
            fresh = {}
            for name, buffer in buffers.items():
                shape = (*buffer.shape[:_TIME], capacity, *buffer.shape[_TIME + 1 :])
                new = buffer.new_empty(shape)
                new.narrow(_TIME, 0, held).copy_(buffer.narrow(_TIME, start, held))
                fresh[name] = new
            buffers, start, end = fresh, 0, held
        for name, value in fields.items():
            buffers[name].narrow(_TIME, end, 1).copy_(value)
        end += 1
        if self.window is not None:
            start = max(start, end - self.window)
        return KVCache(buffers, start, end, self.pos + 1, self.window, self.extra)

    def cleared(self) -> KVCache:
        """An empty cache (pos 0) with fresh buffers of this capacity and the same `extra`:
        states that still read this cache's buffers (older states) are left intact."""
        fresh = {name: buffer.new_empty(buffer.shape) for name, buffer in self._buffers.items()}
        return KVCache(fresh, 0, 0, 0, self.window, self.extra)
