"""``shoptalk token mint``: a session token signed with the server's secret, for operators and scripts."""

from __future__ import annotations

import json
import secrets
from typing import Annotated

import typer

from server.cli.common import DataDir, cli_settings

token_app = typer.Typer(help="Session tokens (for servers with auth on).", no_args_is_help=True)


@token_app.command("mint")
def mint(
    data_dir: DataDir,
    user: Annotated[str | None, typer.Option("--user", help="Sign the session in as this user id.")] = None,
    ttl: Annotated[float | None, typer.Option("--ttl", help="Lifetime in seconds (at most SHOPTALK_TOKEN_TTL_S).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON with the expiry.")] = False,
) -> None:
    """Print a session token that the server with this data dir (or SHOPTALK_AUTH_SECRET) accepts."""
    from server.security import Gate

    gate = Gate.from_settings(cli_settings(data_dir))
    subject = f"user:{user}" if user else "anon:" + secrets.token_hex(8)
    minted = gate.authority.mint(subject, user_id=user, ttl_s=ttl)
    if as_json:
        typer.echo(json.dumps({"token": minted.token, "expires_at": round(minted.expires_at, 3)}))
    else:
        typer.echo(minted.token)
