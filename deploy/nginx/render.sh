#!/usr/bin/env bash
# Writes an nginx server block for CityGrid from the template.
# Usage: render.sh LISTEN SERVER_NAME PKI_DIR APP_SOCKET[,APP_SOCKET...] TILE_DIR > citygrid.conf
#   APP_SOCKET: the absolute path of a gateway's Unix socket (citygrid serve --behind-nginx
#   --bind unix:APP_SOCKET); several gateways: their sockets separated by commas
#   TILE_DIR: the absolute path of the tile cache ($CITYGRID_DATA_DIR/tiles), which nginx
#   sends from once the app has authorised and audited a tile request
set -euo pipefail
here=$(dirname "$0")
servers=""
IFS=, read -r -a sockets <<< "${4:-}"
[ ${#sockets[@]} -gt 0 ] || sockets=("")
for socket in "${sockets[@]}"; do
    case $socket in
        /*[!A-Za-z0-9_./-]*) echo "render.sh: APP_SOCKET $socket: letters, digits, _ . / - only" >&2; exit 2 ;;
        /*) ;;
        *) echo "render.sh: APP_SOCKET must be an absolute path to the app's Unix socket" >&2; exit 2 ;;
    esac
    servers+="    server unix:$socket max_fails=1 fail_timeout=5s;"$'\n'
done
case ${5:-} in
    /*) ;;
    *) echo "render.sh: TILE_DIR must be the absolute path of the tile cache" >&2; exit 2 ;;
esac
export LISTEN=$1 SERVER_NAME=$2 APP_SERVERS=${servers%$'\n'} TILE_DIR=${5%/}
pki=$3
export SERVER_CERT=$pki/server/$SERVER_NAME.crt SERVER_KEY=$pki/server/$SERVER_NAME.key
export CA_CERT=$pki/ca.crt CRL=$pki/crl.pem
envsubst '${LISTEN} ${SERVER_NAME} ${SERVER_CERT} ${SERVER_KEY} ${CA_CERT} ${CRL} ${APP_SERVERS} ${TILE_DIR}' \
    < "$here/citygrid.conf.template"
