"""`Status` errors of the Kubernetes API emulator, worded as the real API server words them.

Clients branch on `reason` and `code` (leader election treats only a 404 as "create the lock"), and people read
`message`, so both follow the real server's texts.
"""

from __future__ import annotations

from typing import Any

from kubevip_metal.emulators.kubeapi_resources import ResourceDef


class ApiError(Exception):
    """An API failure that is answered as a `Status` object with the given HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success" if code < 400 else "Failure", "message": message, "reason": reason,
                            "code": code}
    if details is not None:
        body["details"] = details
    if code < 400:  # a success Status (delete) carries only status and details
        del body["message"], body["reason"], body["code"]
    return body


def resource_details(r: ResourceDef, name: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if r.group:
        details["group"] = r.group
    details["kind"] = r.plural
    details.update(extra)
    return details


def not_found(r: ResourceDef, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{r.qualified} "{name}" not found', resource_details(r, name))


def already_exists(r: ResourceDef, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{r.qualified} "{name}" already exists', resource_details(r, name))


def conflict(r: ResourceDef, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {r.qualified} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again", resource_details(r, name))


def precondition_failed(r: ResourceDef, name: str, what: str, want: str, have: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {r.qualified} "{name}": Precondition failed: '
                    f"{what}: {want}, {what} in object meta: {have}", resource_details(r, name))


def invalid(r: ResourceDef, name: str, field: str, cause_reason: str, detail: str) -> ApiError:
    details: dict[str, Any] = {"name": name}
    if r.group:
        details["group"] = r.group
    details["kind"] = r.kind
    details["causes"] = [{"reason": cause_reason, "message": detail, "field": field}]
    return ApiError(422, "Invalid", f'{r.qualified_kind} "{name}" is invalid: {field}: {detail}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unprocessable(message: str) -> ApiError:
    """The real server's answer to a JSON patch that cannot be applied (a failed `test`, a missing path)."""
    return ApiError(422, "Invalid", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def forbidden(identity: str, method: str, path: str) -> ApiError:
    """Worded as the real server's RBAC denial (without its resource breakdown)."""
    return ApiError(403, "Forbidden", f'"{identity}" cannot {method.lower()} {path}: forbidden by the emulator')


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def page_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource "
                    f"({method})")


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")


def internal_error(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}",
                    {"causes": [{"message": message}]})


def too_many_requests(retry_after: float) -> ApiError:
    seconds = max(1, round(retry_after))
    return ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                    {"retryAfterSeconds": seconds}, headers={"Retry-After": str(seconds)})


def timeout(message: str) -> ApiError:
    return ApiError(504, "Timeout", message)
