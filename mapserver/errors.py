"""CityGrid's error hierarchy; each error knows its HTTP status and a safe message.

The web layer maps these to JSON problems once, and the CLI prints them as one line.
Messages never carry a traceback, a SQL fragment, a file path of the server or a password.
"""

from __future__ import annotations


class CityGridError(Exception):
    """Base of every error CityGrid reports to a person."""

    status = 500
    code = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def details(self) -> dict[str, object]:
        """Further safe fields of the JSON problem (e.g. a case's current state)."""
        return {}


class InvalidInput(CityGridError):
    """Input that can never be valid: malformed codes, bad parameters, unusable files."""

    status = 400
    code = "invalid"


class OutsideDistrict(InvalidInput):
    """A place in none of the district's unit grids (a device's fix far away)."""

    code = "outside_district"


class NotFound(CityGridError):
    status = 404
    code = "not_found"


class Conflict(CityGridError):
    status = 409
    code = "conflict"


class DatabaseUnavailable(CityGridError):
    """The database cannot be reached; says where, never with which password."""

    status = 503
    code = "database_unavailable"

    def __init__(self, where: str, cause: object):
        import re

        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        # libpq names socket, certificate and password-file paths: keep them out
        text = f"database {where} unavailable: {reason}"
        text = re.sub(r"(?<![\w.])(/[^\s\"',:]+)+", "<path>", text)
        text = re.sub(r"(?i)(password\s*=\s*)\S+", r"\1***", text)
        super().__init__(text)


class AuditUnavailable(CityGridError):
    """The audit log cannot take a change's entry: the change is not made (fail closed)."""

    status = 503
    code = "unavailable"

    def __init__(self) -> None:
        super().__init__("audit log unavailable; try later")


class NotUpgraded(CityGridError):
    """A table, column or function the work needs is missing: the database has not been
    upgraded to this version of CityGrid (`citygrid db upgrade`)."""

    code = "not_upgraded"

    def __init__(self, cause: Exception | str):
        """`cause`: psycopg's error of what was missing, or the words for what is missing."""
        diag = getattr(cause, "diag", None)
        what = (
            cause if isinstance(cause, str) else str(getattr(diag, "message_primary", None) or "")
        )
        what = what.strip()
        super().__init__(
            "the database is not upgraded to this version of CityGrid"
            + (f" ({what})" if what else "")
            + ": run `citygrid db upgrade`"
        )

    @staticmethod
    def causes() -> tuple[type[Exception], ...]:
        """psycopg's errors of a missing relation, column or function."""
        from psycopg import errors

        return (errors.UndefinedTable, errors.UndefinedColumn, errors.UndefinedFunction)


class ElsewhereInZones(CityGridError):
    """Work that needs the map database, asked of a gateway of two zones whose renderer
    does not (yet) offer it: a refusal, never a 500."""

    status = 503
    code = "not_in_this_zone"


class MigrationFailed(CityGridError):
    code = "migration_failed"


def foreign_statuses() -> list[tuple[type[Exception], int, str, str]]:
    """Errors of the libraries CityGrid stands on, each with its status and a safe message:
    one table, so a database or Redis outage answers 503 everywhere, never a 500."""
    from concurrent.futures import TimeoutError as FutureTimeout

    import psycopg
    from psycopg_pool import PoolTimeout
    from redis.exceptions import RedisError

    return [
        (PoolTimeout, 503, "database_unavailable", "database busy or unreachable; try later"),
        (psycopg.OperationalError, 503, "database_unavailable", "database unreachable; try later"),
        (FutureTimeout, 503, "unavailable", "a back-end service timed out; try later"),
        (RedisError, 503, "unavailable", "rate limiter unavailable; try later"),
    ]
