"""The console's routes: each page reads through the models, each form calls the service the API calls,
in one transaction, and answers 303 back to the page with a notice or the service's refusal."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select

from app.api.stores import public_base, webhook_url
from app.console import queries
from app.console import session as sessions
from app.console.i18n import LANGS
from app.console.web import BEIJING, Ctx, action, back, csrf_for_login, page, render, safe_next
from app.models import (DeliveryAttempt, InboxItem, Listing, MemberShare, Order, OrderLine, Refund, RefundLine,
                        Resync, Settlement, SettlementLine, Shipment, Sku, StockMovement, Store, StoreSettings)
from app.services import connections, pull, shipments, stores
from app.services.aftersales import InspectedLine, inspect_refund
from app.services.apply import replay
from app.services.dividends import requeue_delivery
from app.services.errors import ServiceError
from app.services.push import set_allocation
from app.services.platforms import registry

router = APIRouter(prefix="/console", include_in_schema=False)

Operator = Annotated[Ctx, Depends(page("operator"))]
AdminAction = Annotated[Ctx, Depends(action("admin"))]
OperatorAction = Annotated[Ctx, Depends(action("operator"))]
ANY_ACTION = Annotated[Ctx, Depends(action("stock:read"))]  # signing out needs a session, nothing more
RESOURCES = ("orders", "refunds", "inventory", "bills")
ENDED = ("succeeded", "failed", "cancelled")
MAX_SHARE_WEIGHT = 1_000_000  # the API's bounds (app/api/schemas.py AllocationPolicy)
MAX_CAP = 10_000_000


# -- signing in and out, the language ---------------------------------------------------------------

@router.get("/login")
async def login_form(request: Request, next: str = "/console/", failed: bool = False):
    nonce = secrets.token_urlsafe(16)
    response = render(request, "login.html", csrf=csrf_for_login(request, nonce), next=safe_next(next),
                      failed=failed, status_code=401 if failed else 200)
    response.set_cookie(sessions.LOGIN_COOKIE, nonce, max_age=sessions.LOGIN_TTL_S, httponly=True,
                        samesite="strict", path="/console")
    return response


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    nonce = request.cookies.get(sessions.LOGIN_COOKIE, "")
    given = str(form.get("csrf", ""))
    if not nonce or not secrets.compare_digest(csrf_for_login(request, nonce), given):
        return render(request, "error.html", status_code=403, message_key="csrf_failed")
    found = await sessions.principal_for_token(request.app.state.db, request.app.state.settings,
                                               str(form.get("token", "")))
    target = safe_next(str(form.get("next", "")))
    if found is None:
        return back("/console/login", failed="1", next=target)
    _, digest = found
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(sessions.COOKIE, sessions.new_session_cookie(sessions.signing_key(request.app.state.settings),
                                                                     digest),
                        max_age=sessions.SESSION_TTL_S, httponly=True, samesite="strict", path="/console",
                        secure=request.url.scheme == "https")
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout")
async def logout(ctx: ANY_ACTION):
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/console")
    return response


@router.get("/lang/{lang}")
async def switch_language(lang: str, next: str = "/console/"):
    """A preference, not an action: a plain link, no CSRF token needed."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in LANGS:
        response.set_cookie(sessions.LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict", path="/console")
    return response


@router.get("")
async def console_root():
    return RedirectResponse("/console/", status_code=307)


@router.get("/")
async def overview(request: Request, ctx: Annotated[Ctx, Depends(page("stock:read"))]):
    if not ctx.session.principal.has("operator"):  # a narrower token lands on the first page it may see
        first = "/console/stock" if ctx.session.principal.has("stock:read") else "/console/orders"
        return RedirectResponse(first, status_code=303)
    async with ctx.db.read() as session:
        data = await queries.overview(session)
    peak = max((n for _, n in data["sold"]), default=0)
    return render(request, "overview.html", ctx=ctx, peak=peak, **data)


# -- shops ---------------------------------------------------------------------------------------

def _json_field(ctx: Ctx, name: str) -> dict:
    text = ctx.form.get(name, "").strip() or "{}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ServiceError(ctx.t("json_invalid", detail=str(exc))) from None
    if not isinstance(value, dict):
        raise ServiceError(ctx.t("json_invalid", detail="{…}"))
    return value


@router.get("/shops")
async def shop_list(request: Request, ctx: Operator):
    async with ctx.db.read() as session:
        data = await queries.overview(session)
    return render(request, "shops.html", ctx=ctx, shops=data["shops"], platforms=sorted(registry()))


@router.post("/shops")
async def shop_create(ctx: AdminAction):
    try:
        settings = StoreSettings.model_validate(_json_field(ctx, "settings"))
        credentials = stores.checked_credentials(ctx.form.get("platform", ""), _json_field(ctx, "credentials"))
        async with ctx.db.transaction() as session:
            store = await stores.create_store(
                session, platform=ctx.form.get("platform", ""), name=ctx.form.get("name", "").strip() or "?",
                external_shop_id=ctx.form.get("external_shop_id") or None,
                webhook_secret=ctx.form.get("webhook_secret") or None, credentials=credentials, settings=settings)
            store_id = store.id
    except ValidationError as exc:
        return back("/console/shops", error=str(exc.errors()[0].get("msg")))
    except ServiceError as exc:
        return back("/console/shops", error=exc.detail)
    return back(f"/console/shops/{store_id}", notice="shop_created")


async def _shop_page(request: Request, ctx: Ctx, store_id: int, *, new_secret: str | None = None):
    async with ctx.db.read() as session:
        store = await session.get(Store, store_id)
        if store is None:
            return render(request, "error.html", ctx=ctx, status_code=404, message_key="not_found")
        rows = (await session.execute(
            select(Listing, Sku.sku).outerjoin(Sku, Sku.id == Listing.sku_id).where(Listing.store_id == store_id)
            .order_by(Listing.sku_id.is_not(None), Listing.id))).all()  # the unbound ones first
        skus = await queries.skus(session)
    return render(request, "shop.html", ctx=ctx, store=store, auth=connections.auth_state(store), listings=rows,
                  skus=skus, settings_json=json.dumps(store.options.stored(), ensure_ascii=False, indent=2),
                  hook_url=webhook_url(request, store), new_secret=new_secret)


@router.get("/shops/{store_id}")
async def shop_detail(request: Request, store_id: int, ctx: Operator):
    return await _shop_page(request, ctx, store_id)


@router.post("/shops/{store_id}/settings")
async def shop_settings(request: Request, store_id: int, ctx: AdminAction):
    here = f"/console/shops/{store_id}"
    try:
        settings = _json_field(ctx, "settings")
        async with ctx.db.transaction() as session:
            await stores.update_store(session, store_id, name=ctx.form.get("name") or None,
                                      external_shop_id=ctx.form.get("external_shop_id") or None, settings=settings)
    except ServiceError as exc:
        return back(here, error=exc.detail)
    request.app.state.store_cache.pop(store_id, None)
    return back(here, notice="shop_saved")


@router.post("/shops/{store_id}/webhook-secret")
async def shop_rotate_secret(request: Request, store_id: int, ctx: AdminAction):
    secret = ctx.form.get("webhook_secret", "").strip() or secrets.token_urlsafe(24)
    try:
        async with ctx.db.transaction() as session:
            await stores.update_store(session, store_id, webhook_secret=secret)
    except ServiceError as exc:
        return back(f"/console/shops/{store_id}", error=exc.detail)
    request.app.state.store_cache.pop(store_id, None)
    return await _shop_page(request, ctx, store_id, new_secret=secret)  # shown this once, never again


@router.post("/shops/{store_id}/authorize")
async def shop_authorize(request: Request, store_id: int, ctx: OperatorAction):
    try:
        started = await connections.start_authorization(ctx.db, store_id, public_base(request))
    except ServiceError as exc:
        return back(f"/console/shops/{store_id}", error=exc.detail)
    request.app.state.store_cache.pop(store_id, None)
    if started.authorize_url:
        return RedirectResponse(started.authorize_url, status_code=303)
    return back(f"/console/shops/{store_id}", notice="connected_ok")


@router.post("/shops/{store_id}/listings")
async def shop_bind(store_id: int, ctx: OperatorAction):
    binding = stores.Binding(external_sku_key=ctx.form.get("external_sku_key", ""), sku=ctx.form.get("sku") or None)
    try:
        async with ctx.db.transaction() as session:
            [bound] = await stores.bind_listings(session, store_id, [binding])
            lines = bound.lines_bound
    except ServiceError as exc:
        return back(f"/console/shops/{store_id}", error=exc.detail)
    return back(f"/console/shops/{store_id}", notice="bound_ok", n=lines)


# -- stock ---------------------------------------------------------------------------------------

@router.get("/stock")
async def stock_list(request: Request, ctx: Annotated[Ctx, Depends(page("stock:read"))]):
    async with ctx.db.read() as session:
        skus = await queries.skus(session)
        told = await queries.listings_by_sku(session, [s.id for s in skus])
    return render(request, "stock.html", ctx=ctx, skus=skus, told=told)


@router.get("/stock/{sku}")
async def stock_ledger(request: Request, sku: str, ctx: Annotated[Ctx, Depends(page("stock:read"))]):
    async with ctx.db.read() as session:
        row = (await session.execute(select(Sku).where(Sku.sku == sku))).scalar_one_or_none()
        if row is None:
            return render(request, "error.html", ctx=ctx, status_code=404, message_key="not_found")
        movements = (await session.execute(select(StockMovement).where(StockMovement.sku_id == row.id)
                                           .order_by(StockMovement.id.desc()).limit(queries.LIST_LIMIT))).scalars()
        told = await queries.listings_by_sku(session, [row.id])
        days = await queries.sku_days(session, row.id)
    policy = row.allocation or {"mode": "shared", "shares": {}, "caps": {}}
    shops = sorted({name for day in days for name in day.sold})
    peak = max([d.on_hand for d in days] + [sum(d.sold.values()) for d in days] + [1])
    return render(request, "ledger.html", ctx=ctx, sku=row, movements=list(movements), told=told.get(row.id, []),
                  policy=policy, can_allocate=ctx.session.principal.has("stock:write"), days=days,
                  chart_shops=shops, chart_peak=peak)


def _bounded(value: str, upper: int) -> int | None:
    """A form's whole number in 0..upper, or None when left empty; anything else is refused."""
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) > upper:
        raise ServiceError(f"{value!r}: a whole number from 0 to {upper}")
    return int(value)


@router.post("/stock/{sku}/allocation")
async def stock_allocation(sku: str, ctx: Annotated[Ctx, Depends(action("stock:write"))]):
    """The allocation rules editor: the same policy, checks and re-plan as ``PUT /v1/stock/{sku}/allocation``."""
    mode = ctx.form.get("mode", "shared")
    shares: dict[str, int] = {}
    caps: dict[str, int] = {}
    try:
        if mode not in ("shared", "shares"):
            raise ServiceError(f"mode {mode!r}: shared or shares")
        for key in ctx.form:
            kind, _, store_id = key.partition(":")
            if kind in ("share", "cap") and store_id.isdigit():
                value = _bounded(ctx.form.get(key, ""), MAX_SHARE_WEIGHT if kind == "share" else MAX_CAP)
                if value is not None:
                    (shares if kind == "share" else caps)[store_id] = value
        async with ctx.db.transaction() as session:
            row = (await session.execute(select(Sku).where(Sku.sku == sku).with_for_update())).scalar_one_or_none()
            if row is None:
                raise ServiceError(f"no sku {sku}")
            # The editor sets mode, weights and caps; per-store rules, a lock and the sales-speed buffer
            # switch set through the API are kept as they are.
            kept = {k: v for k, v in (row.allocation or {}).items() if k in ("stores", "lock", "sales_speed_buffer")}
            await set_allocation(session, row, {**kept, "mode": mode, "shares": shares if mode == "shares" else {},
                                                "caps": caps if mode == "shares" else {}})
    except ServiceError as exc:
        return back(f"/console/stock/{sku}", error=exc.detail)
    return back(f"/console/stock/{sku}", notice="allocation_ok")


# -- orders, refunds, shipments ----------------------------------------------------------------------

OrdersRead = Annotated[Ctx, Depends(page("orders:read"))]


@router.get("/orders")
async def order_list(request: Request, ctx: OrdersRead, store_id: str = "", status: str = "", oversold: str = "",
                     q: str = ""):
    stmt = select(Order, Store.name).join(Store, Store.id == Order.store_id)
    if store_id.isdigit():
        stmt = stmt.where(Order.store_id == int(store_id))
    if status:
        stmt = stmt.where(Order.status == status)
    if oversold:
        stmt = stmt.where(Order.oversold.is_(True))
    if q.strip():
        stmt = stmt.where(Order.external_id == q.strip())
    async with ctx.db.read() as session:
        rows = (await session.execute(stmt.order_by(Order.id.desc()).limit(queries.LIST_LIMIT))).all()
        shops = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
    return render(request, "orders.html", ctx=ctx, rows=rows, shops=shops,
                  filters={"store_id": store_id, "status": status, "oversold": oversold, "q": q})


@router.get("/orders/{order_id}")
async def order_detail(request: Request, order_id: int, ctx: OrdersRead):
    async with ctx.db.read() as session:
        order = await session.get(Order, order_id)
        if order is None:
            return render(request, "error.html", ctx=ctx, status_code=404, message_key="not_found")
        store = await session.get(Store, order.store_id)
        lines = (await session.execute(select(OrderLine, Sku.sku).outerjoin(Sku, Sku.id == OrderLine.sku_id)
                                       .where(OrderLine.order_id == order_id).order_by(OrderLine.line_no))).all()
        refunds = (await session.execute(select(Refund).where(Refund.order_id == order_id)
                                         .order_by(Refund.id))).scalars().all()
        parcels = (await session.execute(select(Shipment).where(Shipment.order_id == order_id)
                                         .order_by(Shipment.id))).scalars().all()
        statement = await session.get(Settlement, order.settlement_id) if order.settlement_id else None
    return render(request, "order.html", ctx=ctx, order=order, store=store, lines=lines, refunds=refunds,
                  parcels=parcels, statement=statement)


@router.get("/refunds")
async def refund_list(request: Request, ctx: OrdersRead, awaiting: str = "", store_id: str = ""):
    stmt = select(Refund, Store.name).join(Store, Store.id == Refund.store_id)
    if awaiting:
        stmt = stmt.where(Refund.return_status == queries.AWAITING_INSPECTION)
    if store_id.isdigit():
        stmt = stmt.where(Refund.store_id == int(store_id))
    async with ctx.db.read() as session:
        rows = (await session.execute(stmt.order_by(Refund.id.desc()).limit(queries.LIST_LIMIT))).all()
    return render(request, "refunds.html", ctx=ctx, rows=rows, awaiting=awaiting)


@router.get("/refunds/{refund_id}")
async def refund_detail(request: Request, refund_id: int, ctx: OrdersRead):
    async with ctx.db.read() as session:
        refund = await session.get(Refund, refund_id)
        if refund is None:
            return render(request, "error.html", ctx=ctx, status_code=404, message_key="not_found")
        lines = (await session.execute(
            select(RefundLine, OrderLine, Sku.sku).outerjoin(OrderLine, OrderLine.id == RefundLine.order_line_id)
            .outerjoin(Sku, Sku.id == OrderLine.sku_id).where(RefundLine.refund_id == refund_id)
            .order_by(RefundLine.line_no))).all()
    can_inspect = ctx.session.principal.has("fulfillment") and any(
        rl.restock == "return" and rl.order_line_id for rl, _, _ in lines)
    return render(request, "refund.html", ctx=ctx, refund=refund, lines=lines, can_inspect=can_inspect)


@router.post("/refunds/{refund_id}/inspection")
async def refund_inspect(refund_id: int, ctx: Annotated[Ctx, Depends(action("fulfillment"))]):
    here = f"/console/refunds/{refund_id}"
    inspected = []
    for name, value in ctx.form.items():
        if name.startswith("good_") and name[5:].isdigit():
            line_id = int(name[5:])
            good, defective = _count(value), _count(ctx.form.get(f"defective_{line_id}", "0"))
            if good is None or defective is None:
                return back(here, error="good / defective: 0 or more")
            if good or defective:
                inspected.append(InspectedLine(line_id=line_id, good=good, defective=defective))
    if not inspected:
        return back(here, error="good / defective: 0 or more")
    try:
        async with ctx.db.transaction() as session:
            await inspect_refund(session, refund_id, inspected)
    except ServiceError as exc:
        return back(here, error=exc.detail)
    return back(here, notice="inspected_ok")


def _count(value: str) -> int | None:
    value = (value or "0").strip()
    return int(value) if value.isdigit() and int(value) < 10**9 else None


@router.get("/shipments")
async def shipment_list(request: Request, ctx: Annotated[Ctx, Depends(page("fulfillment"))], status: str = "failed"):
    stmt = select(Shipment, Order.external_id).join(Order, Order.id == Shipment.order_id)
    if status == "failed":
        stmt = stmt.where(Shipment.status.in_(queries.FAILED_SHIPMENT))
    async with ctx.db.read() as session:
        rows = (await session.execute(stmt.order_by(Shipment.id.desc()).limit(queries.LIST_LIMIT))).all()
    return render(request, "shipments.html", ctx=ctx, rows=rows, status=status)


@router.post("/shipments/{shipment_id}/retry")
async def shipment_retry(shipment_id: int, ctx: Annotated[Ctx, Depends(action("fulfillment"))]):
    try:
        async with ctx.db.transaction() as session:
            await shipments.requeue_shipment(session, shipment_id)
    except ServiceError as exc:
        return back("/console/shipments", error=exc.detail)
    return back("/console/shipments", notice="retried_ok")


# -- resyncs ---------------------------------------------------------------------------------------

def _beijing(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=BEIJING) if value else None
    except ValueError:
        raise ServiceError(f"not a time: {value!r}") from None


@router.get("/resyncs")
async def resync_list(request: Request, ctx: Operator):
    async with ctx.db.read() as session:
        rows = (await session.execute(select(Resync, Store.name).join(Store, Store.id == Resync.store_id)
                                      .order_by(Resync.id.desc()).limit(queries.LIST_LIMIT))).all()
        shops = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
    now = datetime.now(BEIJING).replace(second=0, microsecond=0, tzinfo=None)
    return render(request, "resyncs.html", ctx=ctx, rows=rows, shops=shops, resources=RESOURCES,
                  since=(now - timedelta(days=1)).isoformat(timespec="minutes"),
                  until=now.isoformat(timespec="minutes"))


@router.post("/resyncs")
async def resync_start(ctx: OperatorAction):
    try:
        store_id = int(ctx.form.get("store_id", "0") or 0)
        resource = ctx.form.get("resource", "")
        if resource not in RESOURCES:
            raise ServiceError(f"resource: one of {', '.join(RESOURCES)}")
        since, until = _beijing(ctx.form.get("since", "")), _beijing(ctx.form.get("until", ""))
        async with ctx.db.transaction() as session:
            resync = await pull.create_resync(session, store_id, resource, since, until)
            resync_id = resync.id
    except ValueError:
        return back("/console/resyncs", error="store?")
    except ServiceError as exc:
        return back("/console/resyncs", error=exc.detail)
    return back(f"/console/resyncs/{resync_id}")


@router.get("/resyncs/{resync_id}")
async def resync_detail(request: Request, resync_id: int, ctx: Operator):
    async with ctx.db.read() as session:
        resync = await session.get(Resync, resync_id)
        if resync is None:
            return render(request, "error.html", ctx=ctx, status_code=404, message_key="not_found")
        store = await session.get(Store, resync.store_id)
    return render(request, "resync.html", ctx=ctx, resync=resync, store=store, ended=resync.status in ENDED)


@router.post("/resyncs/{resync_id}/cancel")
async def resync_cancel(resync_id: int, ctx: OperatorAction):
    try:
        async with ctx.db.transaction() as session:
            await pull.cancel_resync(session, resync_id)
    except ServiceError as exc:
        return back(f"/console/resyncs/{resync_id}", error=exc.detail)
    return back(f"/console/resyncs/{resync_id}", notice="cancel_requested")


# -- failed deliveries -----------------------------------------------------------------------------

@router.get("/inbox")
async def inbox_list(request: Request, ctx: Operator):
    async with ctx.db.read() as session:
        rows = (await session.execute(select(InboxItem, Store.name).join(Store, Store.id == InboxItem.store_id)
                                      .where(InboxItem.status == "failed").order_by(InboxItem.id.desc())
                                      .limit(queries.LIST_LIMIT))).all()
    return render(request, "inbox.html", ctx=ctx, rows=rows)


@router.get("/inbox/{inbox_id}")
async def inbox_detail(request: Request, inbox_id: int, ctx: Operator):
    async with ctx.db.read() as session:
        row = await session.get(InboxItem, inbox_id)
        if row is None:
            return render(request, "error.html", ctx=ctx, status_code=404, message_key="not_found")
        store = await session.get(Store, row.store_id)
    headers = queries.redact(dict(row.headers or {}))
    return render(request, "inbox_item.html", ctx=ctx, row=row, store=store, headers=headers,
                  body=queries.payload_text(row.body or b""))


@router.post("/inbox/{inbox_id}/replay")
async def inbox_replay(inbox_id: int, ctx: OperatorAction):
    async with ctx.db.transaction() as session:
        row = await replay(session, inbox_id)
        status = row.status if row is not None else None
    if status is None:
        return back("/console/inbox", error=f"no inbox row {inbox_id}")
    if status == "done":
        return back(f"/console/inbox/{inbox_id}", error=f"inbox row {inbox_id} was applied already")
    return back(f"/console/inbox/{inbox_id}", notice="replayed_ok")


# -- settlements -----------------------------------------------------------------------------------

@router.get("/settlements")
async def settlement_list(request: Request, ctx: Operator, status: str = ""):
    stmt = select(Settlement)
    if status:
        stmt = stmt.where(Settlement.delivery_status == status)
    async with ctx.db.read() as session:
        rows = (await session.execute(stmt.order_by(Settlement.created_at.desc()).limit(queries.LIST_LIMIT))).scalars()
        months, members, peak = await queries.shares_by_month(session)
    return render(request, "settlements.html", ctx=ctx, rows=list(rows), status=status, months=months,
                  members=members, peak=peak)


@router.get("/settlements/{settlement_id}")
async def settlement_detail(request: Request, settlement_id: str, ctx: Operator):
    async with ctx.db.read() as session:
        statement = await session.get(Settlement, settlement_id)
        if statement is None:
            return render(request, "error.html", ctx=ctx, status_code=404, message_key="not_found")
        shares = (await session.execute(select(MemberShare).where(MemberShare.settlement_id == settlement_id)
                                        .order_by(MemberShare.member_id))).scalars().all()
        lines = (await session.execute(select(SettlementLine).where(SettlementLine.settlement_id == settlement_id)
                                       .order_by(SettlementLine.id))).scalars().all()
        attempts = (await session.execute(select(DeliveryAttempt).where(
            DeliveryAttempt.settlement_id == settlement_id).order_by(DeliveryAttempt.attempt_no))).scalars().all()
    return render(request, "settlement.html", ctx=ctx, statement=statement, shares=shares, lines=lines,
                  attempts=attempts)


@router.post("/settlements/{settlement_id}/retry")
async def settlement_retry(request: Request, settlement_id: str, ctx: OperatorAction):
    here = f"/console/settlements/{settlement_id}"
    try:
        async with ctx.db.transaction() as session:
            await requeue_delivery(session, settlement_id, request.app.state.settings)
    except ServiceError as exc:
        return back(here, error=exc.detail)
    return back(here, notice="retried_ok")
