"""A TCP relay in front of a real server that can be made to stall or lag, for timeout tests.

`pass` relays both ways; `stall` keeps accepting bytes but relays nothing more in either
direction (a server that hangs mid-request); `lag` holds each chunk `lag` seconds first.
"""

from __future__ import annotations

import socket
import threading
import time


class TcpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.mode, self.lag = "pass", 0.0
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self.accepted = 0  # connections relayed so far
        self._stop = threading.Event()
        self.holding = threading.Event()  # set once a chunk is held back (a request on the wire, stalled)
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._open:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:  # upstream gone: refuse this client as the server would, keep accepting
                client.close()
                continue
            self._open += [client, server]
            self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._relay, args=(a, b), daemon=True).start()

    def _relay(self, src: socket.socket, dst: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.mode != "pass":
                self.holding.set()
            while self.mode == "stall" and not self._stop.is_set():
                time.sleep(0.05)
            if self.mode == "lag":
                time.sleep(self.lag)
            try:
                dst.sendall(data)
            except OSError:
                return
