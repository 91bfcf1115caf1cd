#!/usr/bin/env bash
# buf lint over proto/. Exits 77 (CTest: skipped) when buf is not installed;
# deploy/install-deps.sh installs it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
buf="$root/tools/buf/node_modules/.bin/buf"
if [[ ! -x "$buf" ]]; then
  echo "buf not installed (run deploy/install-deps.sh)" >&2
  exit 77
fi
cd "$root/proto"
"$buf" lint
echo "buf lint: clean"
