#!/usr/bin/env bash
# Re-fetches the dashboard's front-end assets from the npm registry at pinned versions and
# copies the files the pages use (and each package's license) into static/vendor/.
# The repository holds the result, so the dashboard works offline; run this only to upgrade.
set -euo pipefail

VENDOR="$(cd "$(dirname "$0")/.." && pwd)/packages/server/src/fleetcore/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# name@version, directory under static/vendor, files (relative to the package) to copy
fetch() {
  local spec="$1" dir="$2"; shift 2
  (cd "$WORK" && npm pack --silent "$spec" >/dev/null)
  local tgz; tgz="$(ls "$WORK"/*.tgz)"
  mkdir -p "$WORK/x" "$VENDOR/$dir"
  tar xzf "$tgz" -C "$WORK/x"
  for file in "$@" LICENSE; do cp "$WORK/x/package/$file" "$VENDOR/$dir/"; done
  echo "$spec from the npm registry (npm pack $spec); $(node -p "require('$WORK/x/package/package.json').license")." \
    > "$VENDOR/$dir/VERSION"
  rm -rf "$WORK"/*
}

fetch htmx.org@2.0.11 htmx dist/htmx.min.js
fetch uplot@1.6.32 uplot dist/uPlot.iife.min.js dist/uPlot.min.css
fetch swagger-ui-dist@5.35.0 swagger-ui swagger-ui-bundle.js swagger-ui.css favicon-32x32.png
# ReDoc 2 (the standalone bundle starts itself on <redoc spec-url>); its bundled licences too
fetch redoc@2.5.4 redoc bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt
