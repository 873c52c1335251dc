"""Calls made with KServe's own Python clients, in a process of their own.

KServe's client and Triton's gRPC client both register the ``inference`` protobuf package in protobuf's
default descriptor pool, so they cannot be imported into one process (the second import fails with
"duplicate symbol 'inference.ServerLiveRequest'"). The conformance tests therefore run KServe's clients
here, through :func:`run`, and compare the answers in the test process.

A call is a JSON object: ``{"client": "rest" | "grpc", "protocol": "v1" | "v2", "target": URL or
host:port, "model": name, "request": ...}`` where ``request`` is a v1 body (``{"instances": ...}``), a
list of tensors ``{"name", "shape", "datatype", "data", "binary"}`` with optional ``"outputs"``
``[{"name", "binary"}]`` and ``"id"``, or the string ``"health"``. Its answer is ``{"id", "outputs":
{name: values}}``, the v1 body, the health flags, or ``{"status": code, "text": body}`` for an HTTP error.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import numpy as np

NUMPY_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BYTES": np.object_}


def run(calls: list[dict[str, Any]]) -> list[Any]:
    """The answers to ``calls``, made by KServe's clients in a child process."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.serve.kserve_calls"],
        input=json.dumps(calls).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"KServe's client process failed:\n{done.stderr.decode()[-4000:]}")
    answers: list[Any] = json.loads(done.stdout)
    return answers


def _tensors(spec: list[dict[str, Any]], for_grpc: bool) -> list[Any]:
    from kserve import InferInput

    tensors = []
    for item in spec:
        values = np.asarray(item["data"], dtype=NUMPY_TYPES[item["datatype"]]).reshape(item["shape"])
        if for_grpc:
            data = values.ravel().tolist()
            tensors.append(InferInput(item["name"], list(item["shape"]), item["datatype"], data=data))
        else:
            tensor = InferInput(item["name"], list(item["shape"]), item["datatype"])
            tensor.set_data_from_numpy(values, binary_data=bool(item.get("binary", False)))
            tensors.append(tensor)
    return tensors


def _request(call: dict[str, Any], for_grpc: bool) -> Any:
    from kserve import InferRequest
    from kserve.protocol.infer_type import RequestedOutput

    body = call["request"]
    outputs = [
        RequestedOutput(o["name"], parameters={"binary_data": bool(o.get("binary", False))})
        for o in body.get("outputs", [])
    ]
    tensors = _tensors(body["tensors"], for_grpc)
    return InferRequest(call["model"], tensors, request_id=body.get("id"), request_outputs=outputs or None)


def _plain(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    return array.tolist()


def _answer(response: Any) -> dict[str, Any]:
    return {"id": response.id, "outputs": {output.name: _plain(output.as_numpy()) for output in response.outputs}}


async def _rest(call: dict[str, Any]) -> Any:
    import httpx
    from kserve import InferenceRESTClient, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol=call["protocol"], retries=0, timeout=30))
    try:
        if call["request"] == "health":
            return [
                await client.is_server_live(call["target"]),
                await client.is_server_ready(call["target"]),
                await client.is_model_ready(call["target"], call["model"]),
            ]
        data = call["request"] if call["protocol"] == "v1" else _request(call, for_grpc=False)
        try:
            response = await client.infer(call["target"], data, model_name=call["model"])
        except httpx.HTTPStatusError as error:
            return {"status": error.response.status_code, "text": error.response.text}
        return response if isinstance(response, dict) else _answer(response)
    finally:
        await client.close()


async def _grpc(call: dict[str, Any]) -> Any:
    from grpc.aio import AioRpcError
    from kserve import InferenceGRPCClient

    client = InferenceGRPCClient(call["target"], retries=0, timeout=30)
    try:
        if call["request"] == "health":
            return [
                bool(await client.is_server_live()),
                bool(await client.is_server_ready()),
                bool(await client.is_model_ready(call["model"])),
            ]
        try:
            return _answer(await client.infer(_request(call, for_grpc=True)))
        except AioRpcError as error:
            return {"status": str(error.code()), "text": error.details()}
    finally:
        await client.close()


async def _all(calls: list[dict[str, Any]]) -> list[Any]:
    return [await (_rest(call) if call["client"] == "rest" else _grpc(call)) for call in calls]


if __name__ == "__main__":
    json.dump(asyncio.run(_all(json.load(sys.stdin))), sys.stdout)
