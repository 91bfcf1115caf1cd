# Sourced by the bench scripts: starts and stops one ldmserve on a free
# port. Needs $build and $root; sets $work (removed on exit), $server_pid
# and $addr.
work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# start_server LOG [ldmserve flags...]: returns once health is SERVING.
start_server() {
  local log=$1
  shift
  rm -f "$work/port"
  "$build/server/ldmserve" --listen=127.0.0.1:0 --port-file="$work/port" \
    --models="$root/models/registry.json" "$@" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 600); do [[ -s "$work/port" ]] && break; sleep 0.1; done
  addr="127.0.0.1:$(cat "$work/port")"
  until "$build/client/ldmctl" --addr="$addr" health >/dev/null 2>&1; do sleep 0.1; done
}

stop_server() {
  kill "$server_pid"
  wait "$server_pid" || true
  server_pid=
}
