"""A background thread with stop and wake events: the shape of every forward worker."""

from __future__ import annotations

import threading
from typing import Any


class Worker:
    """Runs ``_run`` in a daemon thread; ``wake()`` cuts a wait short, ``stop()`` ends it.

    ``_run`` loops until ``self._stop`` is set, waiting on ``self._wake`` between rounds.
    """

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def thread_name(self) -> str:
        return type(self).__name__.lower()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name(), daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self, *_: Any) -> None:
        self._wake.set()

    def _run(self) -> None:
        raise NotImplementedError
