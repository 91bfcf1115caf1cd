#!/usr/bin/env python3
"""Soak: a real ldmserve on the shipped models under REQUESTS calls at
concurrency 32 with cancels, deadlines, silent clients and 5% malformed calls
(tests/service/soak_client.cc says how each behaves), then SIGTERM.

Checks: every call ended with one final status its behaviour allows and
equal (prompt, seed, steps) gave equal images (the client's checks); the
server's request counters agree with what the clients saw; the server's
resident memory and open file descriptors stay flat between the second and
the last quarter of the run; SIGTERM drains and exits 0.

    soak_test.py LDMSERVE SOAK_CLIENT REGISTRY
    LDMSERVE_SOAK_REQUESTS=2000 ctest -L soak --output-on-failure  # long form
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

# Growth allowed from the second to the last quarter: allocator noise, not
# a leak (a leak of one 64x64 image per call would be 12 KiB x calls).
RSS_SLACK_BYTES = 48 << 20
RSS_SLACK_FRACTION = 0.10
FD_SLACK = 8


def resident_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                timeout=10) as response:
        return response.read().decode()


def requests_by_code(exposition):
    counts = {}
    for match in re.finditer(
            r'^ldmserve_requests_total\{([^}]*)\} ([0-9.e+]+)$', exposition,
            re.MULTILINE):
        code = re.search(r'code="([A-Z_]+)"', match.group(1)).group(1)
        counts[code] = counts.get(code, 0) + int(float(match.group(2)))
    return counts


def main():
    ldmserve, soak_client, registry = sys.argv[1:4]
    requests = int(os.environ.get("LDMSERVE_SOAK_REQUESTS", "400"))
    concurrency = 32
    failures = []
    with tempfile.TemporaryDirectory() as work:
        log_path = os.path.join(work, "server.log")
        port_file = os.path.join(work, "port")
        log = open(log_path, "w")
        server = subprocess.Popen(
            [ldmserve, "--listen=127.0.0.1:0",
             "--metrics-listen=127.0.0.1:0", f"--models={registry}",
             f"--port-file={port_file}", "--drain-timeout=30"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            metrics_port = None
            while time.monotonic() < deadline:
                with open(log_path) as f:
                    text = f.read()
                found = re.search(r"metrics on port (\d+)", text)
                if found and "] serving" in text:
                    metrics_port = int(found.group(1))
                    break
                if server.poll() is not None:
                    break
                time.sleep(0.1)
            if metrics_port is None:
                print(open(log_path).read())
                print("FAIL: the server did not start")
                return 1
            with open(port_file) as f:
                address = f"127.0.0.1:{f.read().strip()}"

            started = time.monotonic()
            client = subprocess.Popen(
                [soak_client, f"--addr={address}",
                 f"--requests={requests}", f"--concurrency={concurrency}"],
                stdout=subprocess.PIPE, text=True)
            samples = []  # (calls done, resident bytes, open fds)
            summary = None
            for line in client.stdout:
                if line.startswith("progress "):
                    done = int(line.split()[1])
                    samples.append((done, resident_bytes(server.pid),
                                    open_fds(server.pid)))
                elif line.startswith("summary "):
                    summary = json.loads(line[len("summary "):])
            client.wait()
            seconds = time.monotonic() - started
            if summary is None:
                print("FAIL: the client printed no summary")
                return 1
            failures += summary["violations"]

            # The server's counters against the clients' view.
            server_counts = requests_by_code(scrape(metrics_port))
            client_counts = {}
            for codes in summary["counts"].values():
                for code, count in codes.items():
                    client_counts[code] = client_counts.get(code, 0) + count
            total = sum(server_counts.values())
            if total != requests:
                failures.append(f"server counted {total} calls, clients "
                                f"made {requests}")
            for code in ("INVALID_ARGUMENT", "NOT_FOUND"):
                if server_counts.get(code, 0) != client_counts.get(code, 0):
                    failures.append(
                        f"{code}: server {server_counts.get(code, 0)}, "
                        f"clients {client_counts.get(code, 0)}")
            # A client's cancel can race a result the server already sent.
            ended = ("OK", "CANCELLED", "DEADLINE_EXCEEDED")
            if sum(server_counts.get(c, 0) for c in ended) != sum(
                    client_counts.get(c, 0) for c in ended):
                failures.append(f"ended calls differ: server {server_counts},"
                                f" clients {client_counts}")
            if server_counts.get("OK", 0) < client_counts.get("OK", 0):
                failures.append("the server counted fewer OK calls than the "
                                "clients received")
            unexpected = set(server_counts) - set(ended) - {
                "INVALID_ARGUMENT", "NOT_FOUND"}
            if unexpected:
                failures.append(f"unexpected codes at the server: "
                                f"{sorted(unexpected)}")

            # Flat memory and descriptors: second quarter against the last.
            def quarter(lo, hi):
                return [s for s in samples
                        if lo * requests < s[0] <= hi * requests]
            second, last = quarter(0.25, 0.5), quarter(0.75, 1.0)
            if not second or not last:
                failures.append("too few samples")
            else:
                rss_second = max(s[1] for s in second)
                rss_last = max(s[1] for s in last)
                fds_second = max(s[2] for s in second)
                fds_last = max(s[2] for s in last)
                allowed = max(RSS_SLACK_BYTES,
                              RSS_SLACK_FRACTION * rss_second)
                if rss_last - rss_second > allowed:
                    failures.append(
                        f"resident memory grew {rss_second >> 20} -> "
                        f"{rss_last >> 20} MiB")
                if fds_last - fds_second > FD_SLACK:
                    failures.append(f"open fds grew {fds_second} -> "
                                    f"{fds_last}")
                print(f"soak: {requests} calls at concurrency {concurrency} "
                      f"in {seconds:.1f} s ({requests / seconds:.1f} calls/s);"
                      f" RSS max {rss_second >> 20} MiB (2nd quarter) -> "
                      f"{rss_last >> 20} MiB (last); open fds {fds_second}"
                      f" -> {fds_last}")
            print("clients:", json.dumps(summary["counts"], sort_keys=True))
            print("server: ", json.dumps(server_counts, sort_keys=True))

            # SIGTERM under load: calls in flight finish, later ones get
            # UNAVAILABLE, the server exits 0.
            drain = subprocess.Popen(
                [soak_client, f"--addr={address}", "--requests=96",
                 f"--concurrency={concurrency}", "--only_normal",
                 "--allow_unavailable", "--seed=2"],
                stdout=subprocess.PIPE, text=True)
            drain_summary = None
            signalled = False
            for line in drain.stdout:
                if (line.startswith("progress ") and not signalled
                        and int(line.split()[1]) >= 10):
                    server.send_signal(signal.SIGTERM)
                    signalled = True
                elif line.startswith("summary "):
                    drain_summary = json.loads(line[len("summary "):])
            drain.wait()
            if not signalled:
                server.send_signal(signal.SIGTERM)
                failures.append("the drain check ended before SIGTERM")
            code = server.wait(timeout=90)
            if code != 0:
                failures.append(f"exit code {code} after SIGTERM under load")
            if not drain_summary or "counts" not in drain_summary:
                failures.append("the drain check printed no summary")
            else:
                failures += [f"drain: {v}" for v in
                             drain_summary["violations"]]
                if drain_summary["counts"].get("normal", {}).get("OK", 0) == 0:
                    failures.append("drain: no call in flight finished")
                print("drain: ", json.dumps(drain_summary["counts"],
                                            sort_keys=True))
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            log.close()
        if failures:
            print(open(log_path).read()[-4000:])
            for failure in failures:
                print("FAIL:", failure)
            return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
