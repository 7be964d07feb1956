"""REST request bodies are bounded by ``rest.maxBodySize``, on the REST port and on the web
admin's port (which serves the same API under ``/api/``), before authentication.

Rules: one private Oba (stopped by PID) serving the REST API and the web admin with the default
limit; raw sockets where the test must control what is sent and when. The server's memory is
read from ``/proc``: ``VmHWM`` (the peak resident size) is reset through ``clear_refs`` before
each attack, so a peak during the request counts even when the memory is freed afterwards.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from integration._support import free_port, wait_until
from integration.rest_support import RestServer, assert_error

MiB = 1024 * 1024
DEFAULT_LIMIT = 8 * MiB  # rest.maxBodySize's default
ATTACK = 300 * MiB
SLACK = 6 * MiB  # what the server may grow by beyond the limit ("a few MiB")
CHUNK = MiB
BIND = "/api/v1/auth/bind"
PREFIX = b'{"dn": "cn=nobody,dc=example,dc=com", "password": "'
SUFFIX = b'"}'


@dataclass
class BodyServer(RestServer):
    """The REST API plus the web admin on ``web_port``."""

    web_port: int = field(default_factory=free_port)

    def command(self) -> list[str]:
        cmd = super().command()
        with self.config_path.open("a", encoding="utf-8") as fh:
            fh.write(f'web:\n  enabled: true\n  address: "127.0.0.1:{self.web_port}"\n')
        return cmd

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)

        def web_up() -> bool:
            try:
                url = f"http://127.0.0.1:{self.web_port}/api/v1/health"
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(web_up, timeout, "the web admin to answer")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BodyServer]:
    server = BodyServer("oba", Path(tmp_path_factory.mktemp("body-limit")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["rest", "web"])
def port(request: pytest.FixtureRequest, srv: BodyServer) -> int:
    return srv.rest_port if request.param == "rest" else srv.web_port


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST {BIND} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n").encode()


@dataclass
class Outcome:
    status: int | None  # None: no response came back
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to hand to the kernel


def parse_response(data: bytes) -> tuple[int | None, dict[str, str], bytes]:
    top, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, b""
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return int(lines[0].split()[1]), headers, rest[:length]


def attack(port: int, chunked: bool, total: int = ATTACK, deadline: float = 180.0) -> Outcome:
    """POST a JSON body of ``total`` bytes to ``/api/v1/auth/bind`` (no credentials), as fast
    as the server takes it, while another thread reads what the server answers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    received = bytearray()
    done = threading.Event()

    def reader() -> None:
        try:
            while chunk := sock.recv(65536):
                received.extend(chunk)
        except OSError:
            pass
        finally:
            done.set()

    thread = threading.Thread(target=reader, daemon=True)
    sent = 0
    try:
        sock.sendall(head(None if chunked else total))
        thread.start()
        filler = b"A" * CHUNK
        while sent < total and not done.is_set():
            piece = filler[: min(CHUNK, total - sent)]
            if sent == 0:
                piece = PREFIX + piece[len(PREFIX):]
            if sent + len(piece) == total:
                piece = piece[: -len(SUFFIX)] + SUFFIX
            try:
                if chunked:
                    sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    sock.sendall(piece)
            except OSError:  # the server closed the connection: what it answered is read
                break
            sent += len(piece)
        if sent >= total and chunked:
            try:
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass
        done.wait(deadline)
    finally:
        sock.close()
        thread.join(5)
    status, headers, body = parse_response(bytes(received))
    return Outcome(status, headers, body, sent)


def assert_413(status: int | None, body: bytes) -> None:
    assert status == 413, (status, body[:200])
    data = json.loads(body)
    assert data["code"] == 413 and data["error"] == "payload_too_large", data
    assert "rest.maxBodySize" in data["message"], data


def test_declared_length_beyond_the_limit_is_refused_before_the_body(port: int) -> None:
    """Content-Length says 300 MB: 413 at once, nothing of the body sent yet, and the server
    closes the connection instead of reading the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head(ATTACK))
        data = b""
        start = time.monotonic()
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pytest.fail(f"no answer (and no close) {time.monotonic() - start:.0f}s after "
                        f"a header announcing {ATTACK} bytes: got {data[:200]!r}")
    status, headers, body = parse_response(data)
    assert_413(status, body)
    assert headers.get("connection") == "close", headers


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_300_mb_body_costs_no_more_than_the_limit(srv: BodyServer, port: int,
                                                  chunked: bool) -> None:
    """The reported attack: 300 MB of JSON to the unauthenticated bind route. The server
    answers 413, stops reading, and its peak memory grows by less than the limit plus a few
    MiB (it grew by ~850 MB before the limit existed)."""
    before = status_kib(srv.pid, "VmRSS")
    Path(f"/proc/{srv.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    outcome = attack(port, chunked)
    grown = status_kib(srv.pid, "VmHWM") - before
    assert_413(outcome.status, outcome.body)
    assert outcome.sent < ATTACK // 4, f"the server read {outcome.sent} bytes of the body"
    assert grown * 1024 < DEFAULT_LIMIT + SLACK, f"the server grew by {grown} KiB"
    with httpx.Client(timeout=10) as http:  # and it still serves
        assert http.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200


def test_bodies_within_the_limit_are_served(port: int) -> None:
    """A body of exactly the limit is read and answered as before (here: 401, no such DN);
    one byte more is a 413 in the API's error shape."""
    url = f"http://127.0.0.1:{port}{BIND}"
    payload = PREFIX + b"A" * (DEFAULT_LIMIT - len(PREFIX) - len(SUFFIX)) + SUFFIX
    assert len(payload) == DEFAULT_LIMIT
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=60) as http:
        r = http.post(url, content=payload, headers=headers)
        assert r.status_code == 401, (r.status_code, r.text[:200])
        r = http.post(url, content=payload[:-1] + b" " + SUFFIX[-1:], headers=headers)
        assert_error(r, 413, "payload_too_large")
        assert r.headers.get("connection") == "close"


def test_chunked_body_is_cut_off_at_the_limit(port: int) -> None:
    """Without a Content-Length, the body is counted as it arrives: a little over the limit
    is refused, exactly the limit is served."""
    over = attack(port, chunked=True, total=DEFAULT_LIMIT + 1, deadline=60)
    assert_413(over.status, over.body)
    exact = attack(port, chunked=True, total=DEFAULT_LIMIT, deadline=60)
    assert exact.status == 401, (exact.status, exact.body[:200])


def test_limit_is_read_live(srv: BodyServer, port: int) -> None:
    """``rest.maxBodySize`` is hot: after a PATCH to 64KiB, 100 kB is refused on both ports."""
    url = f"http://127.0.0.1:{port}{BIND}"
    body = PREFIX + b"A" * 100_000 + SUFFIX
    with srv.client() as root, httpx.Client(
            timeout=30, headers={"Content-Type": "application/json"}) as http:
        r = root.patch("/config/rest", json={"maxBodySize": "64KiB"})
        assert r.status_code == 200, r.text
        try:
            assert r.json()["config"]["maxBodySize"] == 65536
            assert_error(http.post(url, content=body), 413, "payload_too_large")
        finally:
            r = root.patch("/config/rest", json={"maxBodySize": DEFAULT_LIMIT})
            assert r.status_code == 200, r.text
        assert http.post(url, content=body).status_code == 401


def test_config_key_default_environment_and_validation(tmp_path: Path) -> None:
    from oba.config import ConfigError, RestConfig, load_config

    assert RestConfig().maxBodySize == DEFAULT_LIMIT
    assert load_config(None, env={"OBA_REST_MAX_BODY_SIZE": "1MiB"}).rest.maxBodySize == MiB
    conf = tmp_path / "oba.yaml"
    conf.write_text("rest:\n  maxBodySize: 512KiB\n")
    assert load_config(str(conf), env={}).rest.maxBodySize == 512 * 1024
    for bad in ("lots", "0", "-1", "true"):
        conf.write_text(f"rest:\n  maxBodySize: {bad}\n")
        with pytest.raises(ConfigError) as err:
            load_config(str(conf), env={})
        assert f"{conf}:2: rest.maxBodySize:" in str(err.value), str(err.value)
