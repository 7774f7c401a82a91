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
def _serving(
    config_file: Path, limits: dict[str, str], log: Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A real ``age-serve`` with ``limits`` in its environment, once ``GET /health`` answers 200; killed after.
    Its standard error goes to ``log`` when given."""
    port = _free_port()
    env = {**os.environ, **limits}
    stderr = log.open("w") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "service.main", "--port", str(port), "--config", str(config_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
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


def test_ten_thousand_headers_in_one_write_are_a_431(server: tuple[subprocess.Popen[str], int]) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    with _connect(server[1]) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).split(b"\r\n", 1)[0] == b"HTTP/1.1 431 Request Header Fields Too Large"


def test_a_head_over_the_limit_arriving_in_pieces_is_a_431(server: tuple[subprocess.Popen[str], int]) -> None:
    with _connect(server[1]) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            for i in range(48):  # 48 KB of headers, 1 KB a write: past MAX_HEADER_BYTES and h11's own limit
                sock.sendall(b"X-P%02d: " % i + b"v" * 1017 + b"\r\n")
        except OSError:
            pass  # the server may close before the last pieces: its answer is already on the way
        sock.settimeout(10)
        assert sock.recv(65536).split(b"\r\n", 1)[0] == b"HTTP/1.1 431 Request Header Fields Too Large"


@pytest.mark.slow
def test_a_request_cut_by_shutdown_answers_503_without_a_traceback(config_file: Path, tmp_path: Path) -> None:
    import psutil

    from tests.hostile import scan_bomb

    bomb = scan_bomb(side=1000, scans=120_000)  # several seconds of CPU: still decoding when the shutdown cuts it
    limits = LIMITS | {"DECODE_TIMEOUT_S": "60", "MAX_JPEG_SCANS": "1000000", "SHUTDOWN_TIMEOUT_S": "1"}
    log = tmp_path / "stderr.txt"
    with _serving(config_file, limits, log) as (process, port), _connect(port) as sock:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + bomb + b"\r\n--b--\r\n"
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        workers = psutil.Process(process.pid).children()
        deadline = time.monotonic() + 30
        while not any(worker.cpu_times().user > 0.5 for worker in workers) and time.monotonic() < deadline:
            time.sleep(0.05)  # a poll with a deadline: until a decode worker is visibly busy with the bomb
        process.send_signal(signal.SIGTERM)
        sock.settimeout(30)
        answer = b""
        while chunk := sock.recv(65536):  # the 503 closes the connection
            answer += chunk
        process.wait(timeout=30)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 503 Service Unavailable", answer[:300]
    assert b"retry-after:" in rest.lower()
    assert b"shutting_down" in answer
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_a_client_that_leaves_mid_decode_has_its_decode_killed(config_file: Path) -> None:
    import psutil

    from tests.hostile import scan_bomb

    bomb = scan_bomb(side=1000, scans=120_000)  # several seconds of CPU, far below the 60 s deadline
    limits = LIMITS | {"DECODE_TIMEOUT_S": "60", "MAX_JPEG_SCANS": "1000000"}
    with _serving(config_file, limits) as (process, port):
        workers = psutil.Process(process.pid).children()
        with _connect(port) as sock:
            head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + bomb
            body += b"\r\n--b--\r\n"
            sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            deadline = time.monotonic() + 30
            while not any(worker.cpu_times().user > 0.5 for worker in workers) and time.monotonic() < deadline:
                time.sleep(0.05)  # until a decode worker is visibly busy with the bomb
        # The client is gone: the busy worker must be killed (and replaced) long before its decode could end.
        deadline = time.monotonic() + 30
        while all(worker.is_running() for worker in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not all(worker.is_running() for worker in workers)
        assert _health(port).startswith(b"HTTP/1.1 200")
