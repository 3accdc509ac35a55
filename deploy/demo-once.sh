#!/usr/bin/env bash
# Builds the demo district on first use (an empty database), then prints its summary.
set -euo pipefail
citygrid=$1
area=${2:-4}
count=$(psql "$CITYGRID_DATABASE_URL" -Atqc "SELECT count(*) FROM unit_grid")
if [ "$count" = "0" ]; then
    "$citygrid" demo --area-km2 "$area"
fi
psql "$CITYGRID_DATABASE_URL" -qc "
SELECT (SELECT name FROM district LIMIT 1) AS district,
       (SELECT count(*) FROM street) AS streets,
       (SELECT count(*) FROM community) AS communities,
       (SELECT count(*) FROM unit_grid) AS grids,
       (SELECT count(*) FROM component) AS components,
       (SELECT count(*) FROM building WHERE scale = 500) AS buildings,
       (SELECT count(*) FROM address) AS addresses"
