"""The tile cache in an S3-compatible object store, shared by every renderer machine.

Inside the secure zone the store is SeaweedFS (`weed server -s3`, deploy/systemd/
citygrid-tilestore.service); any S3 store answers the same calls. Objects are keyed
product/z/x/y.png as files are on disk (tiles.cache), and each tile's ETag, computed when it
is stored (tiles.cache.etag_of, the same value DiskCache keeps), travels as the object's
metadata x-amz-meta-citygrid-etag: a store's own ETag is an MD5 that differs from the disk
cache's, and clients' If-None-Match must keep matching when an install moves its cache.

A PUT replaces an object atomically, so two machines storing the same tile leave one whole
tile, never a mix; readers see the old object, none, or the new one. There are no files: a
front cannot send tiles itself (X-Accel-Redirect), so `root` is None and the app sends the
bytes; `files()` lists the objects' keys instead.

An unreachable store (refused, timed out, a 5xx, a refusal of our credentials, no bucket) is
TileStoreUnavailable: 503 JSON on the tile routes, one line and a non-zero exit on the CLI.

The client is the `minio` SDK rather than boto3: one small pure-Python package over urllib3
(boto3 pulls in botocore and its models of every AWS service for the five calls used here),
with a thread-safe client whose HTTP pool, timeouts and retries are set here, so that an
unreachable store fails in seconds instead of minio's default five minutes.
"""

from __future__ import annotations

import io
import os
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from mapserver.errors import CityGridError
from tiles.cache import Cached, etag_of, relative

if TYPE_CHECKING:
    from mapserver.settings import Settings

ETAG_META = "citygrid-etag"  # sent as x-amz-meta-citygrid-etag
ACCESS_KEY_ENV = "CITYGRID_TILE_STORE_ACCESS_KEY"
SECRET_KEY_ENV = "CITYGRID_TILE_STORE_SECRET_KEY"
PARALLEL = 8  # requests in flight for one metatile's put or drop
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 15.0


class TileStoreUnavailable(CityGridError, OSError):
    """The object store cannot be reached or refuses us: a refusal, never a 500. Also an
    OSError, as a failing disk cache's errors are: the expiries that run after a change has
    committed (components, the cases overlay) log it and keep the change."""

    status = 503
    code = "tile_store_unavailable"

    def __init__(self, message: str):
        super().__init__(message)
        self.strerror = message


class Credentials(NamedTuple):
    access_key: str
    secret_key: str


def credentials_path(settings: Settings) -> Path:
    if settings.tile_store_credentials:
        return Path(settings.tile_store_credentials)
    return settings.data_dir / "tile-store" / "credentials"


def read_credentials(settings: Settings, environ: Mapping[str, str] | None = None) -> Credentials:
    """The store's access key and secret: from CITYGRID_TILE_STORE_ACCESS_KEY/_SECRET_KEY, else
    from the credentials file (TOML: access_key, secret_key), readable by its owner only."""
    environ = os.environ if environ is None else environ
    if environ.get(ACCESS_KEY_ENV) and environ.get(SECRET_KEY_ENV):
        return Credentials(environ[ACCESS_KEY_ENV], environ[SECRET_KEY_ENV])
    path = credentials_path(settings)
    try:
        if os.stat(path).st_mode & 0o077:
            raise CityGridError(
                f"tile store: the credentials file {path} is readable by others (chmod 600)"
            )
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise CityGridError(
            f"tile store: no credentials (set {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}, or write "
            f"{path}: citygrid tiles store-keys)"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CityGridError(f"tile store: cannot read {path}: {exc}") from None
    access, secret = doc.get("access_key"), doc.get("secret_key")
    if not (isinstance(access, str) and access and isinstance(secret, str) and secret):
        raise CityGridError(f"tile store: {path} needs access_key and secret_key")
    return Credentials(access, secret)


def identity_config(creds: Credentials, bucket: str) -> dict[str, Any]:
    """SeaweedFS's -s3.config: CityGrid's one identity, allowed the tile bucket only."""
    actions = [f"{a}:{bucket}" for a in ("Read", "Write", "List", "Tagging", "Admin")]
    return {
        "identities": [
            {
                "name": "citygrid",
                "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
                "actions": actions,
            }
        ]
    }


def new_keys(settings: Settings) -> tuple[Path, Path]:
    """Fresh random credentials in the credentials file and SeaweedFS's -s3.config beside it
    (both 0600; an existing credentials file is kept): returns both paths."""
    import json
    import secrets

    from mapserver.files import atomic_write

    path = credentials_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        text = f'access_key = "{secrets.token_hex(10)}"\nsecret_key = "{secrets.token_hex(20)}"\n'
        atomic_write(path, text.encode("ascii"), 0o600)
    creds = read_credentials(settings, environ={})
    identities = path.parent / "s3.json"
    doc = identity_config(creds, settings.tile_store_bucket)
    atomic_write(identities, json.dumps(doc, indent=2).encode("utf-8"), 0o600)
    return path, identities


def findings(settings: Settings) -> list[tuple[str, str]]:
    """`citygrid config check`'s lines about the tile store: can it be reached, is the bucket
    there, do the metatile locks reach as far as the cache is shared."""
    if settings.tile_cache != "s3":
        return []
    found = []
    if settings.tile_locks != "redis":
        found.append(
            (
                "warning",
                "tile store: tile_locks = file locks metatiles on this machine only; machines"
                " sharing the store need tile_locks = redis (or an expiry may be re-rendered"
                " from old data)",
            )
        )
    try:
        ObjectCache.from_settings(settings).check()
    except CityGridError as exc:
        message = exc.message.removeprefix("tile store").lstrip(": ")
        found.append(("error", f"tile store {settings.tile_store_url}: {message}"))
    return found


def _reason(exc: Exception) -> str:
    """Why the store failed, in words safe for any client (no host, port or key)."""
    if isinstance(exc, S3Error):
        return {
            "AccessDenied": "access denied (the keys, or their rights on the bucket)",
            "InvalidAccessKeyId": "our credentials are refused",
            "SignatureDoesNotMatch": "our credentials are refused",
            "NoSuchBucket": "the tile bucket does not exist",
        }.get(exc.code or "", f"it answered {exc.code}")
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "its certificate is not trusted (tile_store_ca_file) or the TLS handshake failed"
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timed out"
    if isinstance(exc, urllib3.exceptions.ResponseError):
        return "it keeps answering with errors"
    if isinstance(exc, urllib3.exceptions.ProtocolError | ConnectionError):
        return "it dropped the connection"  # e.g. the store died during the request
    return type(exc).__name__


class ObjectCache:
    """Tiles of every product in one bucket of an S3-compatible store."""

    root: Path | None = None  # no files a front could send

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        creds: Credentials,
        region: str = "us-east-1",
        ca_file: str = "",
    ):
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/"):
            raise CityGridError("tile_store_url must be http(s)://HOST:PORT")
        self.endpoint = endpoint
        self.bucket = bucket
        self._netloc, self._secure = url.netloc, url.scheme == "https"
        self._creds, self._region = creds, region
        if ca_file and not self._secure:
            raise CityGridError("tile_store_ca_file is only for an https tile_store_url")
        if ca_file and not os.access(ca_file, os.R_OK):
            raise CityGridError(f"tile_store_ca_file: cannot read {ca_file}")
        self._ca_file = ca_file
        self._pid = 0
        self._shared: Minio | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectCache:
        if not settings.tile_store_url:
            raise CityGridError("tile_cache = s3 needs tile_store_url (http(s)://HOST:PORT)")
        return cls(
            settings.tile_store_url,
            settings.tile_store_bucket,
            read_credentials(settings),
            settings.tile_store_region,
            settings.tile_store_ca_file,
        )

    def _client(self) -> Minio:
        """One client per process: an HTTP pool must not cross a fork (gunicorn, seeding)."""
        if self._shared is None or self._pid != os.getpid():
            http = urllib3.PoolManager(
                # https: the store's certificate and name are verified, against the CA file
                # where one is set (a CA of the zone's own), else the system's trust store.
                cert_reqs="CERT_REQUIRED",
                ca_certs=self._ca_file or None,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
                maxsize=2 * PARALLEL,
                retries=urllib3.Retry(
                    total=2, connect=1, read=1, backoff_factor=0.1,
                    status_forcelist=(502, 503, 504),
                ),
            )  # fmt: skip
            self._shared = Minio(
                self._netloc,
                access_key=self._creds.access_key,
                secret_key=self._creds.secret_key,
                secure=self._secure,
                region=self._region,
                http_client=http,
            )
            self._pid = os.getpid()
        return self._shared

    @contextmanager
    def _reaching(self) -> Iterator[Minio]:
        try:
            yield self._client()
        except TileStoreUnavailable:
            raise
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise TileStoreUnavailable(f"tile store unavailable: {_reason(exc)}") from exc

    def key(self, product: str, z: int, x: int, y: int) -> str:
        return relative(product, z, x, y).as_posix()

    def path(self, product: str, z: int, x: int, y: int) -> PurePosixPath:
        """The tile's key (there is no file)."""
        return relative(product, z, x, y)

    def check(self, create: bool = False) -> None:
        """Reach the store and find the bucket (or create it); raise TileStoreUnavailable."""
        with self._reaching() as client:
            if client.bucket_exists(self.bucket):
                return
            if not create:
                raise TileStoreUnavailable(
                    f"tile store: no bucket {self.bucket} (citygrid tiles store-init creates it)"
                )
            client.make_bucket(self.bucket)

    # -- the cache interface (tiles.cache.TileCache)

    def get(
        self, product: str, z: int, x: int, y: int, max_age: float | None = None
    ) -> bytes | None:
        hit = self.lookup(product, z, x, y, max_age)
        return hit.data if hit is not None else None

    def lookup(
        self, product: str, z: int, x: int, y: int, max_age: float | None = None, read: bool = True
    ) -> Cached | None:
        """One GET (a HEAD when not `read`): the bytes, the ETag stored with them, the age."""
        key = self.key(product, z, x, y)
        with self._reaching() as client:
            try:
                if read:
                    response = client.get_object(self.bucket, key)
                    try:
                        data: bytes | None = response.read()
                        headers: Mapping[str, str] = response.headers
                    finally:
                        response.close()
                        response.release_conn()
                else:
                    data = None
                    headers = client.stat_object(self.bucket, key).metadata or {}
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return None
                raise
        if max_age is not None and _age(headers.get("Last-Modified")) > max_age:
            return None
        etag = headers.get(f"x-amz-meta-{ETAG_META}")
        if not etag:  # stored by another writer: computed, as DiskCache does without xattrs
            if data is None:
                return self.lookup(product, z, x, y, max_age, read=True)
            etag = etag_of(data)
        size = len(data) if data is not None else int(headers.get("Content-Length", 0))
        return Cached(relative(product, z, x, y), etag, size, data)

    def has(self, product: str, z: int, x: int, y: int) -> bool:
        return self.lookup(product, z, x, y, read=False) is not None

    def has_all(self, product: str, z: int, tiles: Iterable[tuple[int, int]]) -> bool:
        """The first tile alone (a metatile not yet rendered costs one HEAD), then the rest
        with PARALLEL requests in flight (a fresh one costs a few round trips, not 64)."""
        wanted = list(tiles)
        if not wanted:
            return True
        if not self.has(product, z, *wanted[0]):
            return False
        return all(self._each(lambda xy: self.has(product, z, *xy), wanted[1:]))

    def put(self, product: str, z: int, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Store tiles {(x, y): png} of one level, each object in one atomic PUT."""
        keyed = [(self.key(product, z, x, y), data) for (x, y), data in tiles.items()]

        def one(item: tuple[str, bytes]) -> None:
            key, data = item
            with self._reaching() as client:
                client.put_object(
                    self.bucket, key, io.BytesIO(data), len(data),
                    content_type="image/png", metadata={ETAG_META: etag_of(data)},
                )  # fmt: skip

        self._each(one, keyed)

    def drop(self, product: str, z: int, tiles: Iterable[tuple[int, int]]) -> int:
        """Remove the given tiles; returns how many existed (a HEAD each, one bulk delete)."""
        wanted = list(tiles)
        found = self._each(lambda xy: self.has(product, z, *xy), wanted)
        existing = [
            self.key(product, z, x, y) for (x, y), there in zip(wanted, found, strict=True) if there
        ]
        if existing:
            with self._reaching() as client:
                errors = list(client.remove_objects(self.bucket, map(DeleteObject, existing)))
            if errors:
                raise TileStoreUnavailable(f"tile store unavailable: it kept {len(errors)} tiles")
        return len(existing)

    def cached(self, product: str, z: int) -> Iterator[tuple[int, int]]:
        """Every (x, y) cached for one product level (a listing of product/z/)."""
        prefix = f"{relative(product, z, 0, 0).parent.parent}/"
        with self._reaching() as client:
            names = [o.object_name for o in client.list_objects(self.bucket, prefix, True)]
        for name in names:
            if name is None:
                continue
            parts = name[len(prefix) :].split("/")
            if len(parts) == 2 and parts[0].isascii() and parts[0].isdigit():
                stem, dot, ext = parts[1].partition(".")
                if dot and ext == "png" and stem.isascii() and stem.isdigit():
                    yield int(parts[0]), int(stem)

    def files(self) -> Iterator[PurePosixPath]:
        """Every object's key in the bucket (for audits of what the cache holds)."""
        with self._reaching() as client:
            names = [o.object_name for o in client.list_objects(self.bucket, recursive=True)]
        for name in names:
            if name is not None:
                yield PurePosixPath(name)

    def _each(self, fn: Any, items: list[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(min(PARALLEL, len(items))) as pool:
            return list(pool.map(fn, items))


def _age(last_modified: str | None) -> float:
    if not last_modified:
        return 0.0
    try:
        return time.time() - parsedate_to_datetime(last_modified).timestamp()
    except (TypeError, ValueError):
        return 0.0
