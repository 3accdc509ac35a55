"""Administrative CLI acts are signed: a test install's first administrator and the
environment that makes `citygrid account|pki ...` sign with its key on disk."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mapserver.cli import main


def admin_env(env: dict[str, str], name: str, org: str | None = None) -> dict[str, str]:
    """`env` with CITYGRID_ADMIN_KEY/CERT of administrator `name`, bootstrapped on first use
    (`citygrid account bootstrap`; the CA must exist)."""
    out = Path(env["CITYGRID_DATA_DIR"]) / "admin-keys"
    key, cert = out / f"{name}.signing.key", out / f"{name}.signing.crt"
    if not key.exists():
        args = ["account", "bootstrap", name, "--out", str(out)]
        result = CliRunner().invoke(main, [*args, *(["--org", org] if org else [])], env=env)
        assert result.exit_code == 0, result.output
    return {**env, "CITYGRID_ADMIN_KEY": str(key), "CITYGRID_ADMIN_CERT": str(cert)}
