#!/usr/bin/env bash
# Copies the browser libraries from the npm registry's packages into static/vendor.
# Run by deploy/setup.sh; the page never loads anything from outside the server.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f node_modules/leaflet/dist/leaflet.js ] || [ ! -f node_modules/echarts/dist/echarts.min.js ] \
    || [ package.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
mkdir -p static/vendor/leaflet
cp node_modules/leaflet/dist/leaflet.js node_modules/leaflet/dist/leaflet.css static/vendor/leaflet/
mkdir -p static/vendor/echarts
cp node_modules/echarts/dist/echarts.min.js node_modules/echarts/LICENSE static/vendor/echarts/
