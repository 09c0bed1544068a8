"""The operator console (an edge, like ``app.api``): server-rendered pages under ``/console``, in
Chinese by default with an English switch, calling the same services as the API."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.console.pages import router
from app.console.web import HERE, ConsoleRefusal, render


def install(app: FastAPI) -> None:
    """Mount the console's routes, its stylesheet and the page that answers a refusal."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")), name="console-static")

    @app.exception_handler(ConsoleRefusal)
    async def _refused(request: Request, exc: ConsoleRefusal):
        if exc.redirect:
            return RedirectResponse(exc.redirect, status_code=303)
        return render(request, "error.html", status_code=exc.status, message_key=exc.message_key,
                      message_values=exc.values)
