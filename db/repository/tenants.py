"""Tenants and their API keys (stored only as SHA-256 hashes)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ApiKey, Tenant, new_id
from db.repository._common import FETCH
from db.types import utcnow


def get_tenant(*, session: Session, tenant_id: str) -> Tenant | None:
    """The tenant with `tenant_id`, or None."""
    return session.get(Tenant, tenant_id)


def tenant_by_name(*, session: Session, name: str) -> Tenant | None:
    """The tenant called `name`, or None."""
    return session.scalars(select(Tenant).where(Tenant.name == name)).first()


def get_or_create_tenant(*, session: Session, name: str, webhook_secret: str) -> Tenant:
    """The tenant called `name`, made with `webhook_secret` when new."""
    tenant = tenant_by_name(session=session, name=name)
    if tenant is None:
        tenant = Tenant(id=new_id(), name=name, webhook_secret=webhook_secret, created_at=utcnow())
        session.add(tenant)
        session.flush()
    return tenant


def add_api_key(
    *, session: Session, tenant_id: str, key_hash: str, prefix: str, admin: bool
) -> ApiKey:
    """Store a new key's hash for `tenant_id`."""
    key = ApiKey(
        id=new_id(),
        tenant_id=tenant_id,
        key_hash=key_hash,
        prefix=prefix,
        admin=admin,
        revoked=False,
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return key


def key_by_hash(*, session: Session, key_hash: str) -> ApiKey | None:
    """The key whose hash is `key_hash`, revoked or not, or None."""
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def list_api_keys(*, session: Session) -> list[tuple[ApiKey, str]]:
    """Every key with its tenant's name, oldest first."""
    rows = session.execute(
        select(ApiKey, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return [(key, name) for key, name in rows]


def revoke_api_key(*, session: Session, key_id: str) -> bool:
    """Mark the key revoked; whether a key with `key_id` exists."""
    stmt = update(ApiKey).where(ApiKey.id == key_id).values(revoked=True).returning(ApiKey.id)
    return session.execute(stmt, execution_options=FETCH).first() is not None


def set_webhook_secret(*, session: Session, tenant_id: str, webhook_secret: str) -> Tenant | None:
    """Replace the tenant's webhook secret (its row locked until the caller commits); the
    tenant, or None when there is none with `tenant_id`."""
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        return None
    tenant.webhook_secret = webhook_secret
    session.flush()
    return tenant
