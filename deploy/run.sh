#!/usr/bin/env bash
# `make run`: the demo district, a CA, one demo account per role with certificates, then
# CityGrid served over mutual TLS. Everything is made once and reused on later runs.
set -euo pipefail
citygrid=$1
area=${2:-4}
bind=${3:-127.0.0.1:8443}
data=${CITYGRID_DATA_DIR:-./var}
demo="$data/pki/demo"
mkdir -p "$data" "$demo"

# The CA passphrase: from the environment, else a generated file kept beside the data.
if [ -z "${CITYGRID_CA_PASSPHRASE:-}" ] && [ -z "${CITYGRID_CA_PASSPHRASE_FILE:-}" ]; then
    export CITYGRID_CA_PASSPHRASE_FILE="$data/ca-passphrase"
    if [ ! -s "$CITYGRID_CA_PASSPHRASE_FILE" ]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -d '=+/\n' > "$CITYGRID_CA_PASSPHRASE_FILE")
    fi
fi

sql() { psql "$CITYGRID_DATABASE_URL" -Atqc "$1"; }

if [ "$(sql 'SELECT count(*) FROM unit_grid')" = "0" ]; then
    "$citygrid" demo --area-km2 "$area"
fi
[ -f "$data/pki/ca.crt" ] || "$citygrid" pki init
[ -f "$data/pki/crl.pem" ] || "$citygrid" pki crl >/dev/null

# Changes of accounts, roles and certificates are signed acts of an administrator: the demo
# administrator's signing key is made once (0600) and signs what follows.
if [ -z "${CITYGRID_ADMIN_KEY:-}" ]; then
    export CITYGRID_ADMIN_KEY="$demo/demo-admin.signing.key"
    export CITYGRID_ADMIN_CERT="$demo/demo-admin.signing.crt"
fi
if [ ! -f "$CITYGRID_ADMIN_KEY" ]; then
    "$citygrid" account bootstrap demo-admin --org district --out "$demo" >/dev/null || {
        echo "run: no signing key for demo-admin in $demo, and another administrator signs" >&2
        echo "     for this install: set CITYGRID_ADMIN_KEY and CITYGRID_ADMIN_CERT to theirs" >&2
        exit 1
    }
fi

p12pass="$demo/p12-password.txt"
[ -s "$p12pass" ] || (umask 077; echo "citygrid-demo" > "$p12pass")
declare -A org=(
    [viewer]=street-001 [inspector]=street-001 [operator]=supervision [shift_leader]=supervision
    [dispatcher]=command [bureau_handler]=bureau-01 [street_supervisor]=street-001
    [leader]=district [security_officer]=supervision [admin]=district [screen]=command
)
for role in viewer inspector operator shift_leader dispatcher bureau_handler street_supervisor \
            leader security_officer admin screen; do
    name="demo-${role//_/-}"
    if [ "$(sql "SELECT count(*) FROM account WHERE name = '$name'")" = "0" ]; then
        "$citygrid" account add "$name" --role "$role" --org "${org[$role]}" >/dev/null
    fi
    if [ ! -f "$demo/$name.p12" ]; then
        "$citygrid" pki issue --account "$name" --kind person --out "$demo" \
            --p12-password-file "$p12pass" >/dev/null
    fi
done

# The CA signer: the only server process with the CA key (and passphrase). gunicorn asks it
# over a 0600 Unix socket to issue signing certificates and to publish CRLs; it also
# republishes the CRL well before its next update.
"$citygrid" signer &
signer_pid=$!
trap 'kill "$signer_pid" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
    [ -S "${CITYGRID_SIGNER_SOCKET:-$data/run/signer.sock}" ] && break
    kill -0 "$signer_pid" 2>/dev/null || { echo "run: the signer did not start" >&2; exit 1; }
    sleep 0.1
done

# Exit 2: bad settings (stop here). Exit 1: a CRL or certificate has run out, which the
# signer and `serve` renew before serving.
"$citygrid" config check >/dev/null || [ $? -eq 1 ]
sql "SELECT 'district: ' || name FROM district LIMIT 1"
sql "SELECT 'streets ' || (SELECT count(*) FROM street) || ', communities ' || (SELECT count(*) FROM community) || ', unit grids ' || (SELECT count(*) FROM unit_grid) || ', components ' || (SELECT count(*) FROM component)"
cat <<MSG

CityGrid is starting at https://$bind/
  Browser: import a PKCS#12 from $demo/ (e.g. demo-inspector.p12, password in
  $p12pass) into the browser's personal certificates, and trust $data/pki/ca.crt
  as an authority; then open the URL and pick that certificate.
  curl:    curl --cacert $data/pki/ca.crt --cert $demo/demo-viewer.crt \\
                --key $demo/demo-viewer.key https://$bind/auth/whoami
  Signing keys: an administrator hands out a one-time enrolment code for the manage page
           (a signed act, with the administrator's key):
           CITYGRID_ADMIN_KEY=$CITYGRID_ADMIN_KEY \\
           CITYGRID_ADMIN_CERT=$CITYGRID_ADMIN_CERT $citygrid pki enrol-code demo-admin

MSG
# Not exec: the trap stops the signer when the server ends. serve never passes the CA
# passphrase on to gunicorn.
"$citygrid" serve --bind "$bind"
