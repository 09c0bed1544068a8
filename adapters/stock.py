"""Stock-push helpers shared by the adapters: one result per listing, and stopping after auth or throttle."""

from __future__ import annotations

from typing import Awaitable, Callable, Generic, Iterable, TypeVar

from adapters.base import PushResult, StockLevel
from adapters.errors import AdapterError, AuthExpiredError, PermanentError, ThrottledError

T = TypeVar("T")

# What one push reports: None for success, a ready PushResult (a refusal with its own words), or the error.
Outcome = PushResult | AdapterError | None

# An expired token or a throttle fails every later call of the batch the same way (and sending them
# anyway lengthens a ban), so the rest is reported with that error instead of being sent.
HALTING: tuple[type[AdapterError], ...] = (AuthExpiredError, ThrottledError)


def failed(level: StockLevel, exc: AdapterError) -> PushResult:
    return PushResult(external_sku_key=level.external_sku_key, ok=False, error=str(exc), error_kind=exc.kind,
                      retry_after_s=getattr(exc, "retry_after_s", None))


def refused(level: StockLevel, error: str) -> PushResult:
    """A permanent refusal worded by the adapter (no platform prefix, unlike an error's ``str``)."""
    return PushResult(external_sku_key=level.external_sku_key, ok=False, error_kind=PermanentError.kind, error=error)


def push_result(level: StockLevel, outcome: Outcome) -> PushResult:
    if outcome is None:
        return PushResult(external_sku_key=level.external_sku_key, ok=True)
    if isinstance(outcome, AdapterError):
        return failed(level, outcome)
    return outcome


class Halt(Generic[T]):
    """Runs the calls of one push until one fails with a ``halt_on`` error; later calls get that error."""

    def __init__(self, halt_on: tuple[type[AdapterError], ...] = HALTING) -> None:
        self.halt_on = halt_on
        self.error: AdapterError | None = None

    async def attempt(self, call: Callable[[], Awaitable[T]]) -> T | AdapterError:
        """``call``'s answer, or the ``AdapterError`` it raised (one bad listing does not fail the others)."""
        if self.error is not None:
            return self.error
        try:
            return await call()
        except self.halt_on as exc:
            self.error = exc
            return exc
        except AdapterError as exc:
            return exc


async def push_each(levels: Iterable[StockLevel], push_one: Callable[[StockLevel], Awaitable[Outcome]], *,
                    halt_on: tuple[type[AdapterError], ...] = HALTING) -> list[PushResult]:
    """One ``push_one`` call per listing, in order, a result each; ``push_one`` raises to fail a listing."""
    halt: Halt[Outcome] = Halt(halt_on)
    return [push_result(level, await halt.attempt(lambda level=level: push_one(level))) for level in levels]
