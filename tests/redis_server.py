"""A real ``redis-server`` on 127.0.0.1 for tests and benches, and a TCP proxy that can cut it.

The server binary comes from Debian's ``redis-server`` package (``.ci/run`` installs it). When
it is missing, a test FAILS if the environment variable ``CI`` is set and skips otherwise.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_redis_server() -> str:
    """The server binary's path; fail (under CI) or skip (elsewhere) when it is missing."""
    if not os.path.exists(REDIS_SERVER):
        message = ("redis-server not found: install Debian's redis-server package "
                   "(apt-get install -y redis-server)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_SERVER


@contextmanager
def redis_server(*extra: str, binary: str = REDIS_SERVER) -> Iterator[int]:
    """Start ``redis-server`` on a free port of 127.0.0.1 without persistence; yield the port;
    stop it on the way out (also when the body fails)."""
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError as err:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}") from err
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to a Redis port until ``cut_after`` bytes went from clients to
    the server; then it closes every connection and stops listening, so the clients' retries
    are refused — a network cut in the middle of a write, while the server keeps its data.
    With ``keep_listening`` it only drops the open connections once (a blip to recover from)."""

    def __init__(self, upstream_port: int, cut_after: int, keep_listening: bool = False):
        self.upstream = upstream_port
        self.cut_after = cut_after
        self.keep_listening = keep_listening  # True: drop the connections once, then forward
        self.drops = 0
        self.sent = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while not self.cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    with self._lock:
                        self.sent += len(data)
                        over = self.sent > self.cut_after
                    if over and self.keep_listening:
                        self.drop_connections()
                        return
                    if over:
                        self.close()
                        return
                dst.sendall(data)
        except OSError:
            pass

    def drop_connections(self) -> None:
        """Drop every open connection once (new ones are forwarded as before)."""
        with self._lock:
            socks, self._socks = self._socks, []
            self.cut_after = float("inf")
            self.drops += 1
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        """Cut: stop listening and drop every connection."""
        self.cut.set()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in [self.listener, *socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password=password)
