"""Byte relays between TCP and Unix sockets, to reach into or out of a network namespace.

    python -m tests.support.relay [--ready FILE] LISTEN=TARGET [LISTEN=TARGET ...]

Each endpoint is ``tcp:HOST:PORT`` or ``unix:PATH``. Every connection accepted on LISTEN is
joined to a new connection to TARGET until either side closes. ``--ready`` names a file created
once every LISTEN accepts connections. Runs until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _connect(endpoint: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, _, address = endpoint.partition(":")
    if kind == "unix":
        return await asyncio.open_unix_connection(address)
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _serve(listen: str, target: str) -> asyncio.AbstractServer:
    async def join(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await _connect(target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, far_writer), _pipe(far_reader, writer))

    kind, _, address = listen.partition(":")
    if kind == "unix":
        Path(address).unlink(missing_ok=True)
        return await asyncio.start_unix_server(join, address)
    host, _, port = address.rpartition(":")
    return await asyncio.start_server(join, host, int(port))


async def main(args: list[str]) -> None:
    ready = None
    if args[:1] == ["--ready"]:
        ready, args = Path(args[1]), args[2:]
    servers = [await _serve(*pair.split("=", 1)) for pair in args]
    if ready is not None:
        ready.touch()
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
