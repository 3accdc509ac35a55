"""Inspectors' handheld devices over a bad mobile link: `/device/v1/…`, for a device
certificate with a certificate-bound token only; idempotent changes and resumable uploads,
so that a dropped connection neither loses nor doubles anything."""
