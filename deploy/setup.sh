#!/usr/bin/env bash
# Installs and starts what CityGrid needs on a Debian machine, skipping what is already there:
# PostgreSQL 15 + PostGIS, Redis, GDAL's command-line tools, CJK fonts, a Python virtualenv
# with CityGrid installed. Safe to run again; `make run` and `make test` call it.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DB_URL=${CITYGRID_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/citygrid}
REDIS_HOST=127.0.0.1
REDIS_PORT=6379

say() { printf 'setup: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*"; exit 1
    fi
}

# --- Debian packages ------------------------------------------------------------------
packages=(postgresql postgresql-15-postgis-3 postgresql-contrib redis-server redis-tools gdal-bin
          fonts-noto-cjk fonts-wqy-zenhei python3-venv python3-dev build-essential nginx chromium
          gettext-base faketime)
command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- PostgreSQL -----------------------------------------------------------------------
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    say "starting PostgreSQL"
    version=$(ls /etc/postgresql | sort -n | tail -n 1)
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start \
        || as_root pg_ctlcluster "$version" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! psql "${DB_URL%/*}/postgres" -Atqc 'SELECT 1' >/dev/null 2>&1; then
    # A fresh Debian cluster asks 127.0.0.1 clients for a password the postgres role does
    # not have. For a local development install, trust the postgres role on loopback only;
    # a production install sets CITYGRID_DATABASE_URL with its own role and password.
    version=$(ls /etc/postgresql | sort -n | tail -n 1)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    say "allowing the postgres, citygrid_app, citygrid_map and citygrid_component roles on loopback without password in $hba (development set-up)"
    as_root sed -i '1i host all postgres,citygrid_app,citygrid_map,citygrid_component 127.0.0.1/32 trust\nhost all postgres,citygrid_app,citygrid_map,citygrid_component ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload \
        || as_root pg_ctlcluster "$version" main reload
elif [ -d /etc/postgresql ]; then
    # A development cluster set up before the read-only map role existed: trust it alike.
    version=$(ls /etc/postgresql | sort -n | tail -n 1)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if as_root grep -q '^host all postgres,citygrid_app 127.0.0.1/32 trust$' "$hba" 2>/dev/null; then
        say "allowing the citygrid_map role on loopback without password in $hba (development set-up)"
        as_root sed -i 's/^host all postgres,citygrid_app \(127.0.0.1\/32\|::1\/128\) trust$/host all postgres,citygrid_app,citygrid_map \1 trust/' "$hba"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload \
            || as_root pg_ctlcluster "$version" main reload
    fi
fi

# --- Redis ----------------------------------------------------------------------------
if ! redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    say "starting Redis"
    redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" \
        --appendonly no >/dev/null
    for _ in $(seq 1 20); do redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# --- Python ---------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    python3 -m venv "$VENV"
fi
stamp="$VENV/.citygrid-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing CityGrid and its dependencies into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e '.[dev]'
    touch "$stamp"
fi

# --- Browser client: libraries from the npm registry, copied into the package ---------
if [ ! -f webclient/static/vendor/leaflet/leaflet.js ] || [ ! -f webclient/static/vendor/echarts/echarts.min.js ] \
    || [ webclient/package.json -nt webclient/static/vendor/leaflet/leaflet.js ]; then
    say "building the browser client"
    bash webclient/build.sh
fi
