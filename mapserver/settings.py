"""CityGrid's one settings object: read from a TOML file and CITYGRID_* variables, checked early.

Precedence: built-in defaults < the TOML file < environment variables. Every key is
validated before anything starts, and every problem names the key it is about.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CITYGRID_"
CONFIG_ENV = "CITYGRID_CONFIG"
# CITYGRID_* variables that are read elsewhere and are not settings (secrets stay out of here).
TLS_PREFIX = "CITYGRID_TLS_"  # set by `citygrid serve` for gunicorn's configuration
NOT_SETTINGS = frozenset(
    {
        CONFIG_ENV,
        "CITYGRID_CA_PASSPHRASE",
        "CITYGRID_CA_PASSPHRASE_FILE",
        "CITYGRID_TEST_DATABASE_URL",
        "CITYGRID_ADMIN_KEY",  # the acting administrator's signing key (mapserver.commands.signing)
        "CITYGRID_ADMIN_CERT",
        "CITYGRID_TILE_STORE_ACCESS_KEY",  # the tile store's credentials (tiles.object_cache)
        "CITYGRID_TILE_STORE_SECRET_KEY",
    }
)


class SettingsError(ValueError):
    """One or more settings are invalid; `problems` lists one message per bad key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _database_url(value: str) -> str | None:
    if not re.match(r"^postgres(ql)?://", value):
        return "must be a postgresql:// URL"
    return None


def _redis_url(value: str) -> str | None:
    if not re.match(r"^rediss?://", value):
        return "must be a redis:// URL"
    return None


def _district_code(value: str) -> str | None:
    if not re.fullmatch(r"[0-9]{6}", value):
        return "must be a 6-digit GB/T 2260 county code"
    return None


def _one_of(*allowed: Any) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in allowed:
            return "must be one of " + ", ".join(str(a) for a in allowed)
        return None

    return check


def _witness_keys(value: str) -> str | None:
    from audit.cosignature import CosignatureError, parse_vkeys

    try:
        parse_vkeys(value)
    except CosignatureError as exc:
        return str(exc)
    return None


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be a positive number"


GEOGRAPHIC_SRIDS = frozenset({4326, 4490, 4258, 4269, 4283, 4612, 4674, 4214, 4610})


def _srid(value: int) -> str | None:
    if value in GEOGRAPHIC_SRIDS:
        return (
            "is a geographic CRS (degrees); CityGrid needs a projected CRS in metres that fits"
            " the district, e.g. a Gauss-Krüger or UTM zone"
        )
    return None if 1024 <= value <= 998999 else "must be an EPSG code of a projected CRS"


# Values once documented as the tile origin: public, so never an install's secret origin.
EXAMPLE_ORIGINS = frozenset({430000.0, 4440000.0})


def _not_example_origin(value: float | None) -> str | None:
    if value is None:
        return None
    if value in EXAMPLE_ORIGINS:
        return "is a published example value; leave it unset to use the install's secret origin"
    return None


def rate_table(value: str) -> dict[str, str]:
    """'viewer=600/minute,*=1200/minute' → {'viewer': '600/minute', '*': '1200/minute'}."""
    from limits import parse

    table = {}
    for part in value.split(","):
        role, sep, limit = part.strip().partition("=")
        if not sep or not role.strip():
            raise ValueError(f"{part.strip()!r} is not ROLE=LIMIT")
        parse(limit.strip())
        table[role.strip()] = limit.strip()
    if "*" not in table:
        raise ValueError("needs a default entry *=LIMIT")
    return table


def _rate_table(value: str) -> str | None:
    try:
        rate_table(value)
    except ValueError as exc:
        return str(exc)
    return None


def _work_hours(value: str) -> str | None:
    from mapserver.cases.calendar import parse_work_hours

    try:
        parse_work_hours(value)
    except ValueError as exc:
        return str(exc)
    return None


def _timezone(value: str) -> str | None:
    from mapserver.cases.calendar import parse_timezone

    try:
        parse_timezone(value)
    except ValueError as exc:
        return str(exc)
    return None


def _iso_dates(value: str) -> str | None:
    from mapserver.cases.calendar import parse_dates

    try:
        parse_dates(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Settings:
    """Everything CityGrid can be configured with; see README 'Settings'."""

    database_url: str = field(
        default="postgresql://postgres@127.0.0.1:5432/citygrid",
        metadata={"check": _database_url, "doc": "PostgreSQL + PostGIS database"},
    )
    data_dir: Path = field(
        default=Path("./var"),
        metadata={"doc": "tile cache, PKI and other files"},
    )
    app_database_url: str = field(
        default="",
        metadata={
            "check": lambda v: _database_url(v) if v else None,
            "doc": "the serving role's connection (default: the database URL as citygrid_app)",
        },
    )
    map_database_url: str = field(
        default="",
        metadata={
            "check": lambda v: _database_url(v) if v else None,
            "doc": "the read-only map role's connection, for Mapnik and the tile service "
            "(default: the database URL as citygrid_map)",
        },
    )
    component_database_url: str = field(
        default="",
        metadata={
            "check": lambda v: _database_url(v) if v else None,
            "doc": "two zones, on the renderer: the component editor role's connection, "
            "where a bureau's changes are applied (default: the database URL as "
            "citygrid_component)",
        },
    )
    renderer_url: str = field(
        default="",
        metadata={
            "check": lambda v: (
                None
                if not v or re.fullmatch(r"https://[A-Za-z0-9.\-\[\]:]+", v)
                else "https://HOST:PORT of the renderer service, or empty"
            ),
            "doc": "two zones: the renderer service inside the secure zone (https://HOST:PORT); "
            "empty: tiles are rendered in this process",
        },
    )
    renderer_tile_url: str = field(
        default="",
        metadata={
            "check": lambda v: (
                None
                if not v or re.fullmatch(r"https://[A-Za-z0-9.\-\[\]:]+", v)
                else "https://HOST:PORT of the renderer's tile channel, or empty"
            ),
            "doc": "two zones: the renderer's tile channel (`renderer serve --tile-bind`), "
            "where the gateway asks for tiles; empty: tiles too are asked at renderer_url",
        },
    )
    renderer_client_cert: str = field(
        default="",
        metadata={"doc": "two zones: the gateway's service certificate (PEM) for the renderer"},
    )
    renderer_client_key: str = field(
        default="",
        metadata={"doc": "two zones: the key of renderer_client_cert (PEM file, mode 0600)"},
    )
    grant_key: str = field(
        default="",
        metadata={
            "doc": "two zones: on the gateway, the grant signing key (PEM, 0600); on the "
            "renderer, its public key (default: DATA_DIR/pki/grant/grant.key or grant.pub)"
        },
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata={"check": _redis_url, "doc": "shared rate-limit counters and job queues"},
    )
    srid: int = field(
        default=4548,
        metadata={"check": _srid, "doc": "the install's projected CRS (EPSG code)"},
    )
    district_code: str = field(
        default="110108",
        metadata={"check": _district_code, "doc": "GB/T 2260 code of the district served"},
    )
    district_name: str = field(default="海淀区", metadata={"doc": "name of the district served"})
    locale: str = field(
        default="zh-CN",
        metadata={
            "check": _one_of("zh-CN", "en"),
            "doc": "language of house numbers, addresses, map titles and pages (zh-CN or en)",
        },
    )
    grid_serial_digits: int = field(
        default=2,
        metadata={"check": _one_of(2, 3), "doc": "unit-grid serial width: 2 (14-digit) or 3"},
    )
    component_minor_digits: int = field(
        default=2,
        metadata={"check": _one_of(2, 3), "doc": "component minor-class width: 2 (16) or 3 (17)"},
    )
    tile_origin_x: float | None = field(
        default=None,
        metadata={
            "check": _not_example_origin,
            "doc": "only to keep an older install's origin: upper-left x of the tile grid "
            "(default: drawn at random when the schema is created, kept in the database)",
        },
    )
    tile_origin_y: float | None = field(
        default=None,
        metadata={
            "check": _not_example_origin,
            "doc": "only to keep an older install's origin: upper-left y of the tile grid",
        },
    )
    tile_top_tiles: int = field(
        default=4,
        metadata={
            "check": _positive,
            "doc": "with an explicit origin: tiles per side of the tile matrix at level 0",
        },
    )
    tile_metatile: int = field(
        default=8,
        metadata={"check": _positive, "doc": "metatile size in tiles per side"},
    )
    tile_cache: str = field(
        default="disk",
        metadata={
            "check": _one_of("disk", "s3"),
            "doc": "where tiles are cached: disk (DATA_DIR/tiles, this machine) or s3 (an "
            "S3-compatible store that several renderer machines share, tile_store_url)",
        },
    )
    tile_store_url: str = field(
        default="",
        metadata={
            "check": lambda v: (
                None
                if not v or re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+/?", v)
                else "http(s)://HOST:PORT of the S3 endpoint, or empty"
            ),
            "doc": "tile_cache = s3: the store's S3 endpoint inside the secure zone "
            "(http(s)://HOST:PORT; SeaweedFS, deploy/systemd/citygrid-tilestore.service)",
        },
    )
    tile_store_bucket: str = field(
        default="citygrid-tiles",
        metadata={
            "check": lambda v: (
                None
                if re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", v)
                else "an S3 bucket name: 3-63 of a-z 0-9 . -"
            ),
            "doc": "tile_cache = s3: the bucket of the tiles",
        },
    )
    tile_store_region: str = field(
        default="us-east-1",
        metadata={"doc": "tile_cache = s3: the region requests are signed for"},
    )
    tile_store_ca_file: str = field(
        default="",
        metadata={
            "doc": "tile_cache = s3 over https: PEM file of the CA that issued the store's "
            "certificate, e.g. CityGrid's own (default: the system's trust store); the "
            "store's certificate and name are always verified",
        },
    )
    tile_store_credentials: str = field(
        default="",
        metadata={
            "doc": "tile_cache = s3: file (TOML access_key, secret_key; mode 0600) with the "
            "store's keys, unless CITYGRID_TILE_STORE_ACCESS_KEY/_SECRET_KEY are set "
            "(default: DATA_DIR/tile-store/credentials)",
        },
    )
    tile_locks: str = field(
        default="file",
        metadata={
            "check": _one_of("file", "redis"),
            "doc": "metatile locks: file (lock files, one machine) or redis (across machines)",
        },
    )
    tile_lock_seconds: float = field(
        default=15.0,
        metadata={
            "check": _positive,
            "doc": "a Redis metatile lock whose holder stopped renewing it (died) expires "
            "after this long",
        },
    )
    render_queue: str = field(
        default="",
        metadata={
            "check": lambda v: (
                None
                if re.fullmatch(r"[A-Za-z0-9_.-]{0,64}", v)
                else "letters, digits, _ . - only (at most 64)"
            ),
            "doc": "RQ queue (on redis_url) of seeding and re-render jobs for `citygrid "
            "render-worker`; when set, tile expiry enqueues re-renders (empty: none)",
        },
    )
    server_names: str = field(
        default="localhost,127.0.0.1,::1",
        metadata={
            "check": lambda v: None if v.strip() else "must name at least one host",
            "doc": "host names clients use to reach CityGrid (comma-separated); requests "
            "for any other Host are refused",
        },
    )
    identity_cache_seconds: float = field(
        default=5.0,
        metadata={"doc": "how long a certificate's account lookup is reused"},
    )
    rate_limit_tiles: str = field(
        default="viewer=600/minute,*=1200/minute",
        metadata={
            "check": _rate_table,
            "doc": "tile requests per certificate, by role (ROLE=LIMIT, * for the rest)",
        },
    )
    rate_limit_api: str = field(
        default="*=120/minute",
        metadata={"check": _rate_table, "doc": "API requests per certificate, by role"},
    )
    rate_limit_uploads: str = field(
        default="*=600/minute",
        metadata={
            "check": _rate_table,
            "doc": "a device's upload chunks (tus PATCH and HEAD) per certificate, by role",
        },
    )
    audit_checkpoint_entries: int = field(
        default=1000,
        metadata={"check": _positive, "doc": "sign an audit checkpoint at least every N entries"},
    )
    audit_checkpoint_seconds: float = field(
        default=10.0,
        metadata={"doc": "and at least every T seconds while entries arrive"},
    )
    audit_durability: str = field(
        default="spool",
        metadata={
            "check": _one_of("spool", "database"),
            "doc": "where a request's audit entry is durable before its answer leaves: the "
            "host's spool file (flushed, then shipped to the database) or the database queue",
        },
    )
    audit_spool_dir: str = field(
        default="",
        metadata={"doc": "the audit spool's directory (default: DATA_DIR/audit-spool)"},
    )
    audit_witnesses: str = field(
        default="",
        metadata={
            "check": _witness_keys,
            "doc": "witnesses whose cosignatures are kept (verifier keys, comma-separated)",
        },
    )
    signer_socket: str = field(
        default="",
        metadata={"doc": "the CA signer process's Unix socket (default: DATA_DIR/run/signer.sock)"},
    )
    handshake_timeout_seconds: float = field(
        default=5.0,
        metadata={
            "check": lambda v: None if 0 < v <= 60 else "must be between 0 and 60",
            "doc": "how long a client may take over its TLS handshake before it is closed",
        },
    )
    db_pool_min: int = field(default=1, metadata={"check": _positive, "doc": "pool size floor"})
    db_pool_max: int = field(default=8, metadata={"check": _positive, "doc": "pool size cap"})
    work_hours: str = field(
        default="08:30-12:00,13:30-17:30",
        metadata={
            "check": _work_hours,
            "doc": "working periods of a working day (HH:MM-HH:MM, comma-separated); "
            "case time limits count only these",
        },
    )
    work_timezone: str = field(
        default="Asia/Shanghai",
        metadata={"check": _timezone, "doc": "IANA time zone the working hours are in"},
    )
    calendar_statutory: str = field(
        default="cn",
        metadata={
            "check": _one_of("cn", "none"),
            "doc": "statutory holidays and 调休 working days: cn (chinese-calendar) or none",
        },
    )
    calendar_holidays: str = field(
        default="",
        metadata={
            "check": _iso_dates,
            "doc": "local days off (ISO dates, comma-separated); win over the statutory calendar",
        },
    )
    calendar_workdays: str = field(
        default="",
        metadata={
            "check": _iso_dates,
            "doc": "local working days (ISO dates, comma-separated); win over the statutory "
            "calendar and the weekend",
        },
    )
    exchange_role: str = field(
        default="",
        metadata={
            "check": _one_of("", "district", "city"),
            "doc": "this install's side of the city–district exchange: district, city "
            "(the city-level platform) or empty (no exchange)",
        },
    )
    exchange_peer_url: str = field(
        default="",
        metadata={
            "check": lambda v: (
                None
                if not v or re.fullmatch(r"https://[^/\s]+", v)
                else "must be https://HOST[:PORT]"
            ),
            "doc": "the other install of the exchange, https://HOST[:PORT]",
        },
    )
    exchange_peer_ca: str = field(
        default="",
        metadata={
            "doc": "the other install's CA certificate (PEM file): its server, its "
            "people's signatures"
        },
    )
    exchange_peer_log_key: str = field(
        default="",
        metadata={"doc": "the other install's audit log key (PEM file): its checkpoints"},
    )
    exchange_client_cert: str = field(
        default="",
        metadata={"doc": "this install's certificate from the other install's CA (PEM file)"},
    )
    exchange_client_key: str = field(
        default="",
        metadata={"doc": "the key of exchange_client_cert (PEM file, mode 0600)"},
    )
    exchange_peer_org: str = field(
        default="city-platform",
        metadata={
            "doc": "on a district: the organisation (a bureau) that stands for the city "
            "platform; dispatching a case to it through the exchange forwards the case"
        },
    )

    @property
    def forwarding_org(self) -> str | None:
        """On a district in an exchange, the organisation a dispatch to which forwards the
        case to the city platform; else None."""
        return self.exchange_peer_org if self.exchange_role == "district" else None

    @property
    def serving_database_url(self) -> str:
        """Where the serving processes connect: the app role, which cannot rewrite the audit."""
        return self.app_database_url or _as_role(self.database_url, "citygrid_app")

    @property
    def map_reader_database_url(self) -> str:
        """Where Mapnik and the tile service read map tables: the read-only map role."""
        return self.map_database_url or _as_role(self.database_url, "citygrid_map")

    @property
    def component_editor_database_url(self) -> str:
        """Where the renderer of two zones applies component changes: the component editor
        role (migration 0036), never the serving role that the gateway's zone uses."""
        return self.component_database_url or _as_role(self.database_url, "citygrid_component")

    @property
    def host_names(self) -> list[str]:
        names = [n.strip() for n in self.server_names.split(",") if n.strip()]
        return names + [f"[{n}]" for n in names if ":" in n]

    @property
    def tile_dir(self) -> Path:
        return self.data_dir / "tiles"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def audit_spool_path(self) -> Path:
        return Path(self.audit_spool_dir) if self.audit_spool_dir else self.data_dir / "audit-spool"

    @property
    def signer_socket_path(self) -> Path:
        if self.signer_socket:
            return Path(self.signer_socket)
        return self.data_dir / "run" / "signer.sock"


def _as_role(url: str, role: str) -> str:
    """`url` as another role, without the owner's password (libpq's PGPASSFILE supplies one)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{role}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, meaning) for every setting, for docs and --help."""
    return [
        (ENV_PREFIX + f.name.upper(), str(f.default), f.metadata.get("doc", ""))
        for f in fields(Settings)
    ]


def _coerce(f: dataclasses.Field[Any], raw: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    kind = kind.removesuffix(" | None")
    if kind == "int":
        if isinstance(raw, bool):
            raise ValueError("must be a whole number")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"-?[0-9]+", raw.strip()):
            return int(raw)
        raise ValueError("must be a whole number")
    if kind == "float":
        if isinstance(raw, bool):
            raise ValueError("must be a number")
        if isinstance(raw, int | float):
            return float(raw)
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
    if kind == "Path":
        if not isinstance(raw, str) or not raw:
            raise ValueError("must be a non-empty path")
        return Path(raw)
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    return raw


def build(values: Mapping[str, Any], origin: Mapping[str, str] | None = None) -> Settings:
    """Validate raw values (by field name) into Settings; raise SettingsError naming bad keys."""
    origin = origin or {}
    known = {f.name: f for f in fields(Settings)}
    problems: list[str] = []
    clean: dict[str, Any] = {}
    for key, raw in values.items():
        where = origin.get(key, key)
        f = known.get(key)
        if f is None:
            problems.append(f"{where}: unknown setting")
            continue
        try:
            value = _coerce(f, raw)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        check = f.metadata.get("check")
        message = check(value) if check else None
        if message:
            problems.append(f"{where}: {message} (got {raw!r})")
            continue
        clean[key] = value
    if not problems:
        lo = clean.get("db_pool_min", Settings.db_pool_min)
        hi = clean.get("db_pool_max", Settings.db_pool_max)
        if lo > hi:
            problems.append(f"{origin.get('db_pool_max', 'db_pool_max')}: must be >= db_pool_min")
        ox, oy = clean.get("tile_origin_x"), clean.get("tile_origin_y")
        if (ox is None) != (oy is None):
            given, missing = ("tile_origin_x", "y") if oy is None else ("tile_origin_y", "x")
            where = origin.get(given, given)  # named the way its partner was given
            where = where[:-1] + (missing.upper() if where.endswith(("X", "Y")) else missing)
            problems.append(f"{where}: must be set too (an explicit origin needs x and y)")
        if clean.get("tile_cache") == "s3" and not clean.get("tile_store_url"):
            where = origin.get("tile_cache", "tile_cache")
            problems.append(f"{where}: s3 needs tile_store_url (the store's S3 endpoint)")
        if clean.get("tile_store_ca_file") and not str(clean.get("tile_store_url", "")).startswith(
            "https://"
        ):
            where = origin.get("tile_store_ca_file", "tile_store_ca_file")
            problems.append(f"{where}: only for an https tile_store_url")
        if "calendar_holidays" in clean and "calendar_workdays" in clean:
            from mapserver.cases.calendar import parse_dates

            both = parse_dates(clean["calendar_holidays"]) & parse_dates(clean["calendar_workdays"])
            if both:
                where = origin.get("calendar_workdays", "calendar_workdays")
                listed = ", ".join(d.isoformat() for d in sorted(both))
                problems.append(f"{where}: also listed as holidays: {listed}")
    if problems:
        raise SettingsError(problems)
    return Settings(**clean)


def _password_file_is_private(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """A database password may sit only in a settings file no one else can read (0600)."""
    from psycopg import conninfo

    if not os.stat(path).st_mode & 0o077:
        return
    for key, raw in data.items():
        if key.endswith("database_url") and isinstance(raw, str):
            try:
                secret = conninfo.conninfo_to_dict(raw).get("password")
            except Exception:  # a malformed URL is reported by the URL check
                continue
            if secret:
                message = "holds a password but the file is readable by others (chmod 600)"
                raise SettingsError([f"{path}: {key}: {message}"])


def load(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the TOML file (argument, else $CITYGRID_CONFIG) and CITYGRID_* variables."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    path = config_file or environ.get(CONFIG_ENV)
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError([f"{CONFIG_ENV}: file not found: {path}"]) from None
        except OSError as exc:  # unreadable (permissions), or a path through a file
            raise SettingsError([f"{CONFIG_ENV}: cannot read {path}: {exc.strerror}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError([f"{path}: not valid TOML ({exc})"]) from None
        except UnicodeDecodeError:
            raise SettingsError([f"{path}: not valid TOML (not UTF-8 text)"]) from None
        _password_file_is_private(path, data)
        for key, raw in data.items():
            values[key] = raw
            origin[key] = f"{path}: {key}"
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or var in NOT_SETTINGS or var.startswith(TLS_PREFIX):
            continue
        key = var[len(ENV_PREFIX) :].lower()
        values[key] = raw
        origin[key] = var
    return build(values, origin)
