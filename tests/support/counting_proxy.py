"""A TCP forwarder on 127.0.0.1 that counts the bytes crossing it each way: one process's traffic to a
server (the S3 server of ``tests.support.s3``), when only that process is given the forwarder's endpoint.

Why not ``/proc/net/dev`` (the loopback interface): every process of the machine shares it (the Dask
workers, Prefect's API). Why not ``/proc/PID/io``: its ``rchar``/``wchar`` count ``read``/``write`` calls,
and obstore's sockets (Rust's ``TcpStream``) use ``recv``/``send``.

    with CountingProxy(server.port) as proxy:
        env["AWS_ENDPOINT_URL"] = proxy.endpoint
        ...
        proxy.read, proxy.written      # bytes the clients received from the server, and sent to it
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.support.s3 import free_port


class CountingProxy:
    """Forward every connection to ``127.0.0.1:target``, counting bytes: ``read`` (server to client) and
    ``written`` (client to server). Runs its own event loop on a thread while in its ``with`` block."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.read = 0
        self.written = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def reset(self) -> None:
        self.read = self.written = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if upstream:
                    self.written += len(data)
                else:
                    self.read += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pipe(client_reader, server_writer, upstream=True),
            self._pipe(server_reader, client_writer, upstream=False),
        )

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
