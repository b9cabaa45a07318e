"""`Status` errors of the Kubernetes API emulator, worded as the real API server words them.

Clients branch on `reason` and `code` (leader election treats only a 404 as "create the lock"), and people read
`message`, so both follow the real server's texts.
"""

from __future__ import annotations

from typing import Any

from kubevip_testbed.emulators.kubeapi_resources import ResourceDef


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
    return invalid_causes(r, name, [(field, cause_reason, detail)])


def invalid_causes(r: ResourceDef, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid for field errors (field, reason, detail); several are listed in brackets, as the real server."""
    details: dict[str, Any] = {"name": name}
    if r.group:
        details["group"] = r.group
    details["kind"] = r.kind
    details["causes"] = [{"reason": reason, "message": detail, "field": field} for field, reason, detail in causes]
    listed = [f"{field}: {detail}" for field, _, detail in causes]
    text = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    return ApiError(422, "Invalid", f'{r.qualified_kind} "{name}" is invalid: {text}', details)


def resource_version_required(r: ResourceDef, name: str) -> ApiError:
    """The registry's answer to an unconditional PUT of a kind that does not allow one (Leases)."""
    detail = "Invalid value: 0: must be specified for an update"
    details = {**resource_details(r, name),
               "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": "metadata.resourceVersion"}]}
    return ApiError(422, "Invalid", f'{r.qualified} "{name}" is invalid: metadata.resourceVersion: {detail}', details)


def cannot_decode(r: ResourceDef, error: str) -> ApiError:
    """A body the server's decoder refuses (a field of the wrong JSON type, a malformed time)."""
    return ApiError(400, "BadRequest", f'{r.kind} in version "{r.version}" cannot be handled as a {r.kind}: {error}')


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unprocessable() -> ApiError:
    """The real server's answer to a JSON patch that cannot be applied (a failed `test`, a missing path)."""
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our request", {})


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def forbidden(user: str, verb: str, r: ResourceDef, namespace: str | None, name: str | None,
              subresource: str | None = None) -> ApiError:
    """Worded as the real server's RBAC denial of a resource request."""
    subject = f'{r.qualified} "{name}"' if name else r.qualified
    resource = f"{r.plural}/{subresource}" if subresource else r.plural
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    details = resource_details(r, name) if name else resource_details(r, "")
    if not name:
        del details["name"]
    return ApiError(403, "Forbidden", f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                    f'in API group "{r.group}" {scope}', details)


def forbidden_path(user: str, method: str, path: str) -> ApiError:
    """The real server's RBAC denial of a non-resource path (discovery, anything unknown)."""
    return ApiError(403, "Forbidden", f'forbidden: User "{user}" cannot {method.lower()} path "{path}"', {})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def page_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource "
                    f"({method})")


def unsupported_media_type() -> ApiError:
    """A create or update body in a format the server does not decode."""
    return ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media "
                    "types include: application/json, application/yaml, application/vnd.kubernetes.protobuf")


def unsupported_patch_type() -> ApiError:
    """A PATCH whose Content-Type is not a patch format the server (or here, the emulator) applies."""
    return ApiError(415, "UnsupportedMediaType", "415: Unsupported Media Type", {})


def internal_error(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}",
                    {"causes": [{"message": message}]})


def too_many_requests(retry_after: float) -> ApiError:
    seconds = max(1, round(retry_after))
    return ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                    {"retryAfterSeconds": seconds}, headers={"Retry-After": str(seconds)})


def timeout(message: str) -> ApiError:
    return ApiError(504, "Timeout", message)
