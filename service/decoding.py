"""Decoding untrusted uploads in worker processes that can be killed: the CPU budget of one upload.

A thread cannot be stopped in the middle of libjpeg or zlib, so the service decodes in ``DETECT_WORKERS`` small
processes (``python -m service.decoding``, importing only Pillow, numpy and ``core.image``; not forked from the
server, whose TensorFlow threads a fork would copy in an unknown state). A detection thread hands one
the bytes and waits for the pixels; when the decode passes ``DECODE_TIMEOUT_S`` of wall time, or the request is
cancelled (its client went away, the server is stopping), the process is killed and replaced, so the CPU it was
burning is given back at once. A crash of the decoder (a segfault in a plugin, the kernel's OOM killer) costs that
image a 400, not the server. ``core.image`` refuses the known CPU bomb, a JPEG with too many scans, before any of
this; the deadline bounds whatever is not known yet.

Cost, measured in bench/RESULTS.md (bench_hardening): the round trip of bytes in and pixels out through a pipe.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from core.errors import AgeEstimationError, ImageTooComplexError, UnreadableImageError
from core.image import Decoded, decode_reduced
from service.memory import trim

logger = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[1]

_START_S = 60.0
"""How long a new worker may take to import Pillow and numpy (not counted in any decode's budget)."""

_POLL_S = 0.1
"""How often a waiting thread looks at its request's cancellation; the answer itself wakes it at once."""


def _serve(requests: Connection, answers: Connection) -> None:
    """A worker's loop: ``(data, max_pixels, min_side, max_scans)`` in, ``Decoded`` or the ``core`` error out."""
    while True:
        try:
            data, max_pixels, min_side, max_scans = requests.recv()
        except (EOFError, OSError):
            return
        try:
            result: Decoded | AgeEstimationError = decode_reduced(data, max_pixels, min_side, max_scans)
        except AgeEstimationError as exc:
            result = exc
        del data
        answers.send(result)
        del result
        # The answer is sent: return the decode's freed heap now, off the request's time (a worker lives long).
        trim()


class _Worker:
    """One decode process; requests go to its stdin, answers come from its stdout (pickled by ``Connection``)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.decoding"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_ROOT
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.requests = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.answers = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.started = False

    def wait_started(self) -> None:
        """Wait for the worker's first message, sent once its imports are done, so they cost no decode its budget."""
        if not self.started:
            if not self.answers.poll(_START_S):
                raise OSError("the decode worker did not start")
            self.answers.recv()
            self.started = True

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)
        self.requests.close()
        self.answers.close()


class DecodeWorkers:
    """``count`` decode processes shared by the detection threads; :meth:`decode` is called from those threads."""

    def __init__(self, count: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self.killed = 0
        """Workers killed so far (deadline, cancellation or crash): a figure for tests and benchmarks."""
        for _ in range(count):
            self._add()

    def _add(self) -> None:
        worker = _Worker()
        with self._lock:
            self._all.add(worker)
        self._idle.put(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            self.killed += 1
        self._add()

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            return [worker.process.pid for worker in self._all]

    def decode(
        self, data: bytes, max_pixels: int, min_side: int | None, max_scans: int, cancelled: threading.Event
    ) -> Decoded:
        """``core.image.decode_reduced`` in a worker, within ``timeout_s``; raises its ``core`` errors, and
        ``ImageTooComplexError`` past the deadline. ``cancelled`` set (by the request's task) stops it too."""
        worker: _Worker | None = self._idle.get()
        try:
            assert worker is not None
            worker.wait_started()
            worker.requests.send((data, max_pixels, min_side, max_scans))
            deadline = time.monotonic() + self.timeout_s
            while not worker.answers.poll(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
                if cancelled.is_set() or time.monotonic() >= deadline:
                    self._replace(worker)
                    worker = None
                    if cancelled.is_set():
                        raise UnreadableImageError("the decode was cancelled: the request ended")
                    raise ImageTooComplexError(
                        f"decoding the image took over {self.timeout_s:g} s (DECODE_TIMEOUT_S); it was stopped"
                    )
            result = worker.answers.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            if worker is not None:
                self._replace(worker)
                worker = None
            logger.warning("a decode worker died on an upload (%s); it was replaced", type(exc).__name__)
            raise UnreadableImageError("the image crashed the decoder; it is corrupt") from None
        finally:
            if worker is not None:
                self._idle.put(worker)
        if isinstance(result, AgeEstimationError):
            raise result
        assert isinstance(result, Decoded)
        return result

    def close(self) -> None:
        """Stop every worker (the lifespan's shutdown)."""
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.kill()


if __name__ == "__main__":
    # stdout carries the answers: anything a library prints goes to stderr instead.
    _answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    _answers.send("started")
    _serve(Connection(os.dup(0), writable=False), _answers)
