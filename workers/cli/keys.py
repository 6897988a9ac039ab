"""`oceanstream keys create|list|revoke|webhook-secret`: API keys of the HTTP API's tenants,
and the secret that signs a tenant's completion callbacks."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from workers.cli.app import app, load_settings, open_database, out

keys_app = typer.Typer(
    help="API keys of the HTTP API.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant name (made when new)."),
    admin: bool = typer.Option(False, "--admin", help="An admin key of that tenant."),
) -> None:
    """Make a key; it is shown once, alone on the last line (only its hash is stored)."""
    from workers.services.tenants import create_key

    made = create_key(open_database(load_settings()), tenant, admin=admin)
    role = " (admin)" if made.admin else ""
    out.print(
        f"key {made.id} for tenant {escape(made.tenant)}{role}; it is not shown again:",
        highlight=False,
    )
    out.print(made.key, highlight=False, markup=False, soft_wrap=True)


@keys_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every key: id, tenant, first characters, admin, revoked."""
    from workers.services.tenants import list_keys

    keys = list_keys(open_database(load_settings()))
    if as_json:
        rows = [
            {
                "id": k.id,
                "tenant": k.tenant,
                "tenant_id": k.tenant_id,
                "prefix": k.prefix,
                "admin": k.admin,
                "revoked": k.revoked,
                "created_at": k.created_at.isoformat(),
            }
            for k in keys
        ]
        out.print_json(json.dumps(rows))
        return
    if not keys:
        out.print("no keys yet: oceanstream keys create --tenant NAME", highlight=False)
        return
    id_width = max(len(k.id) for k in keys)
    key_width = max(len(k.prefix) + 1 for k in keys)
    out.print(
        f"{'ID':<{id_width}}  {'TENANT':<20} {'KEY':<{key_width}}  {'CREATED (UTC)':<16}  FLAGS",
        highlight=False,
    )
    for k in keys:
        flags = ", ".join(f for f, on in (("admin", k.admin), ("revoked", k.revoked)) if on)
        out.print(
            f"{k.id:<{id_width}}  {escape(k.tenant):<20} {k.prefix + '…':<{key_width}}  "
            f"{k.created_at:%Y-%m-%d %H:%M}  {flags}".rstrip(),
            highlight=False,
        )


@keys_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key's id (from keys list).")) -> None:
    """Revoke a key: requests carrying it get 401 from then on."""
    from workers.services.tenants import revoke_key

    revoke_key(open_database(load_settings()), key_id)
    out.print(f"revoked {escape(key_id)}", highlight=False)


@keys_app.command("webhook-secret")
def webhook_secret(
    tenant: str = typer.Option(..., "--tenant", help="Tenant name."),
    rotate: bool = typer.Option(
        False, "--rotate", help="Replace it with a new random secret first."
    ),
) -> None:
    """Show the tenant's webhook secret (alone on the last line), or rotate it: callbacks
    signed from then on, retries included, use the new one. An admin key does the same over
    HTTP (GET /v1/tenant, POST /v1/tenant/webhook-secret)."""
    from workers.services.tenants import rotate_webhook_secret, tenant_id_named, tenant_info

    factory = open_database(load_settings())
    tenant_id = tenant_id_named(factory, tenant)
    if rotate:
        info = rotate_webhook_secret(factory, tenant_id)
        said = "new webhook secret of tenant"
    else:
        info = tenant_info(factory, tenant_id, with_secret=True)
        said = "webhook secret of tenant"
    out.print(f"{said} {escape(info.name)}:", highlight=False)
    out.print(info.webhook_secret, highlight=False, markup=False, soft_wrap=True)
