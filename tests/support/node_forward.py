"""Reaching a server that listens inside the test node's network namespace from the host, as the
node reaches its API server (tests/support/node.py): a relay inside the namespace from a Unix
socket to the server's port, and a relay on the host's loopback to that socket
(tests/support/relay.py). Unix sockets are files, so both namespaces see the same one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.support.control_plane import _Process, _spawn, free_port, wait_for
from tests.support.node import RELAY, Node


def net_namespace_of(node: Node) -> list[str]:
    """The command prefix that runs a program in the node's network namespace only: it keeps the
    host's files and process table, so ``Popen.terminate`` reaches the program itself (``nsenter``
    execs it: no PID namespace, so no fork)."""
    return ["nsenter", f"--target={node.holder_pid}", "--net", "--"]


@contextmanager
def forwarded(node: Node, port: int, workdir: Path) -> Iterator[str]:
    """``127.0.0.1:<port>`` inside the node, reachable from the host at the returned
    ``127.0.0.1:<host port>`` while the context lasts; both relays are stopped on exit."""
    socket_path = workdir / f"forward-{port}.sock"
    host_port = free_port()
    with ExitStack() as relays:
        inside_namespace = net_namespace_of(node)
        inside = _relay(
            workdir, f"forward-{port}-inside", inside_namespace, f"unix:{socket_path}", f"tcp:127.0.0.1:{port}"
        )
        relays.callback(inside.stop)
        outside = _relay(workdir, f"forward-{port}-host", [], f"tcp:127.0.0.1:{host_port}", f"unix:{socket_path}")
        relays.callback(outside.stop)
        yield f"127.0.0.1:{host_port}"


def _relay(workdir: Path, name: str, prefix: list[str], listen: str, target: str) -> _Process:
    ready = workdir / f"{name}.ready"
    process = _spawn(name, [*prefix, sys.executable, str(RELAY), "--ready", str(ready), f"{listen}={target}"], workdir)

    def listening() -> bool:
        if process.popen.poll() is not None:
            raise RuntimeError(f"relay {name} exited with {process.popen.returncode}:\n{process.tail()}")
        return ready.exists()

    try:
        wait_for(listening, 30, interval=0.1, what=f"relay {name} to listen")
    except BaseException:
        process.stop()
        raise
    return process
