"""Tenants and API keys: making, listing, revoking and checking keys; webhook secrets.

A key is `os_` and 43 URL-safe characters (256 random bits). It is shown once, when made;
the database keeps only its SHA-256 hash (a fast hash is right for a random secret of this
length: there is nothing to guess) and its first characters, to tell keys apart in lists.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from db.repository import tenants as repo
from workers.services.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

KEY_PREFIX = "os_"
#: Characters of a key kept to name it (`os_` and six more).
SHOWN_CHARS = 9


@dataclass(frozen=True)
class NewKey:
    id: str
    tenant_id: str
    tenant: str
    admin: bool
    key: str  # the secret, shown once


@dataclass(frozen=True)
class KeyInfo:
    id: str
    tenant_id: str
    tenant: str
    prefix: str
    admin: bool
    revoked: bool
    created_at: datetime


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: its key and that key's tenant."""

    key_id: str
    tenant_id: str
    admin: bool


@dataclass(frozen=True)
class TenantInfo:
    """A tenant as its keys see it; `webhook_secret` only where the caller may see it."""

    id: str
    name: str
    webhook_secret: str | None


class UnknownTenant(UsageError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no tenant {tenant_id!r}")
        self.tenant_id = tenant_id


class UnknownTenantName(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no tenant named {name!r} (tenants are made by 'keys create')")
        self.name = name


def new_webhook_secret() -> str:
    """256 random bits, hex: what signs a tenant's completion callbacks."""
    return secrets.token_hex(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session_factory: sessionmaker, tenant: str, *, admin: bool = False) -> NewKey:
    """A new key for tenant `tenant` (made, with its webhook secret, when new)."""
    name = tenant.strip()
    if not name or len(name) > 128:
        raise UsageError("a tenant name is 1 to 128 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with session_factory.begin() as session:
        row = repo.get_or_create_tenant(
            session=session, name=name, webhook_secret=new_webhook_secret()
        )
        stored = repo.add_api_key(
            session=session,
            tenant_id=row.id,
            key_hash=hash_key(key),
            prefix=key[:SHOWN_CHARS],
            admin=admin,
        )
        return NewKey(id=stored.id, tenant_id=row.id, tenant=row.name, admin=admin, key=key)


def list_keys(session_factory: sessionmaker) -> list[KeyInfo]:
    with session_factory() as session:
        return [
            KeyInfo(
                id=key.id,
                tenant_id=key.tenant_id,
                tenant=name,
                prefix=key.prefix,
                admin=key.admin,
                revoked=key.revoked,
                created_at=key.created_at,
            )
            for key, name in repo.list_api_keys(session=session)
        ]


def revoke_key(session_factory: sessionmaker, key_id: str) -> None:
    """Revoke the key; raises `UsageError` for an unknown id."""
    with session_factory.begin() as session:
        if not repo.revoke_api_key(session=session, key_id=key_id):
            raise UsageError(f"no API key {key_id!r}")


def authenticate(session_factory: sessionmaker, key: str) -> Caller | None:
    """The caller a presented key stands for; None for an unknown or revoked key."""
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    with session_factory() as session:
        row = repo.key_by_hash(session=session, key_hash=hash_key(key))
        if row is None or row.revoked:
            return None
        return Caller(key_id=row.id, tenant_id=row.tenant_id, admin=row.admin)


def webhook_secret(session_factory: sessionmaker, tenant_id: str) -> str:
    """The secret that signs the tenant's callbacks now; raises `UnknownTenant`."""
    with session_factory() as session:
        tenant = repo.get_tenant(session=session, tenant_id=tenant_id)
        if tenant is None:
            raise UnknownTenant(tenant_id)
        return tenant.webhook_secret


def tenant_info(session_factory: sessionmaker, tenant_id: str, *, with_secret: bool) -> TenantInfo:
    """The tenant's name and id, and its webhook secret when `with_secret` (an admin key's
    view); raises `UnknownTenant`."""
    with session_factory() as session:
        tenant = repo.get_tenant(session=session, tenant_id=tenant_id)
        if tenant is None:
            raise UnknownTenant(tenant_id)
        return TenantInfo(
            id=tenant.id,
            name=tenant.name,
            webhook_secret=tenant.webhook_secret if with_secret else None,
        )


def rotate_webhook_secret(session_factory: sessionmaker, tenant_id: str) -> TenantInfo:
    """Give the tenant a new random webhook secret and return it (with the tenant).

    Every callback attempt reads the secret when it signs, so each attempt that starts after
    this commits (retries of earlier callbacks too) is signed with the new one; an attempt
    already signed may still arrive with the old one. Raises `UnknownTenant`.
    """
    secret = new_webhook_secret()
    with session_factory.begin() as session:
        tenant = repo.set_webhook_secret(
            session=session, tenant_id=tenant_id, webhook_secret=secret
        )
        if tenant is None:
            raise UnknownTenant(tenant_id)
        return TenantInfo(id=tenant.id, name=tenant.name, webhook_secret=secret)


def tenant_id_named(session_factory: sessionmaker, name: str) -> str:
    """The id of the tenant called `name`; raises `UnknownTenantName`."""
    with session_factory() as session:
        tenant = repo.tenant_by_name(session=session, name=name)
        if tenant is None:
            raise UnknownTenantName(name)
        return tenant.id
