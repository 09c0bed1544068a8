"""Every flow that declares jobs, imported so that the catalogue is complete before workers start."""

from __future__ import annotations

from typing import Mapping

from app.jobs.catalogue import CATALOGUE, JobSpec
from app.services import carriers, shipments  # noqa: F401 - they register
from app.services import apply, connections, dividends, drift, maintenance, pull, push, settlement  # noqa: F401 - they register
from app.services import aftersales  # noqa: F401 - it registers
from app.services import bills  # noqa: F401 - it registers


def default_handlers() -> Mapping[str, JobSpec]:
    """Job name → its declaration (a callable handler with its batch handler, keys and schedule)."""
    return dict(CATALOGUE)
