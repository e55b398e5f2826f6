#!/usr/bin/env bash
# Build the docs, serve them on 127.0.0.1 and take screenshots with headless Chromium (not run by CI).
#
#   docs/screenshot.sh [OUT_DIR]         # default build/screenshots; needs Debian's `chromium`
#                                        # (apt-get install -y chromium) and the docs extra
# Pages: home, choosing (method table), uncertainty maths, one method page.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-build/screenshots}"
SITE="$(mktemp -d)"
PROFILE="$(mktemp -d)"
PORT="${PORT:-8765}"
mkdir -p "$OUT"
export NO_MKDOCS_2_WARNING=1 PYTHONPATH=src
python -m mkdocs build --strict --quiet --site-dir "$SITE"
python -m http.server "$PORT" --bind 127.0.0.1 --directory "$SITE" >/dev/null 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; rm -rf "$SITE" "$PROFILE"' EXIT
sleep 1
shoot() {  # name, path, height
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$PROFILE" --hide-scrollbars --virtual-time-budget=5000 \
    --window-size="1440,${3:-1100}" --screenshot="$OUT/$1.png" "http://127.0.0.1:$PORT/$2" 2>/dev/null
  echo "$OUT/$1.png"
}
shoot home "" 1100
shoot getting-started "getting-started/" 1500
shoot choosing "choosing/" 4200
shoot uncertainty "uncertainty/" 1600
shoot method-uw "methods/uw/" 1600
shoot migrating "migrating/" 1400
shoot engines "engines/" 1400
shoot benchmarks "benchmarks/" 3000
shoot method-mgda "methods/mgda/" 1400
