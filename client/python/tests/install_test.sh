#!/usr/bin/env bash
# The client installs like a Python package: pip install into a fresh venv
# (offline: Debian's setuptools, wheel, grpcio and protobuf through
# --system-site-packages), then its tests run from the installed copy with
# no PYTHONPATH.
#   install_test.sh PYTHON3 CLIENT_SOURCE_DIR LDMSERVE REGISTRY
set -euo pipefail
python=$1
source_dir=$2
ldmserve=$3
registry=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv --system-site-packages "$work/venv" >/dev/null 2>&1 ||
  { echo "SKIP: python3 -m venv unavailable (Debian: python3-venv)"; exit 77; }
[[ -x "$work/venv/bin/pip" ]] ||
  { echo "SKIP: no pip in the venv (Debian: python3-pip)"; exit 77; }
# A copy: pip builds in the source tree and would leave build/ there.
cp -r "$source_dir" "$work/src"
rm -rf "$work/src/tests"
"$work/venv/bin/pip" install --quiet --no-index --no-build-isolation \
  "$work/src" >"$work/pip.log" 2>&1 || { cat "$work/pip.log"; exit 1; }
cd "$work"
unset PYTHONPATH
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
import ldmclient
from ldm.v1 import image_synthesis_pb2
for module in (ldmclient, image_synthesis_pb2):
    assert module.__file__.startswith(sys.argv[1]), module.__file__
print("installed:", ldmclient.__file__)
PY
"$work/venv/bin/python" "$source_dir/tests/test_client.py" "$ldmserve" "$registry"
