"""Retries with exponential backoff (tenacity), honouring ``Retry-After``."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .models import TransferConfig


class Retryable(Exception):
    """A transient failure: try again after a pause (at least ``retry_after`` seconds when given)."""

    def __init__(
        self, message: str, retry_after: float | None = None, resign: bool = False, final: Exception | None = None
    ):
        super().__init__(message)
        self.retry_after = retry_after
        self.resign = resign
        """The URL was refused (expired?): sign a fresh one before the next try."""
        self.final = final
        """What to raise instead when the tries run out (e.g. the API's error)."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (only the delta-seconds form; dates are ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class _Wait:
    """Exponential backoff with jitter, but never shorter than the server's ``Retry-After``."""

    def __init__(self, config: TransferConfig):
        self._backoff = wait_exponential_jitter(
            initial=config.backoff_initial, max=config.backoff_max, jitter=config.backoff_initial
        )
        self._max = config.backoff_max

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self._backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        after: float | None = getattr(error, "retry_after", None)
        return max(wait, min(after, self._max)) if after else wait


def retrying(
    config: TransferConfig,
    sleep: Callable[[float], None],
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Retryable,
) -> Retrying:
    """A tenacity ``Retrying``: ``config.max_attempts`` tries, retrying ``retry_on`` exceptions.

    Use as ``for attempt in retrying(...): with attempt: ...``; the last
    error is re-raised as itself when the tries run out.

    :param sleep: how to wait (injected: tests pass a fake, transfers pass an
        interruptible wait).
    """
    return Retrying(
        stop=stop_after_attempt(config.max_attempts),
        wait=_Wait(config),
        retry=retry_if_exception(lambda e: isinstance(e, retry_on)),
        sleep=sleep,
        reraise=True,
    )
