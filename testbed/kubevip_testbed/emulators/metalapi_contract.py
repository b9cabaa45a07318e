"""The Equinix Metal OpenAPI document as a contract: every request and response of the emulator is checked with it.

An emulator that drifts from the real API makes tests pass against a fiction. The spec that the `equinix` 0.19.0
SDK was generated from (`openapi3.patched.yaml`) is therefore the judge of both sides: a request that breaks it is
a bug in the client under test, a response that breaks it is a bug in the emulator. openapi-core does the checking;
it is imported lazily, so the emulator still runs (unvalidated) where only the runtime dependencies are installed.

The spec is 570 KB; it is parsed once per process (libyaml when available, about 0.2 s) and cached, so every emulator
in a test session shares it. Its only server is `https://api.equinix.com/metal/v1`; a relative server `/metal/v1` is
added to the cached copy so that requests to any local host and port resolve to the same operations.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from generic.logfmt import get_logger

if TYPE_CHECKING:
    from openapi_core import OpenAPI

__all__ = ["SPEC_ENV", "SPEC_SHA256", "Contract", "RequestCheck", "default_spec_path", "load_contract"]

log = get_logger(__name__)

SPEC_ENV = "METAL_OPENAPI_SPEC"
SPEC_NAME = "openapi3.patched.yaml"
# equinix/equinix-sdk-python v0.19.0 spec/services/metalv1/oas3.patched/openapi3.yaml (see shared/metal-api/README.md)
SPEC_SHA256 = "9da66e69795bea84aa5512608d9fd6fb7ae96041f1065e36bec6f1df196b939f"
LOCAL_SERVER = "/metal/v1"
_MAX_MESSAGE = 300


def default_spec_path() -> Path:
    """`$METAL_OPENAPI_SPEC`, else the copy shipped with the package (`metal_spec/`), else a shared reference copy
    above the checkout (`shared/metal-api/`)."""
    env = os.environ.get(SPEC_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    shipped = here.parent / "metal_spec" / SPEC_NAME
    if shipped.is_file():
        return shipped
    candidates = [parent / "shared" / "metal-api" / SPEC_NAME for parent in here.parents]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the Metal OpenAPI spec ({SPEC_NAME}) was not found in any shared/metal-api/ above "
                            f"{here.parent}; set {SPEC_ENV} or pass spec_path")


@dataclass
class RequestCheck:
    """What the spec made of one request: its parsed parameters and body, or why it is not a valid call."""

    openapi_request: Any  # openapi_core's aiohttp request adapter, kept to check the response against
    errors: list[str] = field(default_factory=list)
    status: int = 0  # the status an invalid request is answered with (404, 405, 400 or 422)
    query: Mapping[str, Any] = field(default_factory=dict)
    path: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None


class Contract:
    """One parsed spec and the openapi-core validators built on it."""

    def __init__(self, path: Path, document: dict[str, Any], app: OpenAPI, load_seconds: float, sha256: str) -> None:
        self.path = path
        self.document = document
        self.app = app
        self.load_seconds = load_seconds
        self.sha256 = sha256

    def operation_id(self, method: str, template: str) -> str | None:
        """The spec's operationId for `GET /devices/{id}`-style templates (relative to /metal/v1)."""
        operation = self.document.get("paths", {}).get(template, {}).get(method.lower())
        return operation.get("operationId") if isinstance(operation, dict) else None

    def check_request(self, request: web.Request, body: bytes) -> RequestCheck:
        """Validate path, query, headers and body; parse them (defaults applied) when valid."""
        from openapi_core.contrib.aiohttp import AIOHTTPOpenAPIWebRequest
        from openapi_core.deserializing.media_types.exceptions import MediaTypeDeserializeError
        from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
        from openapi_core.templating.paths.exceptions import OperationNotFound, PathError

        openapi_request = AIOHTTPOpenAPIWebRequest(request, body=body or None)
        check = RequestCheck(openapi_request)
        result = self.app.unmarshal_request(openapi_request)
        if not result.errors:
            check.query, check.path, check.body = result.parameters.query, result.parameters.path, result.body
            return check
        errors = list(result.errors)
        check.errors = [describe(error) for error in errors]
        first = errors[0]
        cause = first.__cause__
        if isinstance(first, OperationNotFound):
            check.status = 405
        elif isinstance(first, PathError):
            check.status = 404
        elif isinstance(cause, MediaTypeDeserializeError | MediaTypeNotFound):
            check.status = 400
        else:
            check.status = 422  # Metal's documented answer to a missing or malformed parameter
        return check

    def check_response(self, check: RequestCheck, response: web.Response) -> list[str]:
        """Why the response breaks the operation's documented responses; empty when it does not."""
        from openapi_core.contrib.aiohttp import AIOHTTPOpenAPIWebResponse
        from openapi_core.exceptions import OpenAPIError

        try:
            self.app.validate_response(check.openapi_request, AIOHTTPOpenAPIWebResponse(response))
        except OpenAPIError as exc:
            return [describe(exc)]
        return []


def describe(error: BaseException) -> str:
    """One readable line for an openapi-core error, naming the JSON path and the failing rule of each schema error."""
    text = str(error) or type(error).__name__
    cause = error.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or getattr(error, "schema_errors", None)
    if schema_errors:
        what = type(error).__name__ if not str(error) or "not valid for schema" in text else text
        return f"{what}: " + "; ".join(_schema_error(e) for e in schema_errors)
    if cause is not None and str(cause) and str(cause) not in text:
        return f"{text}: {_short(str(cause))}"
    return _short(text)


def _schema_error(error: Any) -> str:
    """A jsonschema ValidationError as `/json/path: message`; for oneOf/anyOf, why each branch failed."""
    where = "/" + "/".join(str(p) for p in error.absolute_path)
    if not error.context:
        return f"{where}: {_short(error.message)}"
    branches: dict[int, list[str]] = {}
    for sub in error.context:
        index = sub.relative_schema_path[0] if sub.relative_schema_path else 0
        branches.setdefault(int(index), []).append(_schema_error(sub))
    alternatives = error.schema.get(error.validator, []) if isinstance(error.schema, Mapping) else []
    parts = []
    for index, reasons in sorted(branches.items()):
        name = f"#{index}"
        if index < len(alternatives) and isinstance(alternatives[index], Mapping):
            ref = alternatives[index].get("$ref", "")
            name = ref.rsplit("/", 1)[-1] or name
        parts.append(f"{name}: {', '.join(reasons)}")
    if not parts:  # oneOf failing because several branches matched
        return f"{where}: {_short(error.message)}"
    return f"{where}: no {error.validator} branch matches ({' | '.join(parts)})"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


_lock = threading.Lock()
_cache: dict[Path, Contract] = {}


def load_contract(path: Path | None = None) -> Contract:
    """The contract for `path` (default: `default_spec_path()`), parsed on first use and shared afterwards."""
    spec_path = (path or default_spec_path()).resolve()
    with _lock:
        cached = _cache.get(spec_path)
        if cached is not None:
            return cached
        contract = _load(spec_path)
        _cache[spec_path] = contract
        return contract


def _load(path: Path) -> Contract:
    try:
        from openapi_core import Config, OpenAPI
    except ImportError as exc:  # only the `test` extra installs it
        raise RuntimeError("validating against the Metal spec needs openapi-core (pip install '.[test]'); "
                           "or run the emulator with validate=False / --validate never") from exc
    started = time.monotonic()
    raw = path.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    document = json.loads(raw) if path.suffix == ".json" else yaml.load(raw, Loader=loader)
    if not isinstance(document, dict) or "paths" not in document:
        raise ValueError(f"{path} is not an OpenAPI document")
    servers = list(document.get("servers") or [])
    if not any(s.get("url") == LOCAL_SERVER for s in servers):
        document["servers"] = [*servers, {"url": LOCAL_SERVER}]
    # The spec is known valid (openapi-spec-validator passes on it); re-checking it would triple the load time.
    app = OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))
    elapsed = time.monotonic() - started
    if sha256 != SPEC_SHA256:
        log.warning("metal_spec.unexpected_digest", path=str(path), sha256=sha256, expected=SPEC_SHA256)
    log.info("metal_spec.loaded", path=str(path), seconds=round(elapsed, 3), paths=len(document["paths"]))
    return Contract(path, document, app, elapsed, sha256)
