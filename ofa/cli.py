"""`ofa-cli`: the entry point. It registers the command modules (cli_train, cli_specialize:
thin doors onto the library, heavy imports inside the commands) and turns every error into
one `error:` line."""

from __future__ import annotations

import os
import sys

import typer

from ofa import cli_train  # noqa: F401 - registers the training commands (listed first)
from ofa import cli_specialize  # noqa: F401,I001 - registers the specialization commands
from ofa import cli_ablation  # noqa: F401,I001 - registers `ofa-cli ablation ...`
from ofa import cli_official  # noqa: F401,I001 - registers import-/export-official
from ofa.cli_app import app
from ofa.errors import OFAError

OFFLINE_ENV = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "False",
               "DISABLE_PANDERA_IMPORT_WARNING": "True"}


def main() -> None:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    debug = os.environ.get("OFA_DEBUG", "") not in ("", "0")
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except OFAError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.TyperException as exc:  # usage errors: one line instead of click's box
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `ofa-cli`: help was shown
            sys.exit(0)
        fmt = getattr(exc, "format_message", None)
        typer.echo(f"error: {fmt() if fmt else exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    except OSError as exc:  # a file the user's machine refuses: permissions, a full disk, ...
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback by default
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"error: unexpected {type(exc).__name__}: {first} (set OFA_DEBUG=1 for details)",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
