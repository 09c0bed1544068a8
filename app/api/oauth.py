"""The platforms' OAuth redirect: the single-use ``state`` authenticates it, the code becomes the store's tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import DbDep
from app.api.schemas import ConnectedPublic
from app.api.stores import public_base
from app.services import connections

router = APIRouter(prefix="/oauth", tags=["authorization"])


@router.get("/{platform}/callback", response_model=ConnectedPublic,
            responses={400: {"description": "a forged, reused, expired or incomplete state; nothing changed"}})
async def oauth_callback(request: Request, platform: str, db: DbDep) -> ConnectedPublic:
    """Exchange the code at the platform's token endpoint and keep the tokens; the store's waiting jobs
    resume. Every query parameter is passed on, since some platforms sign the whole redirect (Shopify)."""
    params = {key: value for key, value in request.query_params.items()}
    done = await connections.complete_authorization(db, platform, params, public_base(request))
    request.app.state.store_cache.pop(done.store.id, None)
    auth = connections.auth_state(done.store)
    return ConnectedPublic(status="connected", store_id=done.store.id, platform=done.store.platform,
                           name=done.store.name, shop_id=done.grant.shop_id or done.store.external_shop_id,
                           shop_name=done.grant.shop_name, auth=auth.__dict__)
