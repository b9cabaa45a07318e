"""Each lab node's "own API server" for `--controlPlaneHealthCheckAddress`: 127.0.0.1:PORT in the node's namespace,
forwarding TCP to the lab's API (the emulator, or the fault proxy in front of a real kube-apiserver).

In the lab every node shares one API server, so stopping it would stop the Leases too. This endpoint lets a test
stop one node's local API server alone (`stop`: refused, open connections cut), as when a node's kube-apiserver
dies while the cluster's Leases keep working through the others, and bring it back (`start`). The upstream
connection is made from the node's namespace, so a node cut off from the router fails its check as well.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from kubevip_testbed.rig import Rig

PORT = 16443


class LocalApi:
    def __init__(self, rig: Rig, node: str, upstream: tuple[str, int], port: int = PORT) -> None:
        self.rig, self.node, self.upstream, self.port = rig, node, upstream, port
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0  # accepted since the start: proof that the manager checks

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> LocalApi:
        with self._lock:
            if self._listener is None:
                self._listener = self.rig.listen_socket(self.node, "127.0.0.1", self.port)
                threading.Thread(target=self._accept, args=(self._listener,), name=f"local-api:{self.node}",
                                 daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = self.rig.connect_socket(self.node, *self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
                self.connections += 1
            upstream.settimeout(None)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._open -= {source, sink}
