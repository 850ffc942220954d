"""Threads that read, decode and resize images while the model runs, and an in-order window over them."""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from retrain.config import WORKERS


def thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The pool every image-preparing loop uses (WORKERS threads)."""
    return concurrent.futures.ThreadPoolExecutor(WORKERS)


def windowed(items: Iterable, submit: Callable, window: int) -> Iterator:
    """Yield results of submit(item) in order, keeping at most `window` in flight."""
    pending: deque = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
