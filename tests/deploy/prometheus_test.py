"""deploy/prometheus and the queries of deploy/ against a real Prometheus scraping a real
ssm-server on loopback:
  1. promtool check config / check rules / test rules on the shipped files;
  2. ssm-server + Prometheus with a config derived from prometheus.yml (only the target and the
     intervals changed); waits for up == 1, runs ssm-loadgen, and waits for its streams to show
     in ssm_streams_opened_total through Prometheus;
  3. every alert rule evaluates without error there, and every Grafana and prometheus-adapter
     query runs and returns series.
Exits 77 (skipped) where Debian's prometheus package (prometheus, promtool) is not installed.
  prometheus_test.py --bin-dir build/bin --source-dir .
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import yaml

import deploy_config
import live

# Scrape and rule evaluation every second, so the test waits seconds, not minutes.
FAST_INTERVAL = "1s"


def run(args, what):
    """Runs a command; AssertionError with its output when it fails."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"{what} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


def check_shipped_files(prom_dir):
    run(["promtool", "check", "config", os.path.join(prom_dir, "prometheus.yml")],
        "promtool check config deploy/prometheus/prometheus.yml")
    run(["promtool", "check", "rules", os.path.join(prom_dir, "alerts.yml")],
        "promtool check rules deploy/prometheus/alerts.yml")
    # test rules resolves rule_files relative to the test file.
    run(["promtool", "test", "rules", os.path.join(prom_dir, "alerts_test.yml")],
        "promtool test rules deploy/prometheus/alerts_test.yml")
    print("ok: promtool check config, check rules, test rules")


def derived_config(prom_dir, metrics_address):
    """The shipped prometheus.yml with its ssm-server target replaced by metrics_address,
    1 s intervals and the rule file by absolute path."""
    with open(os.path.join(prom_dir, "prometheus.yml")) as f:
        config = yaml.safe_load(f)
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == "ssm-server"]
    assert len(jobs) == 1, "prometheus.yml must have exactly one scrape job named ssm-server"
    assert len(jobs[0]["static_configs"]) == 1, "the ssm-server job must have one static_configs"
    jobs[0]["static_configs"][0]["targets"] = [metrics_address]
    config["global"].update(scrape_interval=FAST_INTERVAL, scrape_timeout=FAST_INTERVAL,
                            evaluation_interval=FAST_INTERVAL)
    config["rule_files"] = [os.path.join(prom_dir, r) for r in config["rule_files"]]
    return config


def instant_values(prom_url, query):
    """`promtool query instant` → [float] (one per series)."""
    out = run(["promtool", "query", "instant", prom_url, query], f"promtool query {query!r}")
    return [float(v) for v in re.findall(r"=> (\S+) @", out)]


def api(prom_url, path, **params):
    url = f"{prom_url}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    reply = json.loads(live.http_get(url))
    if reply.get("status") != "success":
        raise AssertionError(f"{url}: {reply}")
    return reply["data"]


def check_rules_evaluate(prom_url, rule_count):
    """Every alert rule of alerts.yml has been evaluated at least once, without error."""
    def evaluated():
        rules = [r for g in api(prom_url, "rules")["groups"] for r in g["rules"]]
        bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] == "err"]
        assert not bad, "alert rules fail to evaluate: " + "; ".join(bad)
        return len(rules) == rule_count and all(r["health"] == "ok" for r in rules)
    live.poll(f"Prometheus to evaluate all {rule_count} alert rules", evaluated, 15)
    print(f"ok: {rule_count} alert rules evaluate without error")


# Grafana's variables, as the dashboard's "All" selection and a short scrape interval set them.
GRAFANA_VARIABLES = {"$model": ".*", "$instance": ".*", "$__rate_interval": "1m"}
# A query ending in a filter such as `> 0` may rightly return nothing.
FILTERED = re.compile(r"[<>]=?\s*[0-9.]+\s*$")


def check_queries(prom_url, queries):
    """Each (where, PromQL) runs on the live Prometheus; unfiltered ones return series."""
    for where, query in queries:
        for name, value in GRAFANA_VARIABLES.items():
            query = query.replace(name, value)
        try:
            result = api(prom_url, "query", query=query)["result"]
        except Exception as e:
            raise AssertionError(f"{where}: query {query!r} fails: {e}") from e
        if not result and not FILTERED.search(query):
            raise AssertionError(f"{where}: query {query!r} returns no series")
    print(f"ok: {len(queries)} dashboard and adapter queries run and return series")


def dashboard_queries(source_dir):
    return [(f"dashboard panel {p['title']!r}", t["expr"])
            for p in deploy_config.load_dashboard(source_dir)["panels"]
            for t in p.get("targets", [])]


def adapter_queries(source_dir):
    """prometheus-adapter metricsQuery templates, filled in as the adapter would for one
    object (here: the scrape job instead of namespace and pod)."""
    queries = []
    for rule in deploy_config.adapter_rules(source_dir):
        series = deploy_config.series_metric(rule["seriesQuery"])
        query = (rule["metricsQuery"].replace("<<.Series>>", series)
                 .replace("<<.LabelMatchers>>", 'job="ssm-server"')
                 .replace("<<.GroupBy>>", "instance"))
        queries.append((f"prometheus-adapter rule {rule['name']['as']}", query))
    return queries


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--source-dir", required=True)
    args = parser.parse_args()
    # SIGTERM (ctest's timeout) unwinds through the `finally` that stops the processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("FAIL: terminated"))
    for tool in ("promtool", "prometheus"):
        if shutil.which(tool) is None:
            print(f"SKIP: {tool} not found; install Debian's prometheus package "
                  "(deploy/install.sh does)")
            return 77
    source = os.path.abspath(args.source_dir)
    prom_dir = os.path.join(source, "deploy", "prometheus")
    started = time.monotonic()

    with open(os.path.join(prom_dir, "alerts.yml")) as f:
        rule_count = sum(len(g["rules"]) for g in yaml.safe_load(f)["groups"])

    tmp = tempfile.mkdtemp(prefix="ssm-prometheus-test-")
    prometheus = None
    try:
        check_shipped_files(prom_dir)
        with live.ssm_server(args.bin_dir, args.source_dir,
                             os.path.join(tmp, "ssm-server.log")) as (grpc_address, metrics):
            config_path = os.path.join(tmp, "prometheus.yml")
            with open(config_path, "w") as f:
                yaml.safe_dump(derived_config(prom_dir, metrics), f)
            run(["promtool", "check", "config", config_path], "promtool check config (derived)")

            port = live.free_port()
            prom_url = f"http://127.0.0.1:{port}"
            prom_log_path = os.path.join(tmp, "prometheus.log")
            with open(prom_log_path, "w") as prom_log:
                prometheus = live.spawn(
                    ["prometheus", f"--config.file={config_path}",
                     f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                     f"--web.listen-address=127.0.0.1:{port}"],
                    stdout=prom_log, stderr=subprocess.STDOUT)

            def scraped():
                if prometheus.poll() is not None:
                    with open(prom_log_path) as log:
                        raise AssertionError(f"prometheus exited ({prometheus.returncode}):\n"
                                             + log.read()[-3000:])
                return instant_values(prom_url, 'up{job="ssm-server"}') == [1.0]
            live.poll(f"up{{job=\"ssm-server\"}} == 1 from Prometheus at {prom_url} "
                      f"(target {metrics})", scraped, 30)
            print(f"ok: Prometheus scrapes ssm-server ({time.monotonic() - started:.1f} s)")

            report = json.loads(run(
                [os.path.join(args.bin_dir, "ssm-loadgen"), "--server", grpc_address,
                 "--streams", "4", "--duration", "2", "--json"], "ssm-loadgen"))
            assert report["streams_held"] == 4 and report["chunks_answered"] > 0, \
                f"ssm-loadgen did not stream: {report}"

            def streams_counted():
                opened = instant_values(prom_url, "ssm_streams_opened_total")
                chunks = instant_values(prom_url, "ssm_chunks_total")
                return sum(opened) >= 4 and sum(chunks) >= report["chunks_answered"]
            live.poll("ssm_streams_opened_total >= 4 and ssm_chunks_total to reach ssm-loadgen's "
                      f"{report['chunks_answered']} chunks through Prometheus", streams_counted, 15)
            print("ok: ssm-loadgen's streams and chunks are visible through Prometheus")

            check_rules_evaluate(prom_url, rule_count)
            check_queries(prom_url, dashboard_queries(source) + adapter_queries(source))
    except AssertionError as e:
        print(f"FAIL: {e}")
        return 1
    finally:
        if prometheus is not None:
            live.stop(prometheus)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"prometheus_test passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
