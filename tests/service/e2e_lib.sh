# Shared by the end-to-end scripts (source it after setting $work):
# the server's cleanup, failure reports and the wait for its port.
server_pid=
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
touch "$work/server.log"
fail() { echo "FAIL: $*" >&2; echo "--- server log" >&2; cat "$work/server.log" >&2; exit 1; }

# Waits (up to 60 s) for the server $server_pid to write its port to FILE;
# prints 127.0.0.1:PORT.
wait_for_port() {
  local file=$1
  for _ in $(seq 1 600); do
    [[ -s "$file" ]] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server exited early"
    sleep 0.1
  done
  [[ -s "$file" ]] || fail "server did not report its port"
  echo "127.0.0.1:$(cat "$file")"
}
