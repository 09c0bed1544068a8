"""Job name → handler, for every kind of background work."""

from __future__ import annotations

from app.dividends.delivery import dividend_handlers
from app.sync.inbox import handle_inbox_apply
from app.sync.pull import pull_handlers
from app.sync.push import PUSH_JOB, handle_stock_push
from app.workers.maintenance import PRUNE_JOB, handle_prune
from app.workers.runner import Handler


def default_handlers() -> dict[str, Handler]:
    handlers: dict[str, Handler] = {
        "inbox.apply": handle_inbox_apply,
        PUSH_JOB: handle_stock_push,
        PRUNE_JOB: handle_prune,
    }
    handlers.update(pull_handlers())
    handlers.update(dividend_handlers())
    return handlers
