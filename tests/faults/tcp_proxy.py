"""A TCP proxy on 127.0.0.1 that a test can cut and restore: the network between two
real processes, without root.

Bytes are forwarded as they are (TLS passes through untouched). ``cut()`` is a network cut
that both ends notice: every forwarded connection is closed on both sides and the
listening port is closed, so a new connection is refused. ``restore()`` listens on the
same port again and forwards new connections.

``stall()`` is the quiet kind of fault, as far as a proxy in user space can make one: the
connections stay open and nothing is reset, but no byte moves either way (new connections
are accepted and hang) until ``resume()``. Unlike a real partition, the proxy's own sockets
acknowledge what the ends send, so their TCP stacks never time the connection out: only
the application's own bounds can end a wait.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class TcpProxy:
    """Forwards connections to 127.0.0.1:``port`` to the ``(host, port)`` ``target()``
    gives when each connection arrives."""

    def __init__(self, target: Callable[[], tuple[str, int]]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self.restore()

    def restore(self) -> None:
        """Listen (again, on the same port) and forward every new connection."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True,
                         name="test-proxy-accept").start()

    def cut(self) -> None:
        """Close the listening port and every forwarded connection, both sides."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in ([listener] if listener else []) + list(sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stall(self) -> None:
        """Move no more bytes, either way, on any connection; close nothing."""
        self._flowing.clear()

    def resume(self) -> None:
        """Move bytes again: what was held back is delivered."""
        self._flowing.set()

    def close(self) -> None:
        self.resume()  # the pumps waiting to move bytes end with their sockets
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # cut
            self._flowing.wait()  # stalled: the new connection hangs
            try:
                upstream = socket.create_connection(self.target(), timeout=10)
                upstream.settimeout(None)
            except OSError:
                downstream.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    downstream.close()
                    upstream.close()
                    return
                self._sockets.update((downstream, upstream))
                self.accepted += 1
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True,
                                 name="test-proxy-pump").start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()
                data = source.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        # one side ended: end the other too, as a broken path would
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
