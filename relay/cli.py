"""The `relay` command: run the stack, migrate, manage API keys.

Every command reads the same settings as the API and worker. Errors are one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer
from sqlalchemy.exc import ArgumentError, OperationalError

from relay.errors import ConfigError, RelayError
from relay.logging import redact
from relay.settings import Settings, load_settings

app = typer.Typer(
    help="Relay: durable third-party integrations on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys = typer.Typer(help="Manage API keys (only their hashes are stored).", no_args_is_help=True)
app.add_typer(keys, name="keys")


def _settings() -> Settings:
    settings = load_settings()
    settings.check()
    return settings


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from relay.db import make_engine

    return make_engine(settings.sqlalchemy_url)


@app.command()
def dev() -> None:
    """Run the whole stack: Temporal dev server (unless TEMPORAL_ADDRESS is set), worker, API."""
    from relay.dev import run_dev

    raise typer.Exit(run_dev(_settings()))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Defaults to API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Defaults to API_PORT")] = None,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from api.app import create_app
    from relay.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


@app.command()
def worker() -> None:
    """Run a worker on TEMPORAL_TASK_QUEUE (run several for more throughput)."""
    from relay.logging import configure_logging
    from worker import run_worker

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_worker(settings))


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from relay.migrate import upgrade

    settings = _settings()
    upgrade(settings.sqlalchemy_url)
    typer.echo("database is up to date")


_SCOPE_HELP = (
    "What the key may do; repeat or comma-separate. admin: everything; app (default): every "
    "/v1 route but access tokens; credentials:read: GET /v1/integrations/{id}/credentials; "
    "codec: decrypt payloads at /codec (the Temporal UI and CLI)."
)


@keys.command("create")
def keys_create(
    name: str,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help=_SCOPE_HELP, metavar="SCOPE")
    ] = None,
) -> None:
    """Create an API key; it is printed once, alone on the last line."""
    from relay.api_keys import DEFAULT_SCOPES, create_key, parse_scopes

    scopes = parse_scopes(scope) if scope else DEFAULT_SCOPES
    record, raw = create_key(_engine(_settings()), name, scopes)
    granted = record.scopes.split()
    typer.echo(
        f"created API key {record.name!r} ({record.prefix}…) with scope"
        f"{'s' if len(granted) > 1 else ''} {','.join(granted)}; "
        "store it now, it is not shown again:"
    )
    typer.echo(raw)


@keys.command("list")
def keys_list() -> None:
    """List API keys (names, prefixes and scopes, never the keys)."""
    from relay.api_keys import list_keys

    records = list_keys(_engine(_settings()))
    if not records:
        typer.echo("no API keys; create one with: relay keys create NAME")
        return
    width = max(len("SCOPES"), *(len(record.scopes) for record in records))
    typer.echo(f"{'NAME':<30} {'PREFIX':<12} {'SCOPES':<{width}} {'CREATED':<20} STATUS")
    for record in records:
        status = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "active"
        scopes = record.scopes.replace(" ", ",")
        typer.echo(
            f"{record.name:<30} {record.prefix:<12} {scopes:<{width}} "
            f"{record.created_at:%Y-%m-%d %H:%M:%S}  {status}"
        )


@keys.command("revoke")
def keys_revoke(name: str) -> None:
    """Revoke an API key by name; requests with it (and its codec sessions) get 401 from then on."""
    from relay.api_keys import revoke_key

    revoke_key(_engine(_settings()), name)
    typer.echo(f"revoked API key {name!r}")


@keys.command("rotate-tokens")
def keys_rotate_tokens() -> None:
    """Re-encrypt every stored OAuth token with the current (first) key of ENCRYPTION_KEYS."""
    from relay.crypto import load_keyring
    from relay.oauth.tokens import count_stale, rotate_tokens

    settings = _settings()
    keyring = load_keyring(
        settings.encryption_keys.get_secret_value() if settings.encryption_keys else None,
        settings.dev_keys_file,
    )
    engine = _engine(settings)
    stale, total = count_stale(engine, keyring)
    with typer.progressbar(length=stale, label=f"re-encrypting under {keyring.current_kid}") as bar:
        report = rotate_tokens(engine, keyring, progress=bar.update)
    typer.echo(
        f"{report.reencrypted} of {total} integrations re-encrypted with key "
        f"{keyring.current_kid!r} ({report.current} already were"
        + (f", {report.skipped} changed meanwhile" if report.skipped else "")
        + f"); {report.states} pending authorizations re-sealed"
    )


def main() -> None:
    try:
        app()
    except (ConfigError, RelayError) as exc:
        typer.echo(f"relay: {exc}", err=True)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    except OperationalError as exc:
        typer.echo(f"relay: the database is not reachable ({type(exc.orig).__name__})", err=True)
        sys.exit(1)
    except ArgumentError:
        # The message would echo the URL, password included.
        typer.echo("relay: DATABASE_URL is not a database URL Relay can use", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # One line, redacted; LOG_LEVEL=DEBUG puts the traceback in the logs.
        logging.getLogger("relay.cli").debug("unexpected error", exc_info=True)
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        typer.echo(f"relay: {type(exc).__name__}: {redact(first_line)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
