"""What every CityGrid command shares: settings on demand, one-line errors, auditing."""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from mapserver import settings as settings_mod
from mapserver.errors import CityGridError, InvalidInput, NotUpgraded
from mapserver.settings import Settings, SettingsError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    click.echo(f"citygrid: error: {message}", err=True)
    sys.exit(code)


class OneLineError(click.ClickException):
    """Click's own refusals (an unknown option, a value out of range, a file it cannot open)
    shown as one line, like every other refusal of the command. A usage error names where to
    read the usage instead of printing it."""

    def __init__(self, error: click.ClickException):
        said = " ".join(error.format_message().split()).removesuffix(".")
        if isinstance(error, click.UsageError):
            said += f" (see '{error.ctx.command_path if error.ctx else 'citygrid'} --help')"
        super().__init__(said)

    def show(self, file: Any = None) -> None:
        click.echo(f"citygrid: error: {self.format_message()}", err=True)


class OneLineUsage(OneLineError):
    exit_code = 2  # click's code for a usage error


class Finite(click.FloatRange):
    """A number, within [min, max] where given; NaN and the infinities refused (click's
    FloatRange compares NaN with its bounds, which is never out of range)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class CityGridGroup(click.Group):
    """The top-level group: click's refusals, of it or of any command under it, are one line.
    A bare group name still shows its help, as click does."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except (click.exceptions.NoArgsIsHelpError, OneLineError):
        raise
    except click.UsageError as exc:
        raise OneLineUsage(exc) from exc
    except click.ClickException as exc:
        raise OneLineError(exc) from exc


def reports_errors(func: F) -> F:
    """Turn CityGrid's errors into one line on stderr and a non-zero exit, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SettingsError as exc:
            fail("bad settings: " + "; ".join(exc.problems), 2)
        except CityGridError as exc:
            fail(exc.message)
        except NotUpgraded.causes() as exc:  # a database `citygrid db upgrade` has not reached
            fail(NotUpgraded(exc).message)
        except OSError as exc:  # a file the command was named cannot be read or written
            fail(_os_problem(exc))

    return wrapper  # type: ignore[return-value]


def _os_problem(exc: OSError) -> str:
    """One line for a failed file or socket operation, a long name shortened."""
    reason = exc.strerror or type(exc).__name__
    if exc.filename is None:
        return reason
    name = str(exc.filename)
    if len(name) > 80:
        name = f"{name[:40]}…{name[-20:]} ({len(name)} characters)"
    return f"{name}: {reason}"


class Context:
    """Settings are read when a command first needs them, so `--help` works anywhere."""

    def __init__(self, config_file: str | None):
        self.config_file = config_file
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_mod.load(self.config_file)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


def _audit_cli(conn: Any, action: str, resource: str, outcome: str = "ok", **detail: Any) -> None:
    """Administrative acts from the command line are audited like requests."""
    import getpass

    from audit.keys import signer
    from audit.record import Entry, record

    settings = click.get_current_context().find_object(Context).settings  # type: ignore[union-attr]
    record(
        conn,
        Entry(
            action=action,
            outcome=outcome,
            account=f"cli:{getpass.getuser()}",
            method="CLI",
            resource=resource,
            detail=detail,
        ),
        signer(settings.pki_dir),
    )


def writable(path: Path) -> Path:
    """`path`, once a file can be written there: checked before a disclosure is audited, so
    that no entry records a bundle or export that then could not be written."""
    import os

    folder = path.parent
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory: name a file")
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: no such directory")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InvalidInput(f"{path}: not writable")
    return path


def _connection(ctx: Context) -> Any:
    from mapserver import db as db_mod

    return db_mod.connect(ctx.settings)


def prune_as_owner(
    ctx: Context,
    prune: Callable[[Any, dt.timedelta], tuple[int, int]],
    days: int,
    what: str,
    action: str,
    resource: str,
) -> tuple[int, int]:
    """Run `prune(conn, older_than)` as the database's owner, audited; (rows, bytes) removed.
    The serving role may not delete what it prunes: refused in one line naming `what`."""
    import psycopg

    with _connection(ctx) as conn:
        try:
            removed, size = prune(conn, dt.timedelta(days=days))
        except psycopg.errors.InsufficientPrivilege:
            raise InvalidInput(
                f"this database role may not remove {what}: run it as the database's owner"
                " (CITYGRID_DATABASE_URL), as migrations are"
            ) from None
        _audit_cli(conn, action, resource, removed=removed, bytes=size)
        conn.commit()
    return removed, size
