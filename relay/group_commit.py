"""Group commit: concurrent callers' items written together, each caller answered after the
commit that holds its item.

While one batch is being written, the items that arrive queue up and are written together
next, so under load a route makes one write transaction per batch instead of one per
request (fewer commits, far less write-lock contention on SQLite); when idle an item is
written at once, alone. `write_many` runs in a thread and returns one result per item, in
order: an exception in that list fails that item's caller alone; an exception raised by
`write_many` fails every caller of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class GroupCommit(Generic[In, Out]):
    def __init__(
        self, write_many: Callable[[list[In]], Sequence[Out | BaseException]], *, max_batch: int
    ) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await asyncio.to_thread(self._write_many, [item for item, _ in batch])
            except Exception as exc:  # every waiting caller gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):  # this item alone was refused
                    future.set_exception(result)
                else:
                    future.set_result(result)
