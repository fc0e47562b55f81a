#!/usr/bin/env bash
# Type-checks deploy/grafana/poold-dashboard.json against Grafana's own
# dashboard schema (the TypeScript types of npm's @grafana/schema, the ones
# Grafana's front end is built with): unknown fields and wrong types fail.
# Grafana itself is not packaged in Debian; this, and the e2e test that runs
# every query of the dashboard against a real Prometheus
# (tests/e2e/metrics_e2e_test.cc), are what check the dashboard here.
#
# Usage: deploy/grafana/check-dashboard.sh [GRAFANA_SCHEMA_VERSION]
# Needs node and npm (the npm registry); installs into a temporary folder.
set -euo pipefail

version="${1:-10}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

cd "${work}"
npm install --silent --no-audit --no-fund typescript "@grafana/schema@${version}" >/dev/null
python3 - "${here}/poold-dashboard.json" > check.ts <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
print("import { Dashboard } from '@grafana/schema';")
print("const dashboard: Dashboard = " + json.dumps(dashboard, indent=1) + ";")
print("export default dashboard;")
PY
npx tsc --noEmit --strict --module nodenext --moduleResolution nodenext \
  --skipLibCheck check.ts
echo "check-dashboard: poold-dashboard.json matches @grafana/schema" \
  "$(node -p "require('@grafana/schema/package.json').version")"
