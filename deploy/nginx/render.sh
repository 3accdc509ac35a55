#!/usr/bin/env bash
# Writes an nginx server block for CityGrid from the template.
# Usage: render.sh LISTEN SERVER_NAME PKI_DIR APP_HOST:PORT > citygrid.conf
set -euo pipefail
here=$(dirname "$0")
export LISTEN=$1 SERVER_NAME=$2 APP=$4
pki=$3
export SERVER_CERT=$pki/server/$SERVER_NAME.crt SERVER_KEY=$pki/server/$SERVER_NAME.key
export CA_CERT=$pki/ca.crt CRL=$pki/crl.pem
envsubst '${LISTEN} ${SERVER_NAME} ${SERVER_CERT} ${SERVER_KEY} ${CA_CERT} ${CRL} ${APP}' \
    < "$here/citygrid.conf.template"
