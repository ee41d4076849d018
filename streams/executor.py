"""A one-thread executor whose thread never keeps a stopped process alive.

The worker runs blocking calls (inference, database transactions) off the event loop. ``ThreadPoolExecutor``
threads are joined when the interpreter exits, so a call stuck on a dependency that HANGS (a frozen
PostgreSQL or a black-holed connection: no statement_timeout fires and TCP keepalives are answered; a wedged
model) kept the worker process alive for ever after it had drained and left its group on SIGTERM. Here the
thread is a daemon: ``close`` waits a bounded time for the call in progress (normally it finishes at once),
then abandons it; nothing is lost, as an abandoned call's batch was never committed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


class DaemonExecutor(Executor):
    """Runs submitted calls one at a time, in order, on one daemon thread (``run_in_executor`` accepts it)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shut = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[Any] = Future()
            self._queue.put((future, fn, args, kwargs))
            return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued (its awaiting coroutine gave up)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.close(timeout_s=None if wait else 0.0, cancel_futures=cancel_futures)

    def close(self, timeout_s: float | None = 10.0, *, cancel_futures: bool = True) -> bool:
        """Accept no more calls, cancel the queued ones, wait up to ``timeout_s`` (None: for ever) for the one in
        progress. False when it is still running (abandoned: the daemon thread does not hold up the exit)."""
        with self._lock:
            self._shut = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._queue.put(None)
        if timeout_s is None or timeout_s > 0:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()
