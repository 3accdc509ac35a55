"""Backups of an install (`restore.py` puts one back).

A backup is a directory of four files:
- `database.dump`: the database, `pg_dump`'s custom format, one consistent snapshot;
- `data.tar`: the files of the data directory that no row of the database can replace: the
  CA (its key encrypted under its passphrase), the audit log's checkpoint key, the token
  keys, the server certificates and the CRL, object-store credentials;
- `manifest.json`: the SHA-256 of both, the database's last migration, and the newest
  signed checkpoint of the audit log when the dump began (the dump holds at least that);
- `manifest.sig`: the manifest's signature by the audit log's checkpoint key, so that the
  log's public key (as witnesses pin it) proves offline that this install made the backup.
  The `backup.create` audit entry records the manifest's SHA-256.

Left out of `data.tar`: the tile cache (rendered again from the database), sockets and locks
(`run/`), and the audit spool. An entry a serving process had flushed to its spool but not yet
shipped when the dump began (under a second of them while shipments flow) is not in the
backup, as nothing after the backup is.

The backup holds the CA key and the checkpoint key: keep it as those are kept. Its directory
and files are made readable by their owner only.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg import conninfo

from mapserver import db, migrate
from mapserver.errors import CityGridError, Conflict, InvalidInput
from mapserver.settings import Settings

FORMAT = 2  # 2: signed (manifest.sig); 1: unsigned, still read
DUMP, DATA, MANIFEST, SIGNATURE = "database.dump", "data.tar", "manifest.json", "manifest.sig"
# The log key signs checkpoints too: what it signs for a manifest starts with this line, and
# its second line is the manifest's "{", so it can never be read as a checkpoint (whose second
# line is a tree size) nor as a cosigned one (whose first is "cosignature/v1").
SIGNED_AS = b"citygrid backup manifest/v2\n"
KEY_NAME = "citygrid-audit"  # as on checkpoints: the key id is the checkpoint key's
# Under the data directory, what a backup leaves out: made again, or never kept.
LEFT_OUT = ("tiles", "run", "audit-spool")
# What every install's data directory holds and a backup must: the CA's certificate and the
# audit log's checkpoint key (the CA's key is on the zone that signs; a renderer has none).
REQUIRED = ("data/pki/ca.crt", "data/pki/audit-ed25519.key")


def _quiet(stage: str) -> None:
    """No word of each stage (the command line shows them on a terminal)."""


class BackupFailed(CityGridError):
    status = 500
    code = "backup_failed"


class Manifest(NamedTuple):
    created_at: str
    database: str
    migration: str
    checkpoint: dict[str, Any] | None  # the newest signed checkpoint when the dump began
    files: dict[str, str]  # name → SHA-256

    def text(self) -> str:
        doc = {"format": FORMAT, **self._asdict()}
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"


class Verified(NamedTuple):
    """A backup whose files hash to what its manifest says."""

    manifest: Manifest
    sha256: str  # of manifest.json: what the `backup.create` audit entry recorded
    signature: Literal["checked", "not checked", "unsigned"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _key_id(public: Ed25519PublicKey) -> bytes:
    from audit.checkpoint import key_id

    return key_id(KEY_NAME, public)


def sign(manifest: bytes, key: Ed25519PrivateKey) -> str:
    """The text of `manifest.sig`: one line as a signed note's (key id ‖ Ed25519 signature)."""
    blob = _key_id(key.public_key()) + key.sign(SIGNED_AS + manifest)
    return f"\u2014 {KEY_NAME} {base64.b64encode(blob).decode()}\n"


def check_signature(manifest: bytes, signature: str, public: Ed25519PublicKey) -> str | None:
    """None when `signature` is the log key's over `manifest`, else what is wrong."""
    name, _, encoded = signature.strip().removeprefix("\u2014 ").partition(" ")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except ValueError:
        blob = b""
    if name != KEY_NAME or len(blob) != 4 + 64:
        return f"has no signature in {SIGNATURE}"
    if blob[:4] != _key_id(public):
        return "is signed by another key than the log key given"
    try:
        public.verify(blob[4:], SIGNED_AS + manifest)
    except InvalidSignature:
        return "does not match its signature: it was changed after the backup was made"
    return None


def run_tool(command: list[str], url: str) -> None:
    """Run a PostgreSQL tool on the database at `url`: its connection string goes in
    `--dbname` whole (TLS files, options) but for the password, which goes in the
    environment, never on a command line."""
    tool = shutil.which(command[0])
    if tool is None:
        raise BackupFailed(f"{command[0]} is not installed (Debian: postgresql-client)")
    params = conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password is not None else {})}
    target = conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
    done = subprocess.run(
        [tool, *command[1:], f"--dbname={target}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [" ".join(line.split()) for line in done.stderr.splitlines() if line.strip()]
        # The first error, not the statement it quotes after it.
        errors = [line for line in lines if line.startswith(f"{command[0]}: error: ")]
        if errors:
            said = errors[0].removeprefix(f"{command[0]}: error: ")
        else:
            said = lines[-1] if lines else str(done.returncode)
        raise BackupFailed(f"{command[0]} failed: {said}")


def _kept(data_dir: Path, spool_dir: Path) -> Any:
    """The tar filter for the data directory (archived as `data/`): what a backup keeps, as
    plain files and directories. A link is kept as the file it stands for: a hard link, and
    a symbolic link to a file in the data directory (its bytes and mode under the link's
    name); a symbolic link to anything else is refused, naming it, never left out unsaid."""
    spool = spool_dir.resolve()

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(member.name).parts[1:]
        if parts and parts[0] in LEFT_OUT:
            return None
        path = data_dir.joinpath(*parts)
        if path.resolve() == spool:
            return None
        if member.issym():
            return _as_file(member, path, data_dir)
        if member.islnk():  # another name of a file archived before: its bytes again
            member.type, member.linkname, member.size = tarfile.REGTYPE, "", path.stat().st_size
        if not (member.isfile() or member.isdir()):
            return None  # fifos, devices (and sockets, which tar skips): nothing a restore needs
        return member

    return keep


def _as_file(member: tarfile.TarInfo, link: Path, data_dir: Path) -> tarfile.TarInfo:
    """A symbolic link archived as the file in the data directory it points to."""
    try:
        target: Path | None = link.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop
        target = None
    if target is not None and target.is_relative_to(data_dir) and target.is_file():
        found = target.stat()
        member.type, member.linkname, member.size = tarfile.REGTYPE, "", found.st_size
        member.mode, member.mtime = stat.S_IMODE(found.st_mode), int(found.st_mtime)
        member.uid, member.gid, member.uname, member.gname = found.st_uid, found.st_gid, "", ""
        return member
    if target is None:
        where = "to nothing"
    elif not target.is_relative_to(data_dir):
        where = "out of the data directory"
    else:
        where = "to a directory" if target.is_dir() else "to what is not a file"
    raise BackupFailed(
        f"the data directory's {member.name.removeprefix('data/')} is a symbolic link {where}:"
        " a backup keeps the data directory's files; put the file itself there"
    )


def holds_required(data: Path, what: str) -> None:
    try:
        with tarfile.open(data) as tar:
            names = set(tar.getnames())
    except tarfile.TarError:
        raise InvalidInput(f"{data} is not a tar archive") from None
    missing = sorted(name.removeprefix("data/") for name in set(REQUIRED) - names)
    if missing:
        raise BackupFailed(f"{what} lacks {', '.join(missing)}: not an install's data directory")


def dated(root: Path, now: dt.datetime) -> Path:
    """The directory under `root` for a backup made at `now`: names sort as times do."""
    return root / now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def create(settings: Settings, out: Path, stage: Callable[[str], None] = _quiet) -> Verified:
    """Back up the install `settings` names into the new directory `out`; on a failure,
    nothing of it is left there."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Conflict(f"{out} exists and is not an empty directory")
    if out.resolve().is_relative_to(settings.data_dir.resolve()):
        raise InvalidInput(f"{out} is inside the data directory it would back up")
    from audit import review
    from audit.keys import load_signer

    with db.connect(settings) as conn:
        done = migrate.applied(conn)
        if not done:
            raise InvalidInput("the database has no CityGrid schema (citygrid db upgrade)")
        migration = f"{max(done):04d}_{done[max(done)]}"
        checkpoint = review.latest_checkpoint(conn)
    made = not out.exists()  # removed again on a failure (a timer's dated directory)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    dump, data = out / DUMP, out / DATA
    try:
        stage("dumping the database (pg_dump)")
        run_tool(["pg_dump", "--format=custom", "--file", str(dump)], settings.database_url)
        stage("archiving the data directory's key files")
        source = settings.data_dir.resolve()  # a link to it is archived as the directory
        with tarfile.open(data, "w") as tar:
            tar.add(source, arcname="data", filter=_kept(source, settings.audit_spool_path))
        holds_required(data, f"the data directory {settings.data_dir}")
        stage("signing the manifest with the audit log's key")
        # The key the archive holds, read as it is: nothing is written, nor made where it is
        # missing (the unit runs under ProtectSystem=strict).
        key = load_signer(settings.pki_dir)
        manifest = Manifest(
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            database=str(conninfo.conninfo_to_dict(settings.database_url).get("dbname", "")),
            migration=migration,
            checkpoint=None if checkpoint is None else {k: checkpoint[k] for k in ("size", "root")},
            files={DUMP: _sha256(dump), DATA: _sha256(data)},
        )
        text = manifest.text().encode()
        (out / SIGNATURE).write_text(sign(text, key), "utf-8")
        for path in (dump, data, out / SIGNATURE):
            path.chmod(0o600)
        (out / MANIFEST).write_bytes(text)  # last: a directory without it is no backup yet
        (out / MANIFEST).chmod(0o600)
    except BaseException:
        # Nothing of it left: no dump and key files in a directory without a manifest.
        for name in (MANIFEST, SIGNATURE, DATA, DUMP):
            with contextlib.suppress(OSError):  # not there; or not ours (then it stays)
                (out / name).unlink(missing_ok=True)
        if made:
            with contextlib.suppress(OSError):  # something else put in it meanwhile stays
                out.rmdir()
        raise
    return Verified(manifest, hashlib.sha256(text).hexdigest(), "checked")


def read(backup: Path) -> tuple[Manifest, bytes, int]:
    """The manifest of `backup` as written (its bytes, its format), its files not checked."""
    path = backup / MANIFEST
    try:
        text = path.read_bytes()
        doc = json.loads(text.decode("utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{backup} holds no {MANIFEST}: not a CityGrid backup") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"{path} is not JSON") from None
    # `true` is no format 1, though Python's `True in (1, 2)` holds.
    if (
        not isinstance(doc, dict)
        or type(doc.get("format")) is not int
        or doc["format"] not in (1, FORMAT)
    ):
        raise InvalidInput(f"{path}: not a backup of format 1 or {FORMAT}")
    try:
        manifest = Manifest(**{k: doc[k] for k in Manifest._fields})
        dt.datetime.fromisoformat(manifest.created_at)
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"{path} lacks a field a backup has") from None
    if not isinstance(manifest.files, dict) or set(manifest.files) != {DUMP, DATA}:
        raise InvalidInput(f"{path} must name {DUMP} and {DATA}")
    if not _well_formed(manifest):
        raise InvalidInput(f"{path} has a field of the wrong kind: not as a backup writes it")
    return manifest, text, doc["format"]


def _well_formed(manifest: Manifest) -> bool:
    """Each field of the kind `create` writes: the texts are text, the checkpoint is none or
    its size and root (what the command line shows of a backup, read before it is checked)."""
    texts = (manifest.database, manifest.migration, *manifest.files.values())
    log = manifest.checkpoint
    return all(isinstance(t, str) for t in texts) and (
        log is None
        or (
            isinstance(log, dict)
            and type(log.get("size")) is int
            and log["size"] >= 0
            and isinstance(log.get("root"), str)
        )
    )


def verify(backup: Path, log_key: Ed25519PublicKey | None = None) -> Verified:
    """The backup's manifest, once its signature verifies with `log_key` (when given) and
    every file it names hashes to what it says. Without a key the signature is not checked:
    whoever rewrites the files can rewrite the manifest too."""
    manifest, text, format_ = read(backup)
    signature: Literal["checked", "not checked", "unsigned"] = "unsigned"
    if format_ == 1 and log_key is not None:
        raise InvalidInput(f"{backup / MANIFEST} is unsigned (format 1): no key can prove it")
    if format_ != 1:
        try:
            said = (backup / SIGNATURE).read_text("utf-8")
        except FileNotFoundError:
            raise InvalidInput(f"{backup / SIGNATURE} is missing") from None
        except UnicodeDecodeError:
            said = ""
        signature = "not checked"
        if log_key is not None:
            wrong = check_signature(text, said, log_key)
            if wrong:
                raise InvalidInput(f"{backup / MANIFEST} {wrong}")
            signature = "checked"
    for name, expected in manifest.files.items():
        path = backup / name
        if not path.is_file():
            raise InvalidInput(f"{path} is missing")
        if _sha256(path) != expected:
            raise InvalidInput(f"{path} is not the file the backup made (its SHA-256 differs)")
    return Verified(manifest, hashlib.sha256(text).hexdigest(), signature)


def _unusable(exc: InvalidInput | OSError) -> str:
    """Why a directory under a prune's root is no complete backup, in a few words."""
    if isinstance(exc, InvalidInput):
        return exc.message
    reason = exc.strerror or type(exc).__name__
    return f"{Path(exc.filename).name}: {reason}" if exc.filename else reason


class Pruned(NamedTuple):
    kept: list[Path]  # the newest complete backups, newest first
    removed: list[Path]  # oldest first
    left: list[tuple[Path, str]]  # not backups, or not complete ones: never removed here


def prune(root: Path, keep: int) -> Pruned:
    """Remove the backups under `root` older than its newest `keep` complete ones (files
    hashing to their manifest). Only a directory with a manifest is ever removed; one
    without (a backup under way, anything else) or newer and damaged is left, and named."""
    if keep < 1:
        raise InvalidInput("keep at least one backup")
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory")
    found: list[tuple[str, str, Path]] = []
    left: list[tuple[Path, str]] = []
    for path in sorted(root.iterdir()):
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            found.append((read(path)[0].created_at, path.name, path))
        except (InvalidInput, OSError) as exc:  # one unreadable directory stops no pruning
            left.append((path, _unusable(exc)))
    kept: list[Path] = []
    older: list[Path] = []
    for _, _, path in sorted(found, reverse=True):
        if len(kept) == keep:
            older.append(path)
            continue
        try:
            verify(path)
            kept.append(path)
        except (InvalidInput, OSError) as exc:
            left.append((path, _unusable(exc)))
    for path in reversed(older):
        shutil.rmtree(path)
    return Pruned(kept, older[::-1], sorted(left))
