"""A real ``age-serve`` on 127.0.0.1: slow and idle clients are cut off, ambiguous framing refused, SIGTERM bounded.

Behavioural bounds only (generous limits around small configured timeouts); the timings are in ``bench/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.service.conftest import ROOT

LIMITS = {"HEAD_TIMEOUT_S": "1", "BODY_TIMEOUT_S": "2", "MAX_CONNECTIONS": "8", "SHUTDOWN_TIMEOUT_S": "2"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (after whatever it answers) within ``seconds``."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def _health(port: int) -> bytes:
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(65536)


@contextmanager
def _serving(config_file: Path, limits: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A real ``age-serve`` with ``limits`` in its environment, once ``GET /health`` answers 200; killed after."""
    port = _free_port()
    env = {**os.environ, **limits}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.main", "--port", str(port), "--config", str(config_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _health(port).startswith(b"HTTP/1.1 200"):
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("age-serve did not become ready")
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def server(config_file: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    with _serving(config_file, LIMITS) as running:
        yield running


def test_a_connection_that_sends_no_request_head_is_closed(server: tuple[subprocess.Popen[str], int]) -> None:
    with _connect(server[1]) as idle, _connect(server[1]) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHo")  # a head that never ends
        assert _closed_within(idle, 10)
        assert _closed_within(slow, 10)


def test_a_body_that_does_not_arrive_in_time_gets_408(server: tuple[subprocess.Popen[str], int]) -> None:
    with _connect(server[1]) as sock:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        sock.sendall(head + b"Content-Length: 100000\r\n\r\n--b\r\n")
        sock.settimeout(15)
        assert sock.recv(65536).startswith(b"HTTP/1.1 408")
        assert _closed_within(sock, 10)


def test_content_length_with_transfer_encoding_is_refused(server: tuple[subprocess.Popen[str], int]) -> None:
    with _connect(server[1]) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_connections_beyond_the_cap_are_closed_and_the_rest_still_answer(
    server: tuple[subprocess.Popen[str], int],
) -> None:
    held = [_connect(server[1]) for _ in range(int(LIMITS["MAX_CONNECTIONS"]) - 1)]
    try:
        with _connect(server[1]) as extra:
            assert _closed_within(extra, 5)
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert _health(server[1]).startswith(b"HTTP/1.1 200")


def test_sigterm_with_a_slow_upload_in_flight_exits_within_the_shutdown_bound(config_file: Path) -> None:
    # Its own server (SIGTERM ends it), whose body timeout is far beyond the shutdown bound: only the bound can
    # end the upload in time, so an exit within the wait below is the bound at work.
    limits = LIMITS | {"BODY_TIMEOUT_S": "60"}
    with _serving(config_file, limits) as (process, port), _connect(port) as sock:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        sock.sendall(head + b"Content-Length: 100000\r\n\r\n--b\r\n")
        # Still open after the head timeout: the server holds a whole head and is reading the body.
        assert not _closed_within(sock, float(LIMITS["HEAD_TIMEOUT_S"]) + 1), "the upload is not in flight"
        process.send_signal(signal.SIGTERM)
        # SHUTDOWN_TIMEOUT_S is 2: far less than this generous limit, far more than it needs.
        process.wait(timeout=30)
