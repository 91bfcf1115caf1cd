#!/usr/bin/env python3
"""Renders deploy/k8s/overlays/{cpu,gpu} with `kubectl kustomize` and checks
what an operator relies on: probes, resources, the security context, a grace
period longer than the drain, selectors that match the pods' labels, and an
autoscaler metric that ldmserve exports (through the shipped adapter rule).

Usage: k8s_manifests_test.py SOURCE_ROOT. Exits 77 (skipped) without kubectl
or PyYAML. $KUBECTL overrides the kubectl used (e.g. Debian's 1.20).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import unittest

try:
    import yaml
except ImportError:  # Reported as skipped by CTest, not as passed.
    print("SKIP: PyYAML (python3-yaml) is not installed")
    sys.exit(77)

SOURCE_ROOT = sys.argv[1] if len(sys.argv) > 1 else "."
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl")
K8S = os.path.join(SOURCE_ROOT, "deploy", "k8s")


def render(overlay, under="overlays"):
    result = subprocess.run(
        [KUBECTL, "kustomize", os.path.join(K8S, under, overlay)],
        check=True, capture_output=True, text=True)
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def flag_value(args, name):
    """The last --name=value of args (absl takes the last)."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return values[-1] if values else None


def exported_metric_names():
    """Metric names ldmserve registers (server/service/metrics.cc)."""
    with open(os.path.join(SOURCE_ROOT, "server", "service",
                           "metrics.cc")) as source:
        return set(re.findall(r'"(ldmserve_[a-z_]+)"', source.read()))


def ldmserve_flag_names():
    """The flags ldmserve defines (server/main.cc)."""
    with open(os.path.join(SOURCE_ROOT, "server", "main.cc")) as source:
        return set(re.findall(r"ABSL_FLAG\([^,]+, ([a-z0-9_]+),",
                              source.read()))


class FlagTableTest(unittest.TestCase):
    """docs/deploy.md lists every flag with its variable, and no other."""

    def test_the_table_lists_every_flag_and_its_variable(self):
        with open(os.path.join(SOURCE_ROOT, "docs", "deploy.md")) as doc:
            rows = re.findall(r"^\| `--([a-z0-9-]+)` \| `(LDMSERVE_[A-Z0-9_]+)`",
                              doc.read(), re.MULTILINE)
        self.assertEqual({flag.replace("-", "_") for flag, _ in rows},
                         ldmserve_flag_names())
        for flag, variable in rows:
            self.assertEqual(variable,
                             "LDMSERVE_" + flag.replace("-", "_").upper())


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


class OverlayTest:
    overlay = None

    @classmethod
    def setUpClass(cls):
        cls.objects = render(cls.overlay)
        cls.deployment = cls.objects[("Deployment", "ldmserve")]
        cls.pod = cls.deployment["spec"]["template"]
        cls.container = next(c for c in cls.pod["spec"]["containers"]
                             if c["name"] == "ldmserve")

    def test_probes_use_grpc_health_on_the_serving_port(self):
        ports = {p["name"]: p["containerPort"]
                 for p in self.container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(self.container[probe]["grpc"]["port"],
                             ports["grpc"], probe)
        startup = self.container["startupProbe"]
        # Model loading may take minutes: the startup probe must allow it.
        self.assertGreaterEqual(
            startup["periodSeconds"] * startup["failureThreshold"], 300)

    def test_grace_period_outlasts_the_drain(self):
        drain = float(flag_value(self.container["args"], "drain-timeout"))
        grace = self.pod["spec"]["terminationGracePeriodSeconds"]
        # The kubelet's grace period counts the preStop hook too.
        pause = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pause[0], "sleep")
        self.assertGreater(grace, drain + float(pause[1]))

    def test_security_context_is_locked_down(self):
        pod_context = self.pod["spec"]["securityContext"]
        self.assertTrue(pod_context["runAsNonRoot"])
        self.assertNotEqual(pod_context["runAsUser"], 0)
        context = self.container["securityContext"]
        self.assertFalse(context["allowPrivilegeEscalation"])
        self.assertTrue(context["readOnlyRootFilesystem"])
        self.assertFalse(context.get("privileged", False))
        self.assertEqual(context["capabilities"]["drop"], ["ALL"])

    def test_resources_request_cpu_and_memory_and_cap_memory(self):
        resources = self.container["resources"]
        self.assertIn("cpu", resources["requests"])
        self.assertIn("memory", resources["requests"])
        self.assertIn("memory", resources["limits"])

    def test_selectors_match_the_pod_labels(self):
        labels = self.pod["metadata"]["labels"]
        self.assertTrue(matches(
            self.deployment["spec"]["selector"]["matchLabels"], labels))
        for kind, name in (("Service", "ldmserve"),
                           ("Service", "ldmserve-headless")):
            self.assertTrue(matches(
                self.objects[(kind, name)]["spec"]["selector"], labels), name)
        for kind in ("PodDisruptionBudget",):
            self.assertTrue(matches(self.objects[(kind, "ldmserve")]["spec"]
                                    ["selector"]["matchLabels"], labels))
        self.assertTrue(matches(
            self.objects[("NetworkPolicy", "ldmserve")]["spec"]["podSelector"]
            ["matchLabels"], labels))
        for constraint in self.pod["spec"]["topologySpreadConstraints"]:
            self.assertTrue(
                matches(constraint["labelSelector"]["matchLabels"], labels))

    def test_service_monitor_scrapes_the_metrics_port_of_one_service(self):
        monitor = self.objects[("ServiceMonitor", "ldmserve")]
        services = [o for (kind, _), o in self.objects.items()
                    if kind == "Service" and matches(
                        monitor["spec"]["selector"]["matchLabels"],
                        o["metadata"].get("labels", {}))]
        self.assertEqual([s["metadata"]["name"] for s in services],
                         ["ldmserve"])
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            self.assertIn(endpoint["port"], port_names)

    def test_prometheus_rule_is_deployed_with_the_pods(self):
        rule = self.objects[("PrometheusRule", "ldmserve")]
        alerts = [r["alert"] for group in rule["spec"]["groups"]
                  for r in group["rules"] if "alert" in r]
        self.assertIn("LdmserveModelNotReady", alerts)

    def test_no_service_link_variables_among_the_flag_variables(self):
        self.assertIs(self.pod["spec"]["enableServiceLinks"], False)

    def test_container_flags_are_ldmserve_flags(self):
        defined = ldmserve_flag_names()
        for arg in self.container["args"]:
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            self.assertIn(name, defined, arg)
        for variable in self.container.get("env", []):
            name = variable["name"]
            self.assertTrue(name.startswith("LDMSERVE_"), name)
            self.assertIn(name[len("LDMSERVE_"):].lower(), defined, name)

    def test_headless_service_is_headless(self):
        self.assertEqual(
            self.objects[("Service", "ldmserve-headless")]["spec"]["clusterIP"],
            "None")

    def test_registry_config_map_is_mounted_where_models_points(self):
        models = flag_value(self.container["args"], "models")
        mounts = {m["name"]: m["mountPath"]
                  for m in self.container["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["spec"]["volumes"]}
        config_map = volumes["registry"]["configMap"]["name"]
        self.assertIn(("ConfigMap", config_map), self.objects)
        self.assertEqual(os.path.dirname(models), mounts["registry"])
        self.assertIn(os.path.basename(models),
                      self.objects[("ConfigMap", config_map)]["data"])

    def test_autoscaler_scales_this_deployment_on_an_exported_metric(self):
        hpa = self.objects[("HorizontalPodAutoscaler", "ldmserve")]
        self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"],
                         self.deployment["metadata"]["name"])
        with open(os.path.join(K8S, "prometheus-adapter",
                               "rules.yaml")) as rules_file:
            rules = yaml.safe_load(rules_file)["rules"]
        served = {rule["name"]["as"]: rule["seriesQuery"] for rule in rules}
        exported = exported_metric_names()
        for metric in hpa["spec"]["metrics"]:
            name = metric["pods"]["metric"]["name"]
            self.assertIn(name, served, "no adapter rule serves " + name)
            series = re.match(r"([a-z_]+)", served[name]).group(1)
            self.assertIn(series, exported)


def dockerfile_stages():
    """{stage name: [instruction lines]}, continuation lines joined; a stage
    built FROM another starts with that one's lines (it inherits them)."""
    with open(os.path.join(SOURCE_ROOT, "Dockerfile")) as dockerfile:
        text = re.sub(r"\\\n", " ", dockerfile.read())
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = re.match(r"FROM (\S+) AS (\S+)$", line)
        if found:
            base, name = found.groups()
            current = stages.setdefault(name, list(stages.get(base, [])))
        elif current is not None:
            current.append(line)
    return stages


class DockerfileTest(unittest.TestCase):
    """The cpu and gpu images run alike: user, ports, health, entrypoint."""

    def test_cpu_and_gpu_images_run_alike(self):
        stages = dockerfile_stages()
        final = {}
        for target in ("cpu", "gpu"):
            lines = stages[target]
            self.assertIn("USER 10001", lines, target)
            self.assertIn("EXPOSE 50051 9464", lines, target)
            health = [l for l in lines if l.startswith("HEALTHCHECK")]
            self.assertEqual(len(health), 1, target)
            self.assertIn('"health"]', health[0], target)
            self.assertIn("ldmctl", health[0], target)
            entrypoint = [l for l in lines if l.startswith("ENTRYPOINT")]
            self.assertEqual(len(entrypoint), 1, target)
            final[target] = entrypoint[0]
            args = json.loads(entrypoint[0][len("ENTRYPOINT"):].strip())
            defined = ldmserve_flag_names()
            for arg in args[1:]:
                self.assertIn(arg[2:].split("=")[0].replace("-", "_"),
                              defined, arg)
        self.assertEqual(final["cpu"], final["gpu"])
        # The gpu image's LibTorch comes from a PyTorch wheel, not Debian.
        self.assertTrue(any("torch==" in l for l in stages["build-gpu"]))
        self.assertIn("--runtime-gpu", " ".join(stages["gpu"]))


class GrafanaDashboardTest(unittest.TestCase):
    def test_renders_the_dashboard_for_the_grafana_sidecar(self):
        objects = render("grafana", under="")
        config_map = objects[("ConfigMap", "ldmserve-dashboard")]
        self.assertEqual(config_map["metadata"]["labels"]["grafana_dashboard"],
                         "1")
        with open(os.path.join(K8S, "grafana",
                               "ldmserve-dashboard.json")) as board:
            self.assertEqual(
                json.loads(config_map["data"]["ldmserve-dashboard.json"]),
                json.load(board))


class CpuOverlayTest(OverlayTest, unittest.TestCase):
    overlay = "cpu"

    def test_runs_on_the_cpu_image(self):
        self.assertTrue(self.container["image"].endswith(":cpu"))
        self.assertEqual(flag_value(self.container["args"], "devices"), "cpu")


class GpuOverlayTest(OverlayTest, unittest.TestCase):
    overlay = "gpu"

    def test_asks_for_one_gpu_and_runs_on_it(self):
        resources = self.container["resources"]
        self.assertEqual(int(resources["limits"]["nvidia.com/gpu"]), 1)
        self.assertEqual(flag_value(self.container["args"], "devices"),
                         "cuda:0")
        self.assertTrue(self.container["image"].endswith(":gpu"))
        self.assertTrue(self.pod["spec"]["nodeSelector"])
        self.assertIn("nvidia.com/gpu",
                      [t["key"] for t in self.pod["spec"]["tolerations"]])


if __name__ == "__main__":
    if not KUBECTL:
        print("SKIP: kubectl (Debian: kubernetes-client) is not installed")
        sys.exit(77)
    unittest.main(argv=sys.argv[:1], verbosity=2)
