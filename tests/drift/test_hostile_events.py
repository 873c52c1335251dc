"""The drift monitor under hostile input: 200+ generated malformed events each get 400 (never a
500, never a hang) and are counted as rejected while memory stays bounded; bodies above the limit
get 413 before they are read; events of other InferenceServices get 403 when the monitor knows its
own; and /healthz keeps answering while a large event is being parsed."""

from __future__ import annotations

import json
import random
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.drift.conftest import MonitorProcess, start_monitor, stop, tabular_frame
from tests.drift.test_monitor import FEATURES, LABELS, rows

SERVICE = "shapes-r3"
OWN = {
    "ce-specversion": "1.0",
    "ce-id": "1",
    "ce-source": "http://localhost:9081/",
    "ce-type": "org.kubeflow.serving.inference.request",
    "ce-inferenceservicename": SERVICE,
    "ce-namespace": "team-a",
    "content-type": "application/json",
}
STRUCTURED = {"content-type": "application/cloudevents+json"}
MEBIBYTE = 1024 * 1024


@pytest.fixture(scope="module")
def guarded(
    drift_python: Path, drift_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MonitorProcess, int]]:
    """A monitor that takes only events of shapes-r3 and shapes-r4 (and its process id)."""
    log = tmp_path_factory.mktemp("guarded") / "monitor.log"
    options = ["--inference-service", SERVICE, "--inference-service", "shapes-r4", "--window-size", "300"]
    process, running = start_monitor(drift_python, drift_model_dir, log, *options)
    try:
        yield running, process.pid
    finally:
        stop(process)


def post(monitor: MonitorProcess, body: bytes, headers: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Status and raw text of one POST / (whatever the answer's content type)."""
    request = urllib.request.Request(monitor.url + "/", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def rejected(monitor: MonitorProcess) -> float:
    return monitor.sample("optiloop_drift_events_total", **LABELS, outcome="rejected") or 0.0


# --- generated malformed events ----------------------------------------------------------


def _valid(rng: random.Random) -> dict[str, Any]:
    return {"instances": rows(tabular_frame(rng.randint(1, 5), rng.randint(0, 10_000)))}


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def _envelope(rng: random.Random) -> tuple[dict[str, str], bytes]:
    body = _json(_valid(rng))
    headers = dict(OWN)
    choice = rng.randrange(5)
    if choice == 0:
        del headers[rng.choice(["ce-specversion", "ce-id", "ce-source", "ce-type"])]
    elif choice == 1:
        headers["ce-type"] = rng.choice(["com.example.retrain", "org.kubeflow.serving.inference", " ", "x" * 300])
    elif choice == 2:
        headers["ce-specversion"] = rng.choice(["0.3", "2.0", "1", "1.0.0"])
    elif choice == 3:
        headers["ce-id"] = ""
    else:
        headers = {"content-type": "application/json"}  # a bare request, no CloudEvent at all
    return headers, body


def _structured(rng: random.Random) -> tuple[dict[str, str], bytes]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "x",
        "source": "http://localhost:9081/",
        "type": OWN["ce-type"],
        "inferenceservicename": SERVICE,
        "data": _valid(rng),
    }
    choice = rng.randrange(5)
    if choice == 0:
        del event[rng.choice(["specversion", "id", "source", "type"])]
    elif choice == 1:
        event[rng.choice(["specversion", "id", "source", "type"])] = rng.choice([1, None, [], {}, True])
    elif choice == 2:
        event["data"] = rng.choice([1, "not json", [], {"rows": []}, None])
    elif choice == 3:
        del event["data"]
        event["data_base64"] = rng.choice(["%%%", "eyJpbnN0YW5jZXMiOg==", 12, ""])
    else:
        return STRUCTURED, rng.choice([b"[]", b"1", b'"event"', b"null", b"{"])
    return STRUCTURED, _json(event)


def _numbers(rng: random.Random) -> tuple[dict[str, str], bytes]:
    literal = rng.choice(
        [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"9" * rng.randint(31, 5000), b"1" + b"0" * 400]
    )
    where = rng.randrange(3)
    row = b"[" + b", ".join([b"0.5"] * 10) + b', "red"]'
    if where == 0:
        body = b'{"instances": [' + row.replace(b"0.5", literal, 1) + b"]}"
    elif where == 1:
        body = b'{"inputs": [{"name": "m", "shape": [' + literal + b', 11], "datatype": "FP32", "data": [1]}]}'
    else:
        body = b'{"instances": [' + row + b'], "extra": ' + literal + b"}"
    return OWN, body


def _nesting(rng: random.Random) -> tuple[dict[str, str], bytes]:
    depth = rng.choice([40, 500, 900, 5_000, 100_000, 300_000])
    nested = b"[" * depth + b"]" * depth
    choice = rng.randrange(4)
    if choice == 0:
        return OWN, b'{"instances": ' + nested + b"}"
    if choice == 1:
        return OWN, b'{"inputs": [{"name": "m", "shape": ' + nested + b', "datatype": "FP32", "data": [1]}]}'
    if choice == 2:
        event = b'{"specversion": "1.0", "id": "x", "source": "s", "type": "' + OWN["ce-type"].encode()
        return STRUCTURED, event + b'", "inferenceservicename": ' + nested + b', "data": {"instances": [[1]]}}'
    data = b"[" * depth + b"1" + b"]" * depth
    return OWN, b'{"inputs": [{"name": "x0", "shape": [1], "datatype": "FP32", "data": ' + data + b"}]}"


def _shapes(rng: random.Random) -> tuple[dict[str, str], bytes]:
    shape: Any = rng.choice([[], [-1], [True], ["2"], [1.5], [[2]], "2", None, [2**40, 11], [1] * 12, [0, 11]])
    name = rng.choice(["m", "x0"])
    tensor = {"name": name, "shape": shape, "datatype": "FP32", "data": [1.0] * 11}
    inputs = [tensor] + (
        [{"name": f, "shape": [1], "datatype": "FP32", "data": [1.0]} for f in FEATURES[1:]] if name == "x0" else []
    )
    return OWN, _json({"inputs": inputs})


def _types(rng: random.Random) -> tuple[dict[str, str], bytes]:
    document = rng.choice(
        [
            {"instances": {"x0": 1}},
            {"instances": "rows"},
            {"instances": 7},
            {"instances": []},
            {"instances": ["row"]},
            {"instances": [[{"x": 1}] * 11]},
            {"instances": [[[1]] * 11]},
            {"instances": [[True] * 10 + ["red"]]},
            {"instances": [["a"] * 10 + ["red"]]},
            {"instances": [[1.0] * 3]},
            {"instances": [{"x0": 1, "nope": 2}]},
            {"inputs": "x"},
            {"inputs": []},
            {"inputs": [7]},
            {"inputs": [{"name": 7, "shape": [1], "data": [1]}]},
            {"inputs": [{"name": "x0", "shape": [1], "datatype": 3, "data": [1]}]},
            {"inputs": [{"name": "x0", "shape": [2], "data": [1]}]},
            {"inputs": [{"name": "x0", "shape": [1], "data": [{"a": 1}]}]},
            {"inputs": [{"name": "x0", "shape": [1], "data": [1]}]},
            {"inputs": [{"name": "m", "shape": [1, 11], "data": [1] * 10 + [[1]]}]},
            [1, 2, 3],
            "instances",
            None,
        ]
    )
    return OWN, _json(document)


def _garbage(rng: random.Random) -> tuple[dict[str, str], bytes]:
    valid = _json(_valid(rng))
    if rng.random() < 0.5:
        return OWN, valid[: rng.randrange(1, len(valid))]  # truncated
    return OWN, bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))


GENERATORS: list[Callable[[random.Random], tuple[dict[str, str], bytes]]] = [
    _envelope,
    _structured,
    _numbers,
    _nesting,
    _shapes,
    _types,
    _garbage,
]


def malformed_events(count: int, seed: int) -> list[tuple[dict[str, str], bytes]]:
    rng = random.Random(seed)
    return [GENERATORS[i % len(GENERATORS)](rng) for i in range(count)]


def test_generated_malformed_events_are_all_refused_with_400(guarded: tuple[MonitorProcess, int]) -> None:
    monitor, pid = guarded
    events = malformed_events(280, seed=21)
    before, rss_before = rejected(monitor), rss_bytes(pid)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda event: post(monitor, event[1], event[0], timeout=60), events))
    wrong = [(events[i][1][:120], status, text[:200]) for i, (status, text) in enumerate(answers) if status != 400]
    assert not wrong, wrong[:5]
    assert rejected(monitor) == before + len(events)
    # Bounded memory: nothing of 280 refused events is kept (the window is 300 rows of 11 floats).
    assert rss_bytes(pid) < rss_before + 100 * MEBIBYTE
    status, text = post(monitor, _json({"instances": rows(tabular_frame(3, 1))}), OWN)
    assert status == 200, text


def test_events_of_other_inference_services_are_forbidden(guarded: tuple[MonitorProcess, int]) -> None:
    monitor, _ = guarded
    body = _json({"instances": rows(tabular_frame(2, 5))})
    before = rejected(monitor)
    assert post(monitor, body, {**OWN, "ce-inferenceservicename": "shapes-r4"})[0] == 200
    status, text = post(monitor, body, {**OWN, "ce-inferenceservicename": "billing"})
    assert status == 403
    assert "inferenceservicename 'billing' is not an InferenceService this monitor watches" in text
    no_name = {k: v for k, v in OWN.items() if k != "ce-inferenceservicename"}
    assert post(monitor, body, no_name)[0] == 403
    assert post(monitor, body, {**OWN, "ce-namespace": "team-b"})[0] == 403
    assert rejected(monitor) == before + 3


def _raw_exchange(port: int, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send ``head`` and then body chunks until the server answers; the answer's first line.

    A reader thread takes the answer as soon as it comes, so a server that answers and closes
    part-way through the body is still heard.
    """
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:

        def read() -> None:
            try:
                while b"\r\n" not in answer and (part := sock.recv(4096)):
                    answer.extend(part)
            except OSError:
                pass

        reader = threading.Thread(target=read)
        reader.start()
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                if answer:
                    break
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before the whole body went out
        reader.join(timeout=30)
        assert not reader.is_alive(), "no answer within 30 s"
    return bytes(answer).split(b"\r\n", 1)[0]


def _head(extra: str) -> bytes:
    lines = ["POST / HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in OWN.items()), extra, "", ""]
    return "\r\n".join(lines).encode()


def test_a_body_above_the_limit_is_refused_with_413_before_it_is_read(guarded: tuple[MonitorProcess, int]) -> None:
    monitor, _ = guarded
    before = rejected(monitor)
    # A declared length of 1 GB is refused from the headers alone: no body byte is sent.
    status_line = _raw_exchange(monitor.port, _head("Content-Length: 1000000000"), iter(()))
    assert status_line.startswith(b"HTTP/1.1 413"), status_line

    # A chunked body without a length is cut off once it passes the limit (16 MiB by default).
    def chunks() -> Iterator[bytes]:
        piece = b"[" + b"1, " * 300_000 + b"1]"
        for _ in range(40):  # 36 MB in all, far above the limit
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    status_line = _raw_exchange(monitor.port, _head("Transfer-Encoding: chunked"), chunks())
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert rejected(monitor) == before + 2
    assert urllib.request.urlopen(monitor.url + "/healthz", timeout=10).status == 200


def test_healthz_answers_while_a_large_event_is_parsed(guarded: tuple[MonitorProcess, int]) -> None:
    monitor, _ = guarded
    frame = tabular_frame(50_000, 77)
    body = _json({"instances": rows(frame)})
    assert 8 * MEBIBYTE < len(body) < 16 * MEBIBYTE
    result: dict[str, Any] = {}

    def send_large() -> None:
        result["answer"] = post(monitor, body, OWN, timeout=300)

    sender = threading.Thread(target=send_large)
    sender.start()
    checks = 0
    while sender.is_alive():
        # Liveness probes time out after a second by default; each one must be answered in that time.
        with urllib.request.urlopen(monitor.url + "/healthz", timeout=1) as response:
            assert response.status == 200
        checks += 1
    sender.join()
    assert result["answer"][0] == 200, result["answer"][1][:300]
    assert json.loads(result["answer"][1])["accepted"] == 50_000
    assert checks >= 1
