"""Calling the (synchronous) Store from async endpoints.

SQLite runs in-process and serialises writers anyway, so handing each call to a worker thread buys
no concurrency and costs a thread hand-off: about 0.4 ms of CPU, a third of a whole submission.
PostgreSQL calls wait on the network, where worker threads do overlap, so they go to the threadpool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from overcast.store import Store

P = ParamSpec("P")
T = TypeVar("T")


async def call(store: Store, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    if store.dialect == "sqlite":
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)
