#!/usr/bin/env python3
"""Checks the monitoring that ships with ldmserve against the real server.

- The PrometheusRule's groups pass `promtool check rules`, and its alerts
  their unit tests (`promtool test rules` on tests/deploy/alerts_test.yaml).
- A live scrape of a running ldmserve (the shipped models, after one
  request) passes `promtool check metrics`.
- Every metric that the rules, the prometheus-adapter rule, the HPA and the
  Grafana dashboard name appears in that scrape; the two that exist only
  where there is something to report (GPU memory, a container memory limit)
  are checked to be absent for that reason and registered by the server.
- The dashboard parses and its panels are well formed.

Usage: monitoring_test.py SOURCE_ROOT LDMSERVE LDMCTL. Exits 77 (skipped)
without promtool or PyYAML. $PROMTOOL overrides the promtool used.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

try:
    import yaml
except ImportError:  # Reported as skipped by CTest, not as passed.
    print("SKIP: PyYAML (python3-yaml) is not installed")
    sys.exit(77)

SOURCE_ROOT, LDMSERVE, LDMCTL = (sys.argv[1:4] if len(sys.argv) >= 4 else
                                 (".", "build/server/ldmserve",
                                  "build/client/ldmctl"))
K8S = os.path.join(SOURCE_ROOT, "deploy", "k8s")
PROMTOOL = os.path.abspath(
    os.environ.get("PROMTOOL") or shutil.which("promtool") or
    os.path.join(SOURCE_ROOT, "tools", "prometheus", "promtool"))
METRIC = re.compile(r"\b(ldmserve_[a-z_]+|ldmserve:[a-z_0-9:]+)")
# Synthesised by Prometheus for every target, never exported.
PROMETHEUS_OWN = {"up"}


def load_yaml(*parts):
    with open(os.path.join(SOURCE_ROOT, *parts)) as f:
        return yaml.safe_load(f)


def rule_groups():
    return load_yaml("deploy", "k8s", "base",
                     "prometheus-rule.yaml")["spec"]["groups"]


def dashboard():
    with open(os.path.join(K8S, "grafana", "ldmserve-dashboard.json")) as f:
        return json.load(f)


def dashboard_queries(board):
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["name"], variable["query"]["query"]


def named_metrics():
    """{metric name: where it is named} over rules, adapter, HPA, dashboard."""
    named = {}

    def note(text, where):
        for name in METRIC.findall(text):
            named.setdefault(name, where)

    for group in rule_groups():
        for rule in group["rules"]:
            note(rule["expr"], rule.get("alert") or rule.get("record"))
    for rule in load_yaml("deploy", "k8s", "prometheus-adapter",
                          "rules.yaml")["rules"]:
        note(rule["seriesQuery"], "prometheus-adapter")
        note(rule["name"]["as"], "prometheus-adapter")
    hpa = load_yaml("deploy", "k8s", "base", "horizontal-pod-autoscaler.yaml")
    for metric in hpa["spec"]["metrics"]:
        note(metric["pods"]["metric"]["name"], "HorizontalPodAutoscaler")
    for where, query in dashboard_queries(dashboard()):
        note(query, f"dashboard: {where}")
    return named


def cgroup_memory_limited():
    """Whether this process runs under a memory limit (as ldmserve reads)."""
    for path in ("/sys/fs/cgroup/memory.max",
                 "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 2**62:
            return True
    return False


def registered_metrics():
    with open(os.path.join(SOURCE_ROOT, "server", "service",
                           "metrics.cc")) as f:
        return set(re.findall(r'\.Name\("(ldmserve_[a-z_]+)"\)', f.read()))


class RulesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="ldmserve_rules_")
        with open(os.path.join(cls.work, "rules.yaml"), "w") as f:
            yaml.safe_dump({"groups": rule_groups()}, f)
        shutil.copy(os.path.join(SOURCE_ROOT, "tests", "deploy",
                                 "alerts_test.yaml"), cls.work)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work)

    def promtool(self, *args):
        result = subprocess.run([PROMTOOL, *args], cwd=self.work,
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0,
                         f"promtool {' '.join(args)}:\n{result.stdout}"
                         f"{result.stderr}")

    def test_rules_pass_promtool_check(self):
        self.promtool("check", "rules", "rules.yaml")

    def test_alerts_pass_their_unit_tests(self):
        self.promtool("test", "rules", "alerts_test.yaml")

    def test_every_alert_has_a_runbook_section(self):
        with open(os.path.join(SOURCE_ROOT, "docs", "deploy.md")) as f:
            anchors = {"docs/deploy.md#" + re.sub(r"[^a-z0-9-]", "",
                                                  line[4:].strip().lower())
                       for line in f if line.startswith("### ")}
        for group in rule_groups():
            for rule in group["rules"]:
                if "alert" in rule:
                    self.assertIn(rule["annotations"]["runbook_url"], anchors,
                                  rule["alert"])

    def test_recorded_names_used_are_recorded(self):
        recorded = {rule["record"] for group in rule_groups()
                    for rule in group["rules"] if "record" in rule}
        for name, where in named_metrics().items():
            if ":" in name:
                self.assertIn(name, recorded, where)


class DashboardTest(unittest.TestCase):
    def test_panels_are_well_formed(self):
        board = dashboard()
        ids = [panel["id"] for panel in board["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")
        for panel in board["panels"]:
            grid = panel["gridPos"]
            self.assertLessEqual(grid["x"] + grid["w"], 24, panel["title"])
            if panel["type"] != "row":
                self.assertTrue(panel["targets"], panel["title"])
        titles = " ".join(p["title"].lower() for p in board["panels"])
        for subject in ("throughput", "latency", "queue depth", "queue wait",
                        "batch occupancy", "denoising call", "errors",
                        "resident memory", "device memory"):
            self.assertIn(subject, titles)


class LiveScrapeTest(unittest.TestCase):
    """One ldmserve on the shipped models, scraped after one request."""

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="ldmserve_scrape_")
        log_path = os.path.join(cls.work, "server.log")
        port_file = os.path.join(cls.work, "port")
        cls.log = open(log_path, "w")
        cls.server = subprocess.Popen(
            [LDMSERVE, "--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0",
             f"--models={SOURCE_ROOT}/models/registry.json", "--threads=1",
             f"--port-file={port_file}"],
            stdout=cls.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        metrics_port = None
        while time.monotonic() < deadline and cls.server.poll() is None:
            with open(log_path) as f:
                found = re.search(r"metrics on port (\d+)", f.read())
            if found and os.path.exists(port_file):
                metrics_port = int(found.group(1))
                break
            time.sleep(0.1)
        if metrics_port is None:
            cls.tearDownClass()
            raise RuntimeError("ldmserve did not start: " + open(log_path).read())
        with open(port_file) as f:
            address = f"127.0.0.1:{f.read().strip()}"
        while time.monotonic() < deadline:  # SERVING once models are loaded.
            if subprocess.run([LDMCTL, f"--addr={address}", "health"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        # One request, so that the per-model and per-worker series exist.
        subprocess.run([LDMCTL, f"--addr={address}", "txt2img", "--prompt", "a red circle", "--steps", "2",
                        "--out", os.path.join(cls.work, "out.png")],
                       check=True, capture_output=True, timeout=120)
        with urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            cls.scrape = r.read().decode()

    @classmethod
    def tearDownClass(cls):
        if cls.server.poll() is None:
            cls.server.send_signal(signal.SIGTERM)
            cls.server.wait(timeout=60)
        cls.log.close()
        shutil.rmtree(cls.work)

    def sample_names(self):
        return {line.split("{")[0].split(" ")[0]
                for line in self.scrape.splitlines()
                if line and not line.startswith("#")}

    def test_scrape_passes_promtool_check_metrics(self):
        result = subprocess.run([PROMTOOL, "check", "metrics"],
                                input=self.scrape, capture_output=True,
                                text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.strip(), "", "lint findings")

    def test_every_metric_named_is_in_the_scrape(self):
        samples = self.sample_names()
        cuda = re.search(r'ldmserve_build_info\{devices="[^"]*cuda',
                         self.scrape)
        # Present only where there is something to report.
        conditional = {
            "ldmserve_device_memory_bytes": bool(cuda),
            "ldmserve_process_memory_limit_bytes": cgroup_memory_limited(),
        }
        registered = registered_metrics()
        named = named_metrics()
        self.assertIn("ldmserve_queue_depth", named)  # The HPA's, at least.
        for name, where in named.items():
            if ":" in name or name in PROMETHEUS_OWN:
                continue
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            self.assertIn(family, registered, where)
            if conditional.get(family) is False:
                self.assertNotIn(name, samples, "appears without its cause")
                continue
            self.assertIn(name, samples, f"named by {where}")


if __name__ == "__main__":
    if not os.access(PROMTOOL, os.X_OK):
        print("SKIP: no promtool (deploy/install-deps.sh unpacks it)")
        sys.exit(77)
    unittest.main(argv=sys.argv[:1], verbosity=2)
