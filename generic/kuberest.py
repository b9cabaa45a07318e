"""A small Kubernetes REST client for the few calls a control-plane VIP needs (Lease get / create / update /
watch, `/readyz`), on the standard library's `http.client` and `ssl`.

Why not the official `kubernetes` client: importing it costs about 36 MB of a 60 MB process (it loads pydantic,
every generated model and API) and every call builds model objects; the ARP control plane needs four HTTP
requests. The official client is still what Services, Events and node annotations use (`KubeApi.official` in
`kubevip_metal.kubeclient` builds it on first use), so a process that needs it pays for it and one that does not,
does not.

What is understood of a kubeconfig is what kubeadm, k3s, RKE2 and ServiceAccount kubeconfigs hold: the current
context's server, `certificate-authority(-data)`, `insecure-skip-tls-verify`, `tls-server-name`, and a user with
`token`, `tokenFile` or `client-certificate(-data)` + `client-key(-data)`. Anything else (an `exec` plugin, an
`auth-provider`, basic auth) raises `Unsupported`, and the caller uses the official client instead, which knows
them all. A token file (the in-cluster one is rotated by the kubelet) is read again every minute.

Connections are kept alive and reused (a leader renews once a retry period: one TLS handshake, not one a
second); a reused connection that the server closed meanwhile is retried once on a fresh one. Every request has
a timeout (each socket operation waits at most that long).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from generic.secret import Secret

TOKEN_REREAD_SECONDS = 60.0
IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(Exception):
    """The kubeconfig or the in-cluster files cannot be used (missing, unreadable, malformed)."""


class Unsupported(KubeConfigError):
    """The kubeconfig uses something this client does not implement (the official client does)."""


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how to authenticate to it."""

    server: str  # https://host:port (or http:// for the test emulator)
    ca_pem: bytes | None = None  # trusted CAs; None: the system's
    verify: bool = True
    server_name: str | None = None  # tls-server-name
    token: Secret | None = None
    token_file: Path | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: Secret | None = None

    def with_server(self, server: str) -> Endpoint:
        return Endpoint(server, self.ca_pem, self.verify, self.server_name, self.token, self.token_file,
                        self.client_cert_pem, self.client_key_pem)


def _data_or_file(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except ValueError:
            raise KubeConfigError(f"{key}-data is not base64") from None
    name = entry.get(key)
    if name:
        path = Path(str(name))
        path = path if path.is_absolute() else base / path
        try:
            return path.read_bytes()
        except OSError as exc:
            raise KubeConfigError(f"{key} {path}: {exc.strerror or exc}") from None
    return None


def _named(items: Any, name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(what), dict):
            found: dict[str, Any] = item[what]
            return found
    raise KubeConfigError(f"no {what} named {name!r}")


def load_kubeconfig(path: Path) -> Endpoint:
    """The current context of the kubeconfig at `path`."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"{path} is not YAML: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or not doc.get("current-context"):
        raise KubeConfigError(f"{path} has no current-context")
    context = _named(doc.get("contexts"), str(doc["current-context"]), "context")
    cluster = _named(doc.get("clusters"), str(context.get("cluster")), "cluster")
    user = _named(doc.get("users"), str(context.get("user")), "user") if context.get("user") else {}
    unknown = sorted(set(user) - {"token", "tokenFile", "client-certificate", "client-certificate-data",
                                  "client-key", "client-key-data"})
    if unknown:
        raise Unsupported(f"{path}: user field(s) {', '.join(unknown)}")
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"{path}: cluster server {server!r} is not an http(s) URL")
    base = path.parent
    cert, key = _data_or_file(user, "client-certificate", base), _data_or_file(user, "client-key", base)
    if (cert is None) != (key is None):
        raise KubeConfigError(f"{path}: a client certificate needs its key and the other way round")
    token_file = user.get("tokenFile")
    return Endpoint(server=server.rstrip("/"), ca_pem=_data_or_file(cluster, "certificate-authority", base),
                    verify=not cluster.get("insecure-skip-tls-verify"),
                    server_name=cluster.get("tls-server-name") or None,
                    token=Secret(str(user["token"])) if user.get("token") else None,
                    token_file=(Path(str(token_file)) if token_file else None),
                    client_cert_pem=cert, client_key_pem=Secret(key.decode()) if key is not None else None)


def in_cluster(directory: Path = IN_CLUSTER) -> Endpoint:
    """The Pod's ServiceAccount: KUBERNETES_SERVICE_HOST/PORT, its token file (rotated) and CA."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeConfigError("not running in a pod (no KUBERNETES_SERVICE_HOST)")
    token, ca = directory / "token", directory / "ca.crt"
    if not token.is_file() or not ca.is_file():
        raise KubeConfigError(f"the ServiceAccount token or CA is not mounted in {directory}")
    host = f"[{host}]" if ":" in host else host
    return Endpoint(server=f"https://{host}:{port}", ca_pem=ca.read_bytes(), token_file=token)


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    data: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.data)


def _ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=endpoint.ca_pem.decode() if endpoint.ca_pem else None)
    if not endpoint.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if endpoint.client_cert_pem is not None and endpoint.client_key_pem is not None:
        # ssl loads a key pair only from files: a private one, removed as soon as it is loaded
        with tempfile.TemporaryDirectory(prefix="kube-client-") as directory:
            cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
            cert.write_bytes(endpoint.client_cert_pem)
            key.touch(0o600)
            key.write_text(endpoint.client_key_pem.reveal())
            context.load_cert_chain(cert, key)
    return context


class RestClient:
    """Requests to one API server; thread-safe (each request takes its own connection from a small pool)."""

    def __init__(self, endpoint: Endpoint, clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        parts = urlsplit(endpoint.server)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port or (443 if self._https else 80)
        try:
            self._context = _ssl_context(endpoint) if self._https else None
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise KubeConfigError(f"cannot use the TLS settings for {endpoint.server}: {exc}") from None
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._token: tuple[str, float] | None = None  # from the token file, and when it was read

    def __repr__(self) -> str:
        return f"RestClient({self.endpoint.server})"

    def _bearer(self) -> str | None:
        if self.endpoint.token is not None:
            return self.endpoint.token.reveal()
        if self.endpoint.token_file is None:
            return None
        with self._lock:
            if self._token is None or self._clock() - self._token[1] >= TOKEN_REREAD_SECONDS:
                try:
                    self._token = (self.endpoint.token_file.read_text().strip(), self._clock())
                except OSError as exc:
                    if self._token is None:
                        raise OSError(f"cannot read the token file: {exc.strerror}") from None
            return self._token[0]

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is not None:
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            return connection, True
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._context), False
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout), False

    def _headers(self, body: bytes | None, accept: str, content_type: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": "kube-vip-metal"}
        if body is not None:
            headers["Content-Type"] = content_type
        bearer = self._bearer()
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        return headers

    @staticmethod
    def _target(path: str, query: dict[str, Any] | None) -> str:
        return path + ("?" + urlencode(query) if query else "")

    def request(self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None,
                timeout: float, accept: str = "application/json",
                content_type: str = "application/json") -> Response:
        """One request, its whole answer read; raises OSError (or http.client.HTTPException) when there is none.
        `content_type`: the body's (a PATCH's strategic merge patch, say); the body is JSON either way."""
        data = json.dumps(body).encode() if body is not None else None
        headers = self._headers(data, accept, content_type)
        target = self._target(path, query)
        for attempt in (1, 2):
            connection, reused = self._connection(timeout)
            try:
                connection.request(method, target, body=data, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle connection: once more, on a new one
                raise
            except BaseException:
                connection.close()
                raise
            if answer.will_close:
                connection.close()
            else:
                with self._lock:
                    self._idle.append(connection)
            return Response(answer.status, answer.reason, payload)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def stream(self, path: str, *, query: dict[str, Any] | None = None, timeout: float) -> Iterator[Iterator[bytes]]:
        """A long-lived GET (a watch), its body given line by line; the connection is closed afterwards.
        A non-2xx answer raises `StatusError`."""
        connection, _ = self._connection(timeout)  # a stream's connection never goes back to the pool
        try:
            connection.request("GET", self._target(path, query), headers=self._headers(None, "application/json"))
            answer = connection.getresponse()
            if not 200 <= answer.status < 300:
                raise StatusError(answer.status, answer.reason, answer.read())
            yield (line for line in answer)
        finally:
            connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class StatusError(Exception):
    """The API server answered a stream with an error status."""

    def __init__(self, status: int, reason: str, data: bytes = b"") -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status, self.reason, self.data = status, reason, data


class OfficialTransport:
    """`RestClient`'s two calls over an official `kubernetes.client.ApiClient` (a kubeconfig this module does not
    understand, the tests' clients): the same requests, sent by the official client's connection pool."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def _send(self, method: str, path: str, body: Any, query: dict[str, Any] | None, timeout: float,
              accept: str, content_type: str = "application/json") -> Any:
        from urllib3.exceptions import HTTPError

        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            verb, url, header_params, data, _ = self.api_client.param_serialize(
                method, path, query_params=list(query.items()) if query else None, header_params=headers, body=body,
                auth_settings=["BearerToken"])
            return self.api_client.call_api(verb, url, header_params=header_params, body=data,
                                            _request_timeout=timeout)
        except HTTPError as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from None

    def request(self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None,
                timeout: float, accept: str = "application/json",
                content_type: str = "application/json") -> Response:
        from urllib3.exceptions import HTTPError

        response = self._send(method, path, body, query, timeout, accept, content_type)
        try:
            payload = response.read()
        except HTTPError as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from None
        return Response(int(response.status), str(response.reason), bytes(payload or b""))

    @contextlib.contextmanager
    def stream(self, path: str, *, query: dict[str, Any] | None = None, timeout: float) -> Iterator[Iterator[bytes]]:
        from kubernetes.watch import watch

        iter_resp_lines: Any = watch.iter_resp_lines  # untyped in the client
        response = self._send("GET", path, None, query, timeout, "application/json")
        raw = response.response
        try:
            if not 200 <= response.status < 300:
                raise StatusError(int(response.status), str(response.reason), bytes(raw.data or b""))
            yield (line.encode() for line in iter_resp_lines(raw))
        finally:
            raw.close()
            raw.release_conn()


def transport_of(client: Any) -> Any:
    """What `request` / `stream` go through for `client`: a `RestClient`, an object carrying one as `rest`
    (kubevip_metal.kubeclient.KubeApi), or an official `ApiClient` (wrapped)."""
    rest = getattr(client, "rest", None)
    if rest is not None:
        return rest
    if isinstance(client, RestClient | OfficialTransport):
        return client
    return OfficialTransport(client)
