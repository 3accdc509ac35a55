"""Why a TLS handshake refused a client certificate, as one short reason code.

OpenSSL's verify messages (from Python's ssl module, or nginx's $ssl_client_verify) mapped to
the reasons audit entries carry; pure, so both the gunicorn worker and the gateway use it.
"""

from __future__ import annotations

REASONS = (
    ("certificate has expired", "expired"),
    ("certificate revoked", "revoked"),
    ("unsupported certificate purpose", "not_client_certificate"),
    ("unsuitable certificate purpose", "not_client_certificate"),
    ("unable to get local issuer certificate", "untrusted_issuer"),
    ("self-signed certificate", "untrusted_issuer"),
    ("self signed certificate", "untrusted_issuer"),
    ("certificate signature failure", "untrusted_issuer"),
    ("unable to get certificate CRL", "crl_missing"),
    ("CRL has expired", "crl_expired"),
    ("peer did not return a certificate", "no_certificate"),
    ("certificate is not yet valid", "not_yet_valid"),
)


def reason_of(exc: BaseException) -> str:
    text = " ".join(
        str(part) for part in (getattr(exc, "verify_message", ""), getattr(exc, "reason", ""), exc)
    )
    for needle, reason in REASONS:
        if needle.lower() in text.lower():
            return reason
    return "tls_handshake_failed"
