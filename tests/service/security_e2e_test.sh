#!/usr/bin/env bash
# End-to-end security: the real ldmserve with TLS, client certificates
# (mTLS) and bearer tokens, driven by the real ldmctl and the Python client.
# Certificates are made here with openssl (a throwaway CA).
#   security_e2e_test.sh LDMSERVE LDMCTL REGISTRY PYTHON3 PYTHONPATH
set -euo pipefail
ldmserve=$1
ldmctl=$2
registry=$3
python=$4
pythonpath=$5
work=$(mktemp -d)
source "$(dirname "$0")/e2e_lib.sh"
command -v openssl >/dev/null || { echo "SKIP: no openssl"; exit 77; }

# A CA, a server certificate for 127.0.0.1/localhost, a client certificate
# it signed, and a client certificate from another CA.
certificate() {  # NAME SIGNER_PREFIX EXTENSIONS
  openssl req -newkey rsa:2048 -nodes -keyout "$work/$1.key" \
    -subj "/CN=$1" -out "$work/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/$2.pem" \
    -CAkey "$work/$2.key" -CAcreateserial -days 2 -sha256 \
    -extfile "$work/$1.ext" -out "$work/$1.pem" 2>/dev/null
}
for ca in ca rogue-ca; do
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/$ca.key" \
    -subj "/CN=$ca" -days 2 -out "$work/$ca.pem" 2>/dev/null
done
certificate server ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
certificate client ca "extendedKeyUsage=clientAuth"
certificate rogue rogue-ca "extendedKeyUsage=clientAuth"

alice=alice-$(openssl rand -hex 16)
bob=bob-$(openssl rand -hex 16)
echo "alice $alice 2" >"$work/tokens"

# Misconfigured TLS: exit 2 with one line.
code=0
"$ldmserve" --listen=127.0.0.1:0 --metrics-listen= --models="$registry" \
  --tls-cert="$work/server.pem" 2>"$work/bad_tls.txt" || code=$?
[[ $code -eq 2 ]] || fail "--tls-cert without --tls-key: exit $code"
grep -q "^ldmserve: --tls-cert needs --tls-key" "$work/bad_tls.txt" \
  || fail "--tls-cert alone: $(cat "$work/bad_tls.txt")"
code=0
"$ldmserve" --listen=127.0.0.1:0 --metrics-listen= --models="$registry" \
  --auth-tokens="$work/no-such-file" 2>"$work/bad_tokens.txt" || code=$?
[[ $code -eq 2 ]] || fail "--auth-tokens missing file: exit $code"

"$ldmserve" --listen=127.0.0.1:0 --metrics-listen= --models="$registry" \
  --threads=1 --port-file="$work/port" \
  --tls-cert="$work/server.pem" --tls-key="$work/server.key" \
  --tls-client-ca="$work/ca.pem" --auth-tokens="$work/tokens" \
  >"$work/server.log" 2>&1 &
server_pid=$!
addr=$(wait_for_port "$work/port")
grep -q "in plaintext" "$work/server.log" && fail "plaintext warning with TLS"
tls=(--addr="$addr" --tls-ca="$work/ca.pem" --tls-cert="$work/client.pem"
     --tls-key="$work/client.key" --timeout=60)

# Health needs a client certificate but no token.
for _ in $(seq 1 600); do
  if "$ldmctl" "${tls[@]}" health >"$work/health.txt" 2>&1; then break; fi
  sleep 0.1
done
grep -qx SERVING "$work/health.txt" || fail "health over mTLS: $(cat "$work/health.txt")"

# Exit code 10 + the gRPC status: 24 UNAVAILABLE, 26 UNAUTHENTICATED.
expect_code() {  # EXPECTED WHAT COMMAND...
  local expected=$1 what=$2 code=0
  shift 2
  "$@" >"$work/out.txt" 2>&1 || code=$?
  [[ $code -eq $expected ]] || fail "$what: exit $code, not $expected: $(cat "$work/out.txt")"
}
expect_code 24 "plaintext to a TLS port" \
  "$ldmctl" --addr="$addr" --timeout=10 health
expect_code 24 "TLS without a client certificate" \
  "$ldmctl" --addr="$addr" --tls-ca="$work/ca.pem" --timeout=10 health
expect_code 24 "a client certificate from another CA" \
  "$ldmctl" --addr="$addr" --tls-ca="$work/ca.pem" --timeout=10 \
  --tls-cert="$work/rogue.pem" --tls-key="$work/rogue.key" health
expect_code 24 "a server the CA did not sign" \
  "$ldmctl" --addr="$addr" --tls-ca="$work/rogue-ca.pem" --timeout=10 \
  --tls-cert="$work/client.pem" --tls-key="$work/client.key" health
expect_code 26 "no token" "$ldmctl" "${tls[@]}" models
grep -q "UNAUTHENTICATED" "$work/out.txt" || fail "no token: $(cat "$work/out.txt")"
expect_code 26 "a wrong token" "$ldmctl" "${tls[@]}" --token="$bob" models

LDMSERVE_TOKEN=$alice "$ldmctl" "${tls[@]}" models >"$work/models.txt" 2>&1 \
  || fail "models with LDMSERVE_TOKEN: $(cat "$work/models.txt")"
grep -q "MODEL_STATE_READY" "$work/models.txt" || fail "models: $(cat "$work/models.txt")"
"$ldmctl" "${tls[@]}" --token="$alice" txt2img --prompt "a red circle" \
  --steps 3 --seed 7 --out "$work/out.png" 2>"$work/progress.txt" \
  || fail "txt2img over mTLS with a token: $(cat "$work/progress.txt")"
[[ "$(head -c 8 "$work/out.png" | od -An -tx1 | tr -d ' \n')" == "89504e470d0a1a0a" ]] \
  || fail "out.png is not a PNG"

# The Python client: TLS, client certificate and token.
PYTHONPATH=$pythonpath "$python" - "$addr" "$work" "$alice" "$bob" <<'EOF' \
  >"$work/python.txt" 2>&1 || fail "python client: $(cat "$work/python.txt")"
import sys
from ldmclient import Client, LdmError, Tls
addr, work, alice, bob = sys.argv[1:]
tls = Tls.from_files(ca=f"{work}/ca.pem", cert=f"{work}/client.pem",
                     key=f"{work}/client.key")
with Client(addr, timeout=60, tls=tls, token=alice) as client:
    result = client.txt2img("a blue square", steps=3, seed=7)
    assert result.images[0].png.startswith(b"\x89PNG"), "not a PNG"
with Client(addr, timeout=60, tls=tls, token=bob) as client:
    try:
        client.models()
        raise SystemExit("a wrong token was accepted")
    except LdmError as error:
        assert error.code == "UNAUTHENTICATED", error.code
print("ok")
EOF

# SIGHUP rereads the tokens: alice revoked, bob let in; a file that does not
# parse leaves them as they were.
echo "bob $bob" >"$work/tokens"
kill -HUP "$server_pid"
for _ in $(seq 1 100); do
  grep -q "SIGHUP: 1 clients" "$work/server.log" && break
  sleep 0.1
done
grep -q "SIGHUP: 1 clients" "$work/server.log" || fail "no reload logged"
expect_code 26 "a revoked token" "$ldmctl" "${tls[@]}" --token="$alice" models
expect_code 0 "a token added by SIGHUP" "$ldmctl" "${tls[@]}" --token="$bob" models
echo "bob" >"$work/tokens"
kill -HUP "$server_pid"
for _ in $(seq 1 100); do
  grep -q "SIGHUP: tokens unchanged" "$work/server.log" && break
  sleep 0.1
done
grep -q "SIGHUP: tokens unchanged" "$work/server.log" || fail "bad file not reported"
expect_code 0 "tokens kept after a bad file" "$ldmctl" "${tls[@]}" --token="$bob" models

# Tokens never reach the log.
grep -q -e "$alice" -e "$bob" "$work/server.log" && fail "a token is in the log"
kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit code $?"
server_pid=

# Plaintext on a non-loopback address is allowed, with a warning.
"$ldmserve" --listen=0.0.0.0:0 --metrics-listen= --models="$registry" \
  --threads=1 --port-file="$work/port2" >"$work/server.log" 2>&1 &
server_pid=$!
wait_for_port "$work/port2" >/dev/null
grep -q "listening on 0.0.0.0:0 in plaintext" "$work/server.log" \
  || fail "no plaintext warning"
kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit code $?"
server_pid=
echo PASS
