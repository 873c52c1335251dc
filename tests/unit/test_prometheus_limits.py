"""A Prometheus a tenant points the operator at cannot stall or exhaust it: a server that drips
one byte at a time is cut off at the query's overall deadline, an endless answer is cut off at
the byte cap without being held in memory, and a host that resolves to a link-local address is
never asked. Hostile servers on loopback, real sockets."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from optiloop.operator import prometheus

Behaviour = Callable[[socket.socket], None]


@pytest.fixture
def hostile() -> Iterator[Callable[[Behaviour], str]]:
    """Start a loopback server that treats every connection with ``behaviour``; yields its URL."""
    servers: list[tuple[socket.socket, threading.Event, threading.Thread]] = []

    def start(behaviour: Behaviour) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        stop = threading.Event()

        def serve() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=_guarded, args=(behaviour, client), daemon=True).start()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        servers.append((server, stop, thread))
        return f"http://127.0.0.1:{server.getsockname()[1]}"

    yield start
    for server, stop, thread in servers:
        stop.set()
        thread.join(timeout=5)  # closing the socket under a pending accept() would raise in that thread
        server.close()


def _guarded(behaviour: Behaviour, client: socket.socket) -> None:
    try:
        client.recv(65536)
        behaviour(client)
    except OSError:
        pass  # the operator hung up, as it should
    finally:
        client.close()


def drip(client: socket.socket) -> None:
    answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"status":"success","data":{}}'
    for byte in answer * 1000:
        client.sendall(bytes([byte]))
        time.sleep(0.2)


def endless(client: socket.socket) -> None:
    client.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"status":"success","data":[')
    chunk = b"0," * 32768
    while True:
        client.sendall(chunk)


def test_a_server_that_drips_bytes_is_cut_off_at_the_overall_deadline(hostile: Callable[[Behaviour], str]) -> None:
    url = hostile(drip)
    started = time.monotonic()
    result = prometheus.query(url, "up", deadline=1.5)
    elapsed = time.monotonic() - started
    assert not result.reachable
    assert result.error == "no answer within 1.5 s"
    assert elapsed < 3.0, f"held for {elapsed:.1f} s although every byte came within the per-read timeout"


def test_an_endless_answer_is_cut_off_at_the_byte_cap_without_filling_memory(
    hostile: Callable[[Behaviour], str],
) -> None:
    url = hostile(endless)
    tracemalloc.start()
    try:
        result = prometheus.query(url, "up", deadline=10, max_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not result.reachable
    assert result.error == f"an answer larger than {1 << 20} bytes"
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 1 MiB cap"


def test_a_tenant_url_that_resolves_to_a_link_local_address_is_never_asked(hostile: Callable[[Behaviour], str]) -> None:
    result = prometheus.query("http://169.254.169.254", "up", deadline=1, refuse_private=True)
    assert not result.reachable
    assert "169.254.169.254 resolves to 169.254.169.254, which no Prometheus may have" in result.error
    assert prometheus.query("http://0.0.0.0:1", "up", deadline=1, refuse_private=True).error.endswith(
        "which no Prometheus may have"
    )
