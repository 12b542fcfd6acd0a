"""Token lifecycle: create (secret shown once), list, revoke, authenticate.

A bearer value is ``<token id>.<secret>``: the id finds the row, the secret is checked
against its keyed hash in constant time.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update

from headless_ops.auth.scopes import Scope, parse_scopes
from headless_ops.crypto import TokenHasher
from headless_ops.errors import NotFound, Unauthorized
from headless_ops.ids import new_id
from headless_ops.store.db import Database
from headless_ops.store.schema import api_tokens, tenants
from headless_ops.timeutil import utcnow

__all__ = [
    "Principal",
    "TokenInfo",
    "authenticate",
    "create_token",
    "ensure_tenant",
    "list_tokens",
    "revoke_token",
]

_BEARER = re.compile(r"^(tok_[0-9a-z]{1,40})\.([A-Za-z0-9_-]{20,100})$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token of one tenant with its scopes."""

    token_id: str
    tenant_id: str
    scopes: frozenset[Scope]

    def has(self, scope: Scope) -> bool:
        """Whether the token carries ``scope`` (``admin`` carries all)."""
        return Scope.ADMIN in self.scopes or scope in self.scopes


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed (never its secret)."""

    id: str
    tenant: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


async def ensure_tenant(db: Database, name: str) -> str:
    """The id of tenant ``name``, created when missing."""
    async with db.write() as conn:
        row = (await conn.execute(select(tenants.c.id).where(tenants.c.name == name))).first()
        if row is not None:
            return str(row.id)
        tenant_id = new_id("ten", 8)
        await conn.execute(insert(tenants).values(id=tenant_id, name=name, created_at=utcnow()))
        return tenant_id


async def create_token(
    db: Database,
    hasher: TokenHasher,
    *,
    tenant: str,
    name: str,
    scopes: list[str] | str,
    expires_at: datetime | None = None,
) -> tuple[str, str]:
    """Create a token for tenant ``tenant`` (by name, created when missing).

    Returns ``(token_id, bearer_value)``; the bearer value is never retrievable again.
    """
    scope_set = parse_scopes(scopes)
    if not scope_set:
        raise ValueError("a token needs at least one scope")
    tenant_id = await ensure_tenant(db, tenant)
    token_id = new_id("tok", 10)
    secret = secrets.token_urlsafe(32)
    async with db.write() as conn:
        await conn.execute(
            insert(api_tokens).values(
                id=token_id,
                tenant_id=tenant_id,
                name=name,
                secret_hash=hasher.hash(secret),
                scopes=" ".join(sorted(s.value for s in scope_set)),
                created_at=utcnow(),
                expires_at=expires_at,
                revoked_at=None,
            )
        )
    return token_id, f"{token_id}.{secret}"


async def list_tokens(db: Database, tenant: str | None = None) -> list[TokenInfo]:
    """Every token (of one tenant when ``tenant`` names it), oldest first."""
    query = (
        select(api_tokens, tenants.c.name.label("tenant_name"))
        .join(tenants, tenants.c.id == api_tokens.c.tenant_id)
        .order_by(api_tokens.c.created_at, api_tokens.c.id)
    )
    if tenant is not None:
        query = query.where(tenants.c.name == tenant)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        TokenInfo(
            id=r.id,
            tenant=r.tenant_name,
            name=r.name,
            scopes=r.scopes.split(),
            created_at=r.created_at,
            expires_at=r.expires_at,
            revoked_at=r.revoked_at,
        )
        for r in rows
    ]


async def revoke_token(db: Database, token_id: str) -> None:
    """Revoke a token at once; NotFound if there is no such token."""
    async with db.write() as conn:
        result = await conn.execute(
            update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=utcnow())
        )
        if result.rowcount == 0:
            raise NotFound(f"no token {token_id}")


# Built once: every request runs it.
_TOKEN_BY_ID = select(
    api_tokens.c.tenant_id,
    api_tokens.c.secret_hash,
    api_tokens.c.scopes,
    api_tokens.c.expires_at,
    api_tokens.c.revoked_at,
).where(api_tokens.c.id == bindparam("token_id"))


async def authenticate(db: Database, hasher: TokenHasher, authorization: str | None) -> Principal:
    """The principal of an ``Authorization: Bearer …`` header, or :class:`Unauthorized`."""
    if not authorization:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    match = _BEARER.match(value.strip())
    if match is None:
        raise Unauthorized("malformed bearer token")
    token_id, secret = match.groups()
    # Every request does this: a primary-key read, on the cheapest path.
    async with db.lookup() as conn:
        row = (await conn.execute(_TOKEN_BY_ID, {"token_id": token_id})).first()
    # The hash is computed even for an unknown id so timing does not tell ids apart.
    stored = row.secret_hash if row is not None else "0" * 64
    if not hasher.verify(secret, stored) or row is None:
        raise Unauthorized("invalid token")
    if row.revoked_at is not None:
        raise Unauthorized("token revoked")
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise Unauthorized("token expired")
    return Principal(token_id, row.tenant_id, parse_scopes(row.scopes))
