"""API tokens for admins: list them (never the token or its hash) and revoke one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from app.api.deps import Admin, DbDep, TokenIdPath
from app.api.schemas import ApiTokenPublic, Page
from app.errors import Problem
from app.models import ApiToken
from app.models.base import utcnow
from app.pagination import MAX_LIMIT, keyset_page

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.get("")
async def list_tokens(db: DbDep, _: Admin, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
                      cursor: str | None = None) -> Page[ApiTokenPublic]:
    """Every token, revoked ones too, oldest first."""
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, select(ApiToken), ApiToken.id, limit=limit, cursor=cursor)
    return Page[ApiTokenPublic](items=[ApiTokenPublic.of(t) for t in rows], next_cursor=next_cursor)


@router.delete("/{token_id}", status_code=204, response_class=Response)
async def revoke_token(token_id: TokenIdPath, db: DbDep, _: Admin) -> Response:
    """Revoke a token: it stops authenticating at once. Revoking it again changes nothing."""
    async with db.transaction() as session:
        token = await session.get(ApiToken, token_id, with_for_update=True)
        if token is None:
            raise Problem(404, f"no token {token_id}")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
    return Response(status_code=204)
