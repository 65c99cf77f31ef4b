"""Static checks of deploy/ (the Grafana dashboard, the Kubernetes manifests, the Dockerfile) and
live ones: every ssm_* metric that the dashboard, the alerts and the prometheus-adapter rules
name is one a real ssm-server exports, and the real ssm-server starts with the Deployment's and
the image's arguments (the Deployment's state store replaced by a local redis-server).
  files_test.py --bin-dir build/bin --source-dir .   (unittest options may follow)
"""
import argparse
import contextlib
import fnmatch
import glob
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.request

import yaml

import deploy_config
import live
from deploy_config import series_metric

SOURCE = BIN = ""  # set in main()
METRIC = re.compile(r"\bssm_[a-z0-9_]+\b")


def path(*parts):
    return os.path.join(SOURCE, *parts)


def load_dashboard():
    return deploy_config.load_dashboard(SOURCE)


def load_yaml_docs(pattern):
    return deploy_config.load_k8s_docs(SOURCE, pattern)


def adapter_rules():
    return deploy_config.adapter_rules(SOURCE)


def flag(args, name):
    """The value after `name` in a container's args."""
    assert name in args, f"args lack {name}: {args}"
    return args[args.index(name) + 1]


def container_args(container):
    """A container's args with $(VAR) references expanded from its env, as the kubelet does."""
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                   lambda m: env.get(m.group(1), m.group(0)), a) for a in container["args"]]


def redis_url(url):
    """(host, port, db) of a --state-store URL redis://HOST:PORT[/DB]."""
    m = re.fullmatch(r"redis://([^:/]+):(\d+)(?:/(\d+))?", url)
    assert m, f"--state-store {url!r} is not redis://HOST:PORT[/DB]"
    return m.group(1), int(m.group(2)), int(m.group(3) or 0)


def server_defaults():
    """ServerConfig's default listen and metrics ports (server/service/server_config.h)."""
    with open(path("server", "service", "server_config.h")) as f:
        text = f.read()
    listen = re.search(r'std::string listen = "[^"]*:(\d+)"', text)
    metrics = re.search(r'std::string metrics_listen = "[^"]*:(\d+)"', text)
    assert listen and metrics, "server_config.h: default listen ports not found"
    return int(listen.group(1)), int(metrics.group(1))


def runnable_here(args, store=None):
    """Container args with the image's model directories taken from the source tree, every
    listen address moved to a free loopback port and a redis:// state store to `store`
    (HOST:PORT)."""
    out = []
    for a in args:
        if a.startswith("/opt/ssmserve/models/"):
            a = path("models", os.path.basename(a))
        elif re.fullmatch(r"0\.0\.0\.0:\d+", a):
            a = "127.0.0.1:0"
        elif a.startswith("redis://") and store is not None:
            a = f"redis://{store}/{redis_url(a)[2]}"
        out.append(a)
    return out


def assert_server_starts(test, args):
    """The real ssm-server starts with these (runnable_here) args and serves metrics; with a
    --state-store, against a local redis-server (a port nothing listens on without one: the
    server starts all the same)."""
    tmp = tempfile.mkdtemp(prefix="ssm-deploy-test-")
    try:
        with contextlib.ExitStack() as stack:
            store = None
            if "--state-store" in args:
                store = (stack.enter_context(live.redis_server(os.path.join(tmp, "redis.log")))
                         if shutil.which("redis-server") else f"127.0.0.1:{live.free_port()}")
            log_path = os.path.join(tmp, "server.log")
            with live.ssm_server(BIN, SOURCE, log_path,
                                 flags=runnable_here(args, store)) as (_, metrics):
                test.assertIn("ssm_streams_active", live.http_get(f"http://{metrics}/metrics"))
            if store is not None:
                with open(log_path) as f:
                    test.assertIn(f"state store redis://{store}", f.read())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resume_unknown_token(address, ca_pem, secret):
    """The status code name of a Stream call that resumes a token never issued, over TLS
    (checked against `ca_pem` for the name ssm-server) with the API key `secret`: the server
    asks the state store for it first, so only a store it can read answers PERMISSION_DENIED
    (with keys, a token of nobody's) rather than UNAVAILABLE."""
    sys.path.insert(0, os.path.join(BIN, "..", "clients", "python", "gen"))
    import grpc
    from ssmserve.v1 import ssmserve_pb2, ssmserve_pb2_grpc
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem.encode())
    with grpc.secure_channel(address, credentials,
                             options=[("grpc.ssl_target_name_override", "ssm-server")]) as channel:
        stub = ssmserve_pb2_grpc.SsmStub(channel)
        open_request = ssmserve_pb2.StreamRequest(
            open=ssmserve_pb2.StreamOpen(resume_token="A" * 24))
        try:
            for _ in stub.Stream(iter([open_request]), timeout=20,
                                 metadata=[("authorization", "Bearer " + secret)]):
                pass
        except grpc.RpcError as e:
            return e.code().name
    return "OK"


def assert_secured_server_starts(test, args, redis_password):
    """The real ssm-server starts with the secured component's `args`, its /etc/ssmserve files
    made here as the Secrets would hold them (a certificate from a CA made by openssl, a keys
    file from ssm-keys, the password), against a redis-server that requires that password;
    /healthz answers SERVING over HTTPS, checked against the CA."""
    tmp = tempfile.mkdtemp(prefix="ssm-secured-test-")
    try:
        def run(*command):
            subprocess.run(command, check=True, capture_output=True, cwd=tmp, timeout=60)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=ssm test CA")
        run("openssl", "req", *ec, "-keyout", "tls.key", "-out", "server.csr", "-subj",
            "/CN=ssm-server")
        with open(os.path.join(tmp, "san.ext"), "w") as f:
            f.write("subjectAltName=DNS:ssm-server,IP:127.0.0.1\n")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "san.ext")
        new_key = subprocess.run([os.path.join(BIN, "ssm-keys"), "new", "probe"],
                                 check=True, capture_output=True, text=True, timeout=30).stdout
        fields = dict(l.split(None, 1) for l in new_key.splitlines()
                      if l.startswith(("secret:", "line:")))
        secret, line = fields["secret:"], fields["line:"]
        def read(name):
            with open(os.path.join(tmp, name)) as f:
                return f.read()
        files = {"tls/tls.crt": read("tls.crt"), "tls/tls.key": read("tls.key"),
                 "keys/keys": line + "\n", "state-store/password": redis_password + "\n"}
        etc = os.path.join(tmp, "etc")
        for name, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(etc, name)), exist_ok=True)
            with open(os.path.join(etc, name), "w") as f:
                f.write(text)
        with contextlib.ExitStack() as stack:
            store = stack.enter_context(live.redis_server(os.path.join(tmp, "redis.log"),
                                                          password=redis_password))
            flags = [a.replace("/etc/ssmserve", etc) for a in runnable_here(args, store)]
            log_path = os.path.join(tmp, "server.log")
            with live.ssm_server(BIN, SOURCE, log_path, flags=flags) as (address, metrics):
                context = ssl.create_default_context(cafile=os.path.join(tmp, "ca.crt"))
                with urllib.request.urlopen(f"https://{metrics}/healthz", timeout=5,
                                            context=context) as r:
                    test.assertEqual(r.read().decode(), "SERVING\n")
                test.assertEqual(resume_unknown_token(address, read("ca.crt"), secret),
                                 "PERMISSION_DENIED")
            with open(log_path) as f:
                log = f.read()
            test.assertIn(f"state store redis://{store}", log)
            test.assertNotIn("AUTH failed", log)
            test.assertIn("API keys", log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class DashboardTest(unittest.TestCase):
    def setUp(self):
        self.dashboard = load_dashboard()
        self.panels = self.dashboard["panels"]

    def test_is_a_dashboard_model(self):
        d = self.dashboard
        self.assertIsInstance(d.get("schemaVersion"), int)
        self.assertGreaterEqual(d["schemaVersion"], 30)
        for key in ("title", "uid", "time", "templating", "panels"):
            self.assertIn(key, d)
        ids = [p["id"] for p in self.panels]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")

    def test_has_prometheus_datasource_and_model_variables(self):
        variables = {v["name"]: v for v in self.dashboard["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        self.assertEqual(variables["model"]["type"], "query")
        self.assertIn("model", variables["model"]["definition"])
        for v in variables.values():
            if v["type"] == "query":
                self.assertEqual(v["datasource"]["uid"], "${datasource}", v["name"])

    def test_every_panel_has_type_grid_position_and_queries(self):
        for p in self.panels:
            with self.subTest(panel=p.get("title")):
                self.assertTrue(p.get("type"))
                grid = p["gridPos"]
                for key in ("x", "y", "w", "h"):
                    self.assertIsInstance(grid[key], int)
                self.assertGreater(grid["w"], 0)
                self.assertGreater(grid["h"], 0)
                self.assertLessEqual(grid["x"] + grid["w"], 24, "Grafana rows are 24 wide")
                self.assertTrue(p["targets"])
                for t in p["targets"]:
                    self.assertTrue(t.get("expr"))
                    self.assertTrue(t.get("refId"))
                self.assertEqual(p["datasource"]["uid"], "${datasource}")

    def test_panels_do_not_overlap(self):
        def cells(p):
            g = p["gridPos"]
            return {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
        for i, a in enumerate(self.panels):
            for b in self.panels[i + 1:]:
                self.assertFalse(cells(a) & cells(b),
                                 f"panels {a['title']!r} and {b['title']!r} overlap")

    def test_covers_the_server_behaviour(self):
        used = {m for p in self.panels for t in p["targets"] for m in METRIC.findall(t["expr"])}
        for family in ("ssm_streams_active", "ssm_chunks_total", "ssm_frames_total",
                       "ssm_chunk_latency_seconds_bucket", "ssm_batch_streams_sum",
                       "ssm_batch_frames_sum", "ssm_stream_lag_seconds_bucket",
                       "ssm_errors_total", "ssm_state_slots", "ssm_engine_step_seconds_bucket",
                       "ssm_realtime_factor", "ssm_offline_files_total", "ssm_streams_parked",
                       "ssm_parked_state_bytes", "ssm_stream_resumes_total",
                       "ssm_resume_failures_total", "ssm_checkpoints_total", "ssm_handoffs_total",
                       "ssm_store_operations_total"):
            self.assertIn(family, used, f"no panel shows {family}")


class MetricNamesTest(unittest.TestCase):
    """Names in deploy/ against the /metrics of a real ssm-server."""

    @classmethod
    def setUpClass(cls):
        tmp = tempfile.mkdtemp(prefix="ssm-deploy-test-")
        try:
            with live.ssm_server(BIN, SOURCE, os.path.join(tmp, "server.log")) as (_, metrics):
                cls.exported = live.metric_names(live.http_get(f"http://{metrics}/metrics"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def assert_exported(self, where, text):
        names = METRIC.findall(text)
        self.assertTrue(names or "ssm_" not in text, f"{where}: no metric name found")
        for name in names:
            self.assertIn(name, self.exported, f"{where}: {name} is not exported by ssm-server")

    def test_dashboard_names_exported_metrics(self):
        d = load_dashboard()
        for p in d["panels"]:
            for t in p["targets"]:
                self.assert_exported(f"panel {p['title']!r}", t["expr"])
        for v in d["templating"]["list"]:
            self.assert_exported(f"variable {v['name']}", v.get("definition", ""))

    def test_alerts_name_exported_metrics(self):
        with open(path("deploy", "prometheus", "alerts.yml")) as f:
            rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
        self.assertTrue(rules)
        for r in rules:
            self.assert_exported(f"alert {r['alert']}", r["expr"])

    def test_adapter_rules_name_exported_metrics(self):
        for rule in adapter_rules():
            self.assertIn(series_metric(rule["seriesQuery"]), self.exported, rule["seriesQuery"])
            self.assertRegex(series_metric(rule["seriesQuery"]), rule["name"]["matches"])


class KubernetesTest(unittest.TestCase):
    def setUp(self):
        self.docs = load_yaml_docs("*.yaml")
        self.monitoring = load_yaml_docs("monitoring/*.yaml")
        self.server = self.docs[("Deployment", "ssm-server")]
        self.pod = self.server["spec"]["template"]
        self.container = self.pod["spec"]["containers"][0]
        self.args = container_args(self.container)
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.store = self.docs[("StatefulSet", "ssm-state-store")]
        (self.redis,) = self.store["spec"]["template"]["spec"]["containers"]

    def pods_selected(self, selector):
        """Deployments and StatefulSets whose pod labels the label selector matches."""
        return [name for (kind, name), d in self.docs.items()
                if kind in ("Deployment", "StatefulSet") and
                selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]

    def workload(self, name):
        (doc,) = [d for (k, n), d in self.docs.items()
                  if n == name and k in ("Deployment", "StatefulSet")]
        return doc

    def test_yamllint(self):
        if shutil.which("yamllint") is None:
            self.skipTest("yamllint not installed (deploy/install.sh installs it)")
        r = subprocess.run(["yamllint", "-c", path("tests", "deploy", "yamllint.yml"),
                            path("deploy", "k8s"), path("deploy", "prometheus")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_kustomization_lists_every_manifest_and_builds(self):
        with open(path("deploy", "k8s", "kustomization.yaml")) as f:
            resources = yaml.safe_load(f)["resources"]
        files = sorted(os.path.basename(p) for p in glob.glob(path("deploy", "k8s", "*.yaml"))
                       if not p.endswith("kustomization.yaml"))
        self.assertEqual(sorted(resources), files)
        if shutil.which("kubectl") is None:
            self.skipTest("kubectl not installed: kustomize build not checked")
        r = subprocess.run(["kubectl", "kustomize", path("deploy", "k8s")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(r.stdout)}
        self.assertEqual(built, set(self.docs))

    def test_deployment_selector_matches_its_pods(self):
        self.assertEqual(self.pods_selected(self.server["spec"]["selector"]["matchLabels"]),
                         ["ssm-server"])
        for c in self.pod["spec"].get("topologySpreadConstraints", []):
            self.assertEqual(self.pods_selected(c["labelSelector"]["matchLabels"]),
                             ["ssm-server"])

    def test_listen_flags_match_container_ports(self):
        args = self.args
        self.assertEqual(flag(args, "--listen"), f"0.0.0.0:{self.ports['grpc']}")
        # Prometheus scrapes from another pod: metrics must listen on all interfaces.
        self.assertEqual(flag(args, "--metrics-listen"), f"0.0.0.0:{self.ports['metrics']}")

    def test_server_accepts_the_deployments_args(self):
        self.assertNotIn("$(", " ".join(self.args), "an args reference has no env value")
        assert_server_starts(self, self.args)

    def test_probes_use_grpc_health_on_the_grpc_port(self):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            with self.subTest(probe=probe):
                self.assertEqual(self.container[probe]["grpc"]["port"], self.ports["grpc"])

    def test_termination_outlasts_the_drain_and_the_hand_off(self):
        drain_s = float(flag(self.args, "--drain-timeout"))
        pre_stop = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre_stop[0], "sleep")
        pre_stop_s = float(pre_stop[1])
        grace_s = self.pod["spec"]["terminationGracePeriodSeconds"]
        # After the drain (in which open streams are handed off), the streams parked by then get
        # at least 1 s to reach the store, each write up to --store-timeout, then gRPC 0.5 s to
        # stop (server/main.cc).
        hand_off_s = 1 + float(flag(self.args, "--store-timeout")) + 0.5
        self.assertGreater(grace_s, pre_stop_s + drain_s + hand_off_s,
                           "SIGKILL would cut the drain or the hand-off short")
        # A draining server reports NOT_SERVING; liveness must not kill it before it exits.
        live_probe = self.container["livenessProbe"]
        self.assertGreater(live_probe["periodSeconds"] * live_probe["failureThreshold"], drain_s)

    def test_requests_a_gpu_and_bounds_memory(self):
        res = self.container["resources"]
        self.assertGreaterEqual(int(res["limits"]["nvidia.com/gpu"]), 1)
        self.assertEqual(res["requests"]["nvidia.com/gpu"], res["limits"]["nvidia.com/gpu"])
        self.assertIn("memory", res["requests"])
        self.assertIn("memory", res["limits"])
        self.assertIn("cpu", res["requests"])

    def test_services_select_pods_and_target_their_ports(self):
        services = {n: d for (k, n), d in self.docs.items() if k == "Service"}
        self.assertIn("ssm-server", services)
        self.assertEqual(services["ssm-server-headless"]["spec"]["clusterIP"], "None")
        for name, svc in services.items():
            with self.subTest(service=name):
                selected = self.pods_selected(svc["spec"]["selector"])
                self.assertEqual(len(selected), 1, f"selects {selected}")
                pod = self.workload(selected[0])["spec"]["template"]["spec"]
                ports = {p.get("name"): p["containerPort"]
                         for c in pod["containers"] for p in c["ports"]}
                for p in svc["spec"]["ports"]:
                    target = p.get("targetPort", p["port"])
                    self.assertTrue(target in ports or target in ports.values(),
                                    f"targetPort {target} is no container port of {selected[0]}")

    def test_state_store_service_is_the_servers_store_url(self):
        host, port, _ = redis_url(flag(self.args, "--state-store"))
        service = self.docs[("Service", host)]
        self.assertEqual(self.pods_selected(service["spec"]["selector"]), ["ssm-state-store"])
        (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
        redis_ports = {p["name"]: p["containerPort"] for p in self.redis["ports"]}
        self.assertEqual(redis_ports[service_port["targetPort"]], 6379)
        self.assertIn(6379, redis_args_port(self.redis["args"]))

    def test_state_store_statefulset_selects_its_pods_and_names_its_service(self):
        spec = self.store["spec"]
        labels = spec["template"]["metadata"]["labels"]
        self.assertLessEqual(spec["selector"]["matchLabels"].items(), labels.items())
        self.assertEqual(self.pods_selected(spec["selector"]["matchLabels"]), ["ssm-state-store"])
        self.assertIn(("Service", spec["serviceName"]), self.docs)
        self.assertEqual(spec["replicas"], 1, "one primary: a snapshot is taken exactly once")

    def test_state_store_keeps_nothing_on_disk_and_evicts_by_ttl(self):
        args = self.redis["args"]
        self.assertEqual(args[0], "redis-server")
        self.assertEqual(flag(args, "--save"), "")
        self.assertEqual(flag(args, "--appendonly"), "no")
        self.assertIn(flag(args, "--maxmemory-policy"), ("volatile-ttl", "volatile-lru",
                                                          "volatile-lfu", "allkeys-lru"))
        res = self.redis["resources"]
        self.assertEqual(res["requests"]["memory"], res["limits"]["memory"])
        self.assertLess(k8s_bytes(flag(args, "--maxmemory")), k8s_bytes(res["limits"]["memory"]),
                        "maxmemory must leave room below the memory limit")
        self.assertIn("cpu", res["requests"])
        for probe in ("readinessProbe", "livenessProbe"):
            self.assertIn(probe, self.redis)
        # GETDEL (a snapshot is taken once) needs Redis 6.2.
        version = re.search(r":(\d+)\.(\d+)", self.redis["image"])
        self.assertIsNotNone(version, f"pin a Redis version: {self.redis['image']}")
        self.assertGreaterEqual((int(version.group(1)), int(version.group(2))), (6, 2))

    def test_resume_and_checkpoint_flags(self):
        ttl_s = float(flag(self.args, "--resume-ttl"))
        checkpoint_s = float(flag(self.args, "--checkpoint-interval"))
        self.assertGreater(ttl_s, 0, "resuming is off")
        self.assertGreater(checkpoint_s, 0, "no checkpoints: a crash loses every stream")
        # Snapshots live ttl_s in the store: checkpoints must come more often than they expire.
        self.assertLess(checkpoint_s, ttl_s)
        self.assertGreater(int(flag(self.args, "--max-parked")), 0)

    def test_parked_alert_assumes_the_deployments_max_parked(self):
        with open(path("deploy", "prometheus", "alerts.yml")) as f:
            rules = {r["alert"]: r for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
        expr = rules["SsmParkedStreamsNearLimit"]["expr"]
        limit = re.search(r"ssm_streams_parked\)\s*>\s*[0-9.]+\s*\*\s*(\d+)", expr)
        self.assertIsNotNone(limit, expr)
        self.assertEqual(int(limit.group(1)), int(flag(self.args, "--max-parked")))

    def test_external_state_store_component(self):
        """deploy/k8s/external-state-store drops the Redis of state-store.yaml and points the
        servers at another URL; built by kubectl kustomize from an overlay outside deploy/k8s."""
        component = path("deploy", "k8s", "external-state-store")
        with open(os.path.join(component, "kustomization.yaml")) as f:
            doc = yaml.safe_load(f)
        self.assertEqual(doc["kind"], "Component")
        for p in doc["patches"]:
            target = yaml.safe_load(p["patch"])
            self.assertIn((target["kind"], target["metadata"]["name"]), self.docs)
        built = self.build_overlay("external-state-store")
        self.assertEqual(set(built), set(self.docs) - {("StatefulSet", "ssm-state-store"),
                                                       ("Service", "ssm-state-store")})
        server = built[("Deployment", "ssm-server")]["spec"]["template"]["spec"]["containers"][0]
        host, _, _ = redis_url(flag(container_args(server), "--state-store"))
        self.assertNotIn(("Service", host), built)

    def build_overlay(self, component):
        """kubectl kustomize of an overlay outside deploy/k8s: the base and `component`."""
        if shutil.which("kubectl") is None:
            self.skipTest("kubectl not installed: the component is not built")
        overlay = tempfile.mkdtemp(prefix="ssm-overlay-")
        try:
            base = os.path.relpath(path("deploy", "k8s"), overlay)
            with open(os.path.join(overlay, "kustomization.yaml"), "w") as f:
                yaml.safe_dump({"resources": [base],
                                "components": [os.path.join(base, component)]}, f)
            r = subprocess.run(["kubectl", "kustomize", overlay], capture_output=True, text=True,
                               timeout=60)
        finally:
            shutil.rmtree(overlay, ignore_errors=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(r.stdout)}

    def test_secured_component(self):
        """deploy/k8s/secured: TLS, API keys and the store's password from Secrets mounted where
        the servers' flags point, HTTPS /healthz probes, a Redis that requires the same password,
        and an Envoy that is envoy.yaml plus TLS on both sides. Then the real ssm-server starts
        with the component's args over files like those Secrets, against a redis-server that
        requires the password, and answers the probe over HTTPS."""
        built = self.build_overlay("secured")
        self.assertEqual(set(built), set(self.docs))
        pod = built[("Deployment", "ssm-server")]["spec"]["template"]["spec"]
        server = pod["containers"][0]
        args = container_args(server)
        secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}

        def secret_file(flag_name):
            """(Secret name, key) that the file of `flag_name` comes from."""
            value = flag(args, flag_name)
            directory, name = os.path.split(value)
            self.assertIn(directory, mounts, f"{flag_name} {value} is not in a mounted Secret")
            self.assertNotIn("subPath", str(server["volumeMounts"]), "subPath is never updated")
            secret = secrets[mounts[directory]]
            keys = [i["key"] for i in secret.get("items", [])] or [name]
            self.assertIn(name, keys)
            return secret["secretName"], name

        self.assertEqual(secret_file("--tls-cert"), ("ssm-server-tls", "tls.crt"))
        self.assertEqual(secret_file("--tls-key"), ("ssm-server-tls", "tls.key"))
        self.assertEqual(secret_file("--auth-keys"), ("ssm-auth-keys", "keys"))
        password = secret_file("--store-password-file")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            with self.subTest(probe=probe):
                self.assertNotIn("grpc", server[probe])
                self.assertEqual(server[probe]["httpGet"],
                                 {"path": "/healthz", "port": "metrics", "scheme": "HTTPS"})
        redis = built[("StatefulSet", "ssm-state-store")]["spec"]["template"]["spec"][
            "containers"][0]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
        variable = re.fullmatch(r"\$\((\w+)\)", flag(redis["args"], "--requirepass")).group(1)
        for name in (variable, "REDISCLI_AUTH"):  # the server's password; the probe's
            self.assertEqual((env[name]["name"], env[name]["key"]), password)

        def without_tls(config):
            for listener in config["static_resources"]["listeners"]:
                for chain in listener["filter_chains"]:
                    chain.pop("transport_socket")
            for cluster in config["static_resources"]["clusters"]:
                cluster.pop("transport_socket")
            return config

        base_envoy = yaml.safe_load(self.docs[("ConfigMap", "ssm-envoy")]["data"]["envoy.yaml"])
        envoy = yaml.safe_load(built[("ConfigMap", "ssm-envoy")]["data"]["envoy.yaml"])
        (chain,) = envoy["static_resources"]["listeners"][0]["filter_chains"]
        downstream = chain["transport_socket"]["typed_config"]["common_tls_context"]
        (cluster,) = envoy["static_resources"]["clusters"]
        upstream = cluster["transport_socket"]["typed_config"]
        self.assertEqual(downstream["alpn_protocols"], ["h2"])
        self.assertEqual(upstream["common_tls_context"]["alpn_protocols"], ["h2"])  # gRPC's
        envoy_pod = built[("Deployment", "ssm-envoy")]["spec"]["template"]["spec"]
        (tls_mount,) = [m for m in envoy_pod["containers"][0]["volumeMounts"] if m["name"] == "tls"]
        (tls_volume,) = [v for v in envoy_pod["volumes"] if v["name"] == "tls"]
        self.assertEqual(tls_volume["secret"]["secretName"], "ssm-server-tls")
        files = [downstream["tls_certificates"][0]["certificate_chain"]["filename"],
                 downstream["tls_certificates"][0]["private_key"]["filename"],
                 upstream["common_tls_context"]["validation_context"]["trusted_ca"]["filename"]]
        self.assertEqual(files, [os.path.join(tls_mount["mountPath"], f)
                                 for f in ("tls.crt", "tls.key", "ca.crt")])
        self.assertEqual(without_tls(envoy), base_envoy, "envoy.yaml and the component differ")
        # The name Envoy checks is the servers' (the certificate must carry it).
        san = upstream["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
        self.assertEqual((san[0]["san_type"], san[0]["matcher"]["exact"], upstream["sni"]),
                         ("DNS", "ssm-server", "ssm-server"))
        for service in ("ssm-envoy", "ssm-server", "ssm-server-headless"):
            for port in built[("Service", service)]["spec"]["ports"]:
                self.assertNotEqual(port.get("appProtocol"), "kubernetes.io/h2c", service)
        self.assertTrue(shutil.which("openssl"), "openssl is needed for the live check")
        assert_secured_server_starts(self, args, redis_password="p4ss word")

    def test_pdb_selects_the_server_pods(self):
        pdb = self.docs[("PodDisruptionBudget", "ssm-server")]
        self.assertEqual(self.pods_selected(pdb["spec"]["selector"]["matchLabels"]),
                         ["ssm-server"])
        hpa = self.docs[("HorizontalPodAutoscaler", "ssm-server")]
        self.assertLess(pdb["spec"]["maxUnavailable"], hpa["spec"]["minReplicas"])

    def test_hpa_scales_the_deployment_on_an_adapter_metric(self):
        hpa = self.docs[("HorizontalPodAutoscaler", "ssm-server")]
        self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
        ref = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((ref["kind"], ref["apiVersion"]), ("Deployment", "apps/v1"))
        self.assertIn(("Deployment", ref["name"]), self.docs)
        self.assertLessEqual(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        served = {r["name"]["as"] for r in adapter_rules()}
        for m in hpa["spec"]["metrics"]:
            self.assertEqual(m["type"], "Pods")
            self.assertIn(m["pods"]["metric"]["name"], served,
                          "no prometheus-adapter rule serves this metric")

    def test_adapter_rules_map_series_to_pods(self):
        for rule in adapter_rules():
            overrides = rule["resources"]["overrides"]
            self.assertEqual(overrides["pod"]["resource"], "pod")
            self.assertEqual(overrides["namespace"]["resource"], "namespace")
            for part in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
                self.assertIn(part, rule["metricsQuery"])

    def test_podmonitor_scrapes_the_metrics_port_as_the_alerts_job(self):
        monitor = self.monitoring[("PodMonitor", "ssm-server")]
        self.assertEqual(self.pods_selected(monitor["spec"]["selector"]["matchLabels"]),
                         ["ssm-server"])
        self.assertEqual([e["port"] for e in monitor["spec"]["podMetricsEndpoints"]], ["metrics"])
        # The job label takes the value of this pod label; the alerts select job="ssm-server".
        job = self.pod["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        with open(path("deploy", "prometheus", "prometheus.yml")) as f:
            jobs = [j["job_name"] for j in yaml.safe_load(f)["scrape_configs"]]
        self.assertEqual(jobs, [job])

    def test_envoy_balances_calls_over_the_headless_service(self):
        config = yaml.safe_load(self.docs[("ConfigMap", "ssm-envoy")]["data"]["envoy.yaml"])
        (cluster,) = config["static_resources"]["clusters"]
        self.assertEqual(cluster["type"], "STRICT_DNS")
        self.assertIn(cluster["lb_policy"], ("LEAST_REQUEST", "ROUND_ROBIN", "RANDOM"))
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        self.assertIn("http2_protocol_options", options["explicit_http_config"])
        self.assertIn("grpc_health_check", cluster["health_checks"][0])
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        headless = self.docs[("Service", address["address"])]
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        grpc_port = next(p for p in headless["spec"]["ports"] if p["name"] == "grpc")
        self.assertEqual(address["port_value"], grpc_port["port"])
        (listener,) = config["static_resources"]["listeners"]
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        # A resume must be free to reach any replica, and only the client resumes a Stream.
        self.assertNotIn(cluster["lb_policy"], ("RING_HASH", "MAGLEV"))
        self.assertNotIn("retry_policy", manager["route_config"])
        for host in manager["route_config"]["virtual_hosts"]:
            self.assertNotIn("retry_policy", host, "Envoy must not retry Stream calls")
            for route in host["routes"]:
                self.assertEqual(route["route"]["cluster"], cluster["name"])
                self.assertEqual(route["route"]["timeout"], "0s", "streams must not time out")
                self.assertNotIn("retry_policy", route["route"], "Envoy must not retry Streams")
                self.assertNotIn("hash_policy", route["route"], "calls must not be pinned")
        for (kind, _), doc in self.docs.items():
            if kind == "Service":
                self.assertNotEqual(doc["spec"].get("sessionAffinity", "None"), "ClientIP")
        envoy = self.docs[("Deployment", "ssm-envoy")]["spec"]["template"]["spec"]
        (container,) = envoy["containers"]
        self.assertEqual(container["ports"][0]["containerPort"],
                         listener["address"]["socket_address"]["port_value"])
        (mount,) = container["volumeMounts"]
        (volume,) = [v for v in envoy["volumes"] if v["name"] == mount["name"]]
        self.assertEqual(volume["configMap"]["name"], "ssm-envoy")
        self.assertEqual(flag(container["args"], "--config-path"),
                         os.path.join(mount["mountPath"], "envoy.yaml"))


def redis_args_port(args):
    """The ports a redis-server command line listens on (6379 unless --port says)."""
    return [int(flag(args, "--port"))] if "--port" in args else [6379]


def k8s_bytes(quantity):
    """Bytes of a Kubernetes quantity (2Gi, 512Mi) or a Redis size (1536mb, 1gb)."""
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    assert m, f"not a size: {quantity}"
    units = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9,
             "kb": 2**10, "mb": 2**20, "gb": 2**30, "k": 10**3, "m": 10**6, "g": 10**9}
    return int(m.group(1)) * units[m.group(2)]


def dockerfile_instructions():
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    with open(path("deploy", "Dockerfile")) as f:
        lines = [l for l in f.read().splitlines() if not l.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [tuple(l.strip().split(None, 1)) for l in text.splitlines() if l.strip()]


def dockerignored(rel_path):
    """Whether .dockerignore keeps rel_path out of the build context (last match wins)."""
    with open(path(".dockerignore")) as f:
        patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    ignored = False
    for p in patterns:
        negate = p.startswith("!")
        p = p.lstrip("!").rstrip("/")
        parts = rel_path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(prefix, p) for prefix in prefixes):
            ignored = not negate
    return ignored


class DockerfileTest(unittest.TestCase):
    """Static only: no container engine runs where these tests run."""

    def setUp(self):
        self.instructions = dockerfile_instructions()

    def all_of(self, name):
        return [args for inst, args in self.instructions if inst == name]

    def test_copy_sources_exist_in_the_build_context(self):
        copies = [a.split() for a in self.all_of("COPY") if not a.startswith("--from")]
        self.assertTrue(copies)
        for *sources, _ in copies:
            for src in sources:
                with self.subTest(source=src):
                    self.assertTrue(os.path.exists(path(src)), f"{src} does not exist")
                    self.assertFalse(dockerignored(src), f".dockerignore excludes {src}")

    def test_builds_every_top_level_source_folder(self):
        copied = {a.split()[0] for a in self.all_of("COPY") if not a.startswith("--from")}
        with open(path("CMakeLists.txt")) as f:
            cmake = f.read()
        for folder in re.findall(r"add_subdirectory\((\w+)\)", cmake):
            if folder != "tests":
                self.assertIn(folder, copied, f"CMakeLists.txt adds {folder}/; COPY it")
        self.assertIn("-DSSM_BUILD_TESTS=OFF", " ".join(self.all_of("RUN")))

    def test_copied_binaries_are_built_targets(self):
        run = " ".join(self.all_of("RUN"))
        targets = re.search(r"cmake --build build --target ([\w\- ]+)", run).group(1).split()
        binaries = [os.path.basename(src) for a in self.all_of("COPY") if a.startswith("--from")
                    for src in a.split()[1:-1] if "/build/bin/" in src]
        self.assertTrue(binaries)
        cmake_files = glob.glob(path("**", "CMakeLists.txt"), recursive=True)
        executables = set()
        for file in cmake_files:
            if "/build/" not in file:
                with open(file) as f:
                    executables.update(re.findall(r"add_executable\(([\w\-]+)", f.read()))
        for b in binaries:
            self.assertIn(b, targets, f"{b} is copied but not built")
            self.assertIn(b, executables, f"no CMakeLists.txt defines {b}")

    def test_entrypoint_runs_the_server_on_its_default_ports(self):
        (entrypoint,) = self.all_of("ENTRYPOINT")
        self.assertEqual(json.loads(entrypoint), ["/usr/local/bin/ssm-server"])
        final_copies = [a.split() for a in self.all_of("COPY") if a.startswith("--from")]
        self.assertIn(("/src/build/bin/ssm-server", "/usr/local/bin/"),
                      {(src, c[-1]) for c in final_copies for src in c[1:-1]})
        listen_port, metrics_port = server_defaults()
        (expose,) = self.all_of("EXPOSE")
        self.assertEqual(sorted(int(p) for p in expose.split()),
                         sorted([listen_port, metrics_port]))
        (cmd,) = self.all_of("CMD")
        cmd = json.loads(cmd)
        self.assertEqual(flag(cmd, "--listen"), f"0.0.0.0:{listen_port}")
        self.assertEqual(flag(cmd, "--metrics-listen"), f"0.0.0.0:{metrics_port}")
        model = flag(cmd, "--model")
        self.assertIn(model, [a.split()[-1].rstrip("/") for a in self.all_of("COPY")], "model not copied")
        assert_server_starts(self, cmd)

    def test_variants_use_cuda_devel_and_runtime_or_debian(self):
        stages = {a.split()[-1]: a.split()[0] for a in self.all_of("FROM") if " AS " in a}
        self.assertIn("-devel-", stages["builder-cuda"])
        self.assertIn("-runtime-", stages["runtime-cuda"])
        self.assertEqual(stages["builder-cpu"], "debian:12")
        self.assertEqual(stages["runtime-cpu"], "debian:12")
        self.assertEqual(stages["builder"], "builder-${VARIANT}")
        self.assertEqual(self.all_of("FROM")[-1], "runtime-${VARIANT}")  # the image
        self.assertIn("deploy/install.sh --no-build", " ".join(self.all_of("RUN")))

    def test_image_user_is_the_pods_user(self):
        (user,) = self.all_of("USER")
        pod = load_yaml_docs("deployment.yaml")[("Deployment", "ssm-server")]
        self.assertEqual(int(user), pod["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
        model = flag(pod["spec"]["template"]["spec"]["containers"][0]["args"], "--model")
        self.assertIn(model, [a.split()[-1].rstrip("/") for a in self.all_of("COPY")],
                      "the Deployment's --model is not in the image")


def main():
    global SOURCE, BIN
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--source-dir", required=True)
    args, rest = parser.parse_known_args()
    SOURCE, BIN = os.path.abspath(args.source_dir), os.path.abspath(args.bin_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
