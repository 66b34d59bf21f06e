"""HTTP plumbing shared by the remote schemes: the client, status classification, small requests with retries.

Statuses map onto the typed errors once, here: 401/403 -> AuthenticationError, 404 -> SourceNotFoundError,
408/425/429/5xx -> retried, any other failure -> PullError. Every message names the source being pulled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping

import httpx

from slm_runtime import __version__

from .errors import AuthenticationError, PullError, SourceNotFoundError, TransferError
from .retry import RETRYABLE_STATUS, RETRYABLE_TRANSPORT, RetryPolicy
from .settings import FetchSettings

__all__ = [
    "RETRYABLE_ERRORS",
    "RetryableStatusError",
    "check_status",
    "describe_error",
    "make_client",
    "request",
    "retry_policy",
]

log = logging.getLogger(__name__)


class RetryableStatusError(Exception):
    """A status that says "try again later" (5xx, 429...)."""

    def __init__(self, status: int, url: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status} from {url}")


#: everything worth another try: transport failures (see retry.py) and "try later" statuses
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (*RETRYABLE_TRANSPORT, RetryableStatusError)


def make_client(settings: FetchSettings) -> httpx.Client:
    """A client with the settings' timeouts that follows redirects (auth is dropped on cross-origin hops)."""
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    return httpx.Client(
        timeout=timeout,
        follow_redirects=True,
        headers={"User-Agent": f"slm-runtime/{__version__}"},
        trust_env=True,
    )


def retry_policy(settings: FetchSettings) -> RetryPolicy:
    return RetryPolicy(max_attempts=settings.max_attempts, base=settings.backoff_base, cap=settings.backoff_max)


def check_status(response: httpx.Response, source: str) -> None:
    """Raise the typed error for a failed response; return quietly on 2xx."""
    status = response.status_code
    if response.is_success:
        return
    url = _public_url(response.request.url)
    if status in (401, 403):
        hint = " (the Hub also answers 401 for a repository that does not exist)" if source.startswith("hf://") else ""
        raise AuthenticationError(
            f"{source}: {url} answered {status} {response.reason_phrase}: the credentials are missing or "
            "not allowed (set HF_TOKEN for hf://, SLM_PULL_AUTHORIZATION for https://, or check access)" + hint
        )
    if status == 404:
        raise SourceNotFoundError(
            f"{source}: {url} answered 404 Not Found: check the name, tag, path or revision in spec.model.source"
        )
    if status in RETRYABLE_STATUS:
        raise RetryableStatusError(status, url)
    raise PullError(f"{source}: {url} answered {status} {response.reason_phrase}")


def request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    source: str,
    policy: RetryPolicy,
    headers: Mapping[str, str] | None = None,
    follow_redirects: bool = True,
    accept: Collection[int] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """A small (fully read) request, retried on transport errors and retryable statuses.

    Statuses in ``accept`` (e.g. a 401 carrying an auth challenge) are returned instead of raised.
    """
    failures = 0
    while True:
        try:
            response = client.request(method, url, headers=headers, follow_redirects=follow_redirects)
            if not (300 <= response.status_code < 400 or response.status_code in accept):
                check_status(response, source)
            return response
        except RETRYABLE_ERRORS as exc:
            failures += 1
            if policy.gives_up_after(failures):
                raise TransferError(
                    f"{source}: {method} {url} failed {failures} times, last: {describe_error(exc)}"
                ) from exc
            delay = policy.delay(failures)
            log.warning(
                "%s: %s; retry %d/%d in %.1fs",
                source,
                describe_error(exc),
                failures,
                policy.max_attempts - 1,
                delay,
            )
            sleep(delay)


def describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, RetryableStatusError) else text


def _public_url(url: httpx.URL) -> str:
    """The URL without its query (signed CDN URLs carry credentials there)."""
    return str(url.copy_with(query=None, fragment=None))
