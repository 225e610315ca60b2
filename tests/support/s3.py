"""A real S3-compatible server for tests: ``moto_server`` started as a separate process on 127.0.0.1.

Never an in-process mock: requests cross a socket, through the same obstore client users run, with
conditional PUTs (``If-None-Match: *``) answered by the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """Start ``moto_server`` on a free loopback port; ``env`` is what a client process needs to reach it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ACCESS_KEY_ID": "cutswap-test",
            "AWS_SECRET_ACCESS_KEY": "cutswap-test-secret",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> S3Server:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
            "moto_server"
        )
        if exe is None:
            raise RuntimeError(
                "moto_server is not installed; install the test extra (pip install -e .[test])"
            )
        self.process = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"moto_server exited with {self.process.returncode}") from None
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("moto_server did not start within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self) -> str:
        """Create a fresh bucket; its URL."""
        name = f"cutswap-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, url: str) -> list[str]:
        """Every object key under ``s3://bucket/prefix``, relative to the prefix."""
        bucket, _, prefix = url[len("s3://") :].partition("/")
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return sorted(k[len(prefix) :].lstrip("/") for k in keys)


class HeaderDroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server, removing one request header on the way: a gateway
    that drops ``If-None-Match`` turns a server that honours create-only writes into one that does not.

    Requests are small and plain HTTP/1.1 here, so a header never spans two reads; ``dropped`` counts the
    headers removed.
    """

    def __init__(self, port: int, header: str) -> None:
        import re
        import threading

        self.upstream = port
        self.pattern = re.compile(rb"\r\n" + re.escape(header.encode()) + rb":[^\r\n]*", re.IGNORECASE)
        self.dropped = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> HeaderDroppingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests:
                    data, n = self.pattern.subn(b"", data)
                    self.dropped += n
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
