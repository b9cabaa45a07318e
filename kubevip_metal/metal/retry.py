"""Retrying calls to the Metal API: 429, 5xx and connection errors, never other 4xx.

Waits are exponential with jitter, except that a server's `Retry-After` (seconds or an HTTP date) or
`X-RateLimit-Reset` (unix seconds) is honoured when it asks for longer: hammering a rate-limited API only
extends the outage.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import tenacity

T = TypeVar("T")

MAX_WAIT = 30.0


# Failed Metal API requests (every attempt, retried or not) by HTTP status, "network" when there was none; the
# whole process's, read by kubevip_metal.metrics
errors_by_status: dict[str, int] = {}


def _count_error(exc: BaseException) -> None:
    status = status_of(exc)
    key = str(status) if status is not None and status > 0 else "network"
    errors_by_status[key] = errors_by_status.get(key, 0) + 1


class MetalApiError(Exception):
    """A Metal API call failed for good (a 4xx other than 429, or retries exhausted). Carries no token."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def retryable(exc: BaseException) -> bool:
    status = status_of(exc)
    if status is not None and status > 0:
        return status == 429 or status >= 500
    from urllib3.exceptions import HTTPError

    return isinstance(exc, HTTPError | OSError | TimeoutError)


def _headers(exc: BaseException) -> Mapping[str, str]:
    headers = getattr(exc, "headers", None) or {}
    try:
        return {str(k).lower(): str(v) for k, v in dict(headers).items()}
    except (TypeError, ValueError):
        return {}


def server_wait(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait, from Retry-After or X-RateLimit-Reset."""
    headers = _headers(exc)
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(retry_after) if retry_after else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - now())
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - now())
        except ValueError:
            return None
    return None


class _Wait(tenacity.wait.wait_base):
    """Jittered exponential backoff, stretched to what the server asked for."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._backoff = tenacity.wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)
        self._maximum = maximum

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        asked = server_wait(exc) if exc is not None else None
        return min(MAX_WAIT, max(backoff, asked)) if asked is not None else backoff


def call(operation: str, fn: Callable[[], T], *, attempts: int = 6, initial: float = 0.2, maximum: float = 10.0,
         sleep: Callable[[float], None] = time.sleep, on_retry: Callable[[str, BaseException, float], None]
         | None = None) -> T:
    """Run `fn` with retries; raise MetalApiError (never the SDK's exception, whose text may be large)."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(operation, exc, state.next_action.sleep)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retryable),
        wait=_Wait(initial, maximum),
        stop=tenacity.stop_after_attempt(attempts),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    def counted() -> T:
        try:
            return fn()
        except Exception as exc:
            _count_error(exc)
            raise

    try:
        return retrying(counted)
    except Exception as exc:
        status = status_of(exc)
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise MetalApiError(f"{operation}: {'HTTP ' + str(status) + ' ' if status else ''}{reason}", status) from None


def describe_error(exc: Any) -> str:
    """A short, token-free description of an error for logs."""
    status = status_of(exc)
    return f"HTTP {status}" if status else type(exc).__name__
