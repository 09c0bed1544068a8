"""What every console page shares: the session and scope check, the CSRF check of a form, rendering
in the reader's language, and the display helpers (money, times, ages) the templates use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.console import session as sessions
from app.console.i18n import DEFAULT_LANG, LANGS, translate
from app.db import Database
from app.models.base import utcnow

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
BEIJING = timezone(timedelta(hours=8))  # the cooperative's clock; times are shown in it

# (path, catalogue key, scope) of the navigation, in order; a link shows only with its scope.
NAV = (
    ("/console/", "nav_overview", "operator"),
    ("/console/shops", "nav_shops", "operator"),
    ("/console/stock", "nav_stock", "stock:read"),
    ("/console/orders", "nav_orders", "orders:read"),
    ("/console/refunds", "nav_refunds", "orders:read"),
    ("/console/shipments", "nav_shipments", "fulfillment"),
    ("/console/resyncs", "nav_resyncs", "operator"),
    ("/console/inbox", "nav_inbox", "operator"),
    ("/console/settlements", "nav_settlements", "operator"),
)


class ConsoleRefusal(Exception):
    """Answered as an HTML page (or a redirect to sign-in) by the handler ``install`` registers."""

    def __init__(self, status: int, message_key: str, redirect: str | None = None, **values: Any) -> None:
        super().__init__(message_key)
        self.status, self.message_key, self.redirect, self.values = status, message_key, redirect, values


@dataclass
class Ctx:
    request: Request
    session: sessions.ConsoleSession
    lang: str
    form: dict[str, str]

    @property
    def db(self) -> Database:
        return self.request.app.state.db

    @property
    def settings(self):
        return self.request.app.state.settings

    def t(self, key: str, **values: Any) -> str:
        return translate(key, self.lang, **values)


def lang_of(request: Request) -> str:
    lang = request.cookies.get(sessions.LANG_COOKIE, DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def key_of(request: Request) -> bytes:
    return sessions.signing_key(request.app.state.settings)


async def _session(request: Request) -> sessions.ConsoleSession | None:
    return await sessions.load_session(request.app.state.db, request.app.state.settings, key_of(request),
                                       request.cookies.get(sessions.COOKIE))


def page(scope: str):
    """A GET page's dependency: signed in (else to the sign-in page) with ``scope`` (else 403)."""

    async def _ctx(request: Request) -> Ctx:
        current = await _session(request)
        if current is None:
            raise ConsoleRefusal(303, "sign_in", redirect="/console/login?" + urlencode({"next": _here(request)}))
        if not current.principal.has(scope):
            raise ConsoleRefusal(403, "forbidden", scope=scope)
        return Ctx(request, current, lang_of(request), {})

    return _ctx


def action(scope: str):
    """A form post's dependency: a live session, its CSRF token, and ``scope``; otherwise 403 before
    anything is read or written (an expired session is not sent to sign in: its form is stale)."""

    async def _ctx(request: Request) -> Ctx:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        current = await _session(request)
        if current is None or not sessions.csrf_ok(key_of(request), current.nonce, form.get("csrf")):
            raise ConsoleRefusal(403, "csrf_failed")
        if not current.principal.has(scope):
            raise ConsoleRefusal(403, "forbidden", scope=scope)
        return Ctx(request, current, lang_of(request), form)

    return _ctx


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def safe_next(value: str | None) -> str:
    """Only a console path: a sign-in link cannot send the operator to another site (open redirect)."""
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console/"


def render(request: Request, template: str, *, ctx: Ctx | None = None, status_code: int = 200, lang: str | None = None,
           **values: Any) -> HTMLResponse:
    lang = ctx.lang if ctx else (lang or lang_of(request))
    principal = ctx.session.principal if ctx else None
    nav = [(path, key) for path, key, scope in NAV if principal is not None and principal.has(scope)]
    return templates.TemplateResponse(request, template, {
        "t": lambda key, **kw: translate(key, lang, **kw), "lang": lang, "principal": principal,
        "csrf": ctx.session.csrf if ctx else values.pop("csrf", ""), "nav": nav, "path": request.url.path,
        "here": _here(request), "notice": request.query_params.get("notice"),
        "error": request.query_params.get("error"), "money": money, "when": when, "ago": lambda v: ago(v, lang),
        **values}, status_code=status_code, headers={"Cache-Control": "no-store"})


def back(url: str, *, notice: str | None = None, error: str | None = None, **values: Any) -> RedirectResponse:
    """303 to ``url`` with a notice (a catalogue key) or an error text to show there."""
    params = {k: v for k, v in {"notice": notice, "error": error, **values}.items() if v is not None}
    sep = "&" if "?" in url else "?"
    return RedirectResponse(url + (sep + urlencode(params) if params else ""), status_code=303)


def money(minor: int | None, currency: str = "CNY") -> str:
    if minor is None:
        return "—"
    sign = "-" if minor < 0 else ""
    symbol = "¥" if currency == "CNY" else f"{currency} "
    return f"{sign}{symbol}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def when(value: datetime | None) -> str:
    value = aware(value)
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M") if value else "—"


def ago(value: datetime | None, lang: str) -> str:
    value = aware(value)
    if value is None:
        return translate("never", lang)
    seconds = max(0, int((utcnow() - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return translate(f"ago_{unit}", lang, n=seconds // size)
    return translate("ago_s", lang, n=seconds)


def csrf_for_login(request: Request, nonce: str) -> str:
    return sessions.csrf_token(key_of(request), "login|" + nonce)


def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
