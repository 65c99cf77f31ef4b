"""Readers of the files under deploy/ that more than one test needs."""
import glob
import json
import os
import re

import yaml


def load_dashboard(source_dir):
    with open(os.path.join(source_dir, "deploy", "grafana", "ssmserve.json")) as f:
        return json.load(f)


def load_k8s_docs(source_dir, pattern):
    """{(kind, name): doc} of every document in the files matching pattern under deploy/k8s."""
    docs = {}
    for file in sorted(glob.glob(os.path.join(source_dir, "deploy", "k8s", pattern))):
        with open(file) as f:
            for doc in yaml.safe_load_all(f):
                if doc and "kind" in doc and doc["kind"] != "Kustomization":
                    docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def adapter_rules(source_dir):
    """The rules of prometheus-adapter's config (deploy/k8s/monitoring)."""
    config_map = load_k8s_docs(source_dir, "monitoring/*.yaml")[("ConfigMap", "prometheus-adapter")]
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def series_metric(series_query):
    """The metric name a series selector starts with."""
    return re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", series_query).group(1)
