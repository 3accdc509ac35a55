"""The serving processes' audit writer, as the settings choose where an entry is durable."""

from __future__ import annotations

from audit.keys import signer
from audit.spool import SpoolWriter
from audit.writer import AuditWriter, GroupCommitWriter
from mapserver.settings import Settings


def audit_writer(settings: Settings) -> AuditWriter:
    """The host's spool (`audit_durability = "spool"`, the default) or the database queue."""
    key = signer(settings.pki_dir)
    every, seconds = settings.audit_checkpoint_entries, settings.audit_checkpoint_seconds
    if settings.audit_durability == "spool":
        return SpoolWriter(
            settings.serving_database_url, key, every, seconds, settings.audit_spool_path
        )
    return GroupCommitWriter(settings.serving_database_url, key, every, seconds)
