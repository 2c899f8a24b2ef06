#!/usr/bin/env python3
"""Proves that the deployment check fails where it should: each case below breaks one thing in a
fresh copy of the repository's deployment files (an image without a digest, an alert on a metric
the daemon does not serve, a missing PodMonitor, ...), runs the part of check_deploy.py concerned on
the copy, and passes only if the check fails with the expected message. A check that cannot fail
is a defect; this is where that would show. Run by scripts/check-deploy.sh after the check itself,
with the same tools.

A few legitimate edits (ACCEPTED) must pass the same way, so that the checks are not simply strict
about everything. Exit status 0 when every case went as expected, 1 otherwise (a case whose edit no
longer applies to the files counts as failed: update it here).
"""

import concurrent.futures
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import check_deploy
from common import Report, Repo

REPO = Path(__file__).resolve().parents[2]
# What the checks read: the deployment files, the settings and protocols, and the two source files
# the metric list and the generate flags come from.
COPY = ["deploy", "config", "docker-compose.yml", "Dockerfile", "src/stats", "src/cli/mod.rs"]


class Stale(Exception):
    """A case's edit no longer matches the files."""


def edit(root, path, old, new, count=1):
    p = root / path
    text = p.read_text(encoding="utf-8")
    if old not in text:
        raise Stale(f"{path}: {old!r} is not there any more")
    p.write_text(text.replace(old, new, count if count else -1), encoding="utf-8")


def sub(root, path, pattern, new):
    p = root / path
    text = p.read_text(encoding="utf-8")
    changed, n = re.subn(pattern, new, text, flags=re.M)
    if not n:
        raise Stale(f"{path}: {pattern!r} matches nothing any more")
    p.write_text(changed, encoding="utf-8")


K8S = "deploy/kubernetes"
PROD = f"{K8S}/overlays/production"
RULES = "deploy/prometheus/edc-ingest.rules.yml"
TESTS = "deploy/prometheus/edc-ingest.rules.test.yml"

# (what is broken, section checked, the edit, what the check must say)
CASES = [
    ("Kubernetes: the image without a digest", "kubernetes",
     lambda r: sub(r, f"{PROD}/kustomization.yaml", r"^\s*digest: sha256:[0-9a-f]+\n", ""),
     "is not pinned by digest"),
    ("Kubernetes: an image of another container not pinned", "kubernetes",
     lambda r: edit(r, f"{K8S}/base/deployment.yaml", "        - name: pseudonym-key\n          image: edc-ingest",
                    "        - name: pseudonym-key\n          image: busybox:1.36"),
     "image 'busybox:1.36' is not pinned by digest"),
    ("Kubernetes: the PodMonitor missing while alerts and KEDA need it", "kubernetes",
     lambda r: (edit(r, f"{K8S}/components/prometheus-operator/kustomization.yaml", "  - podmonitor.yaml\n", ""),
                (r / K8S / "components/prometheus-operator/podmonitor.yaml").unlink()),
     "no PodMonitor or ServiceMonitor of this overlay scrapes them"),
    ("Kubernetes: the PodMonitor on a port the daemon does not name", "kubernetes",
     lambda r: edit(r, f"{K8S}/components/prometheus-operator/podmonitor.yaml", "- port: http", "- port: metrics"),
     "is no named port of the daemon"),
    ("Kubernetes: a misspelt PodMonitor field", "kubernetes",
     lambda r: edit(r, f"{K8S}/components/prometheus-operator/podmonitor.yaml", "podMetricsEndpoints:",
                    "podMetricEndpoints:"),
     "Additional properties are not allowed ('podMetricEndpoints'"),
    ("Kubernetes: traces to OTLP's gRPC port", "kubernetes",
     lambda r: edit(r, f"{K8S}/components/otel/kustomization.yaml", "observability.svc:4318", "observability.svc:4317"),
     "OTLP's gRPC port"),
    ("Kubernetes: traces on, the collector not let out", "kubernetes",
     lambda r: edit(r, f"{K8S}/components/otel/kustomization.yaml", "port: 4318", "port: 4319"),
     "port 4318 (otel.endpoint) is not let out"),
    ("Kubernetes: RabbitMQ not let out", "kubernetes",
     lambda r: edit(r, f"{PROD}/networkpolicy-egress.yaml", "port: 5671", "port: 5672"),
     "port 5671 (edc-ingest-runtime amqp-url) is not let out"),
    ("Kubernetes: an overlay repeating a sizing default with another value", "kubernetes",
     lambda r: edit(r, f"{PROD}/config.yaml", "\nlog:\n", "\nworkers: 12\nlog:\n"),
     "workers is 12 here but"),
    ("Kubernetes: a setting config/default.yaml does not have", "kubernetes",
     lambda r: edit(r, f"{PROD}/config.yaml", "\nlog:\n  format: json", "\nlog:\n  formatt: json"),
     "`log.formatt` is not a key of config/default.yaml"),
    ("Kubernetes: KEDA over amqps:// without TLS in the scaler", "kubernetes",
     lambda r: edit(r, f"{K8S}/components/keda/triggerauthentication.yaml",
                    "    - parameter: tls\n      name: edc-ingest-keda-tls\n      key: tls\n", ""),
     "lacks `tls: enable`"),
    ("Kubernetes: KEDA and a fixed replica count", "kubernetes",
     lambda r: sub(r, f"{K8S}/components/keda/kustomization.yaml", r"^patches:(\n  .*)*\n?", ""),
     "KEDA manages the replica count"),
    ("Kubernetes: a KEDA cap past the database's connections", "kubernetes",
     lambda r: edit(r, f"{K8S}/components/keda/scaledobject.yaml", "maxReplicaCount: 8", "maxReplicaCount: 12"),
     "connection budget exceeded"),
    ("Kubernetes: a manifest no kustomization lists", "kubernetes",
     lambda r: (r / K8S / "base/extra-service.yaml").write_text("apiVersion: v1\nkind: Service\n", encoding="utf-8"),
     "no kustomization.yaml lists it"),
    ("Kubernetes: a protocol that drifted from config/studies", "kubernetes",
     lambda r: edit(r, f"{K8S}/base/studies/DEMO-001.yaml", "study: DEMO-001", "study: DEMO-001 # drift"),
     "differs from config/studies/DEMO-001.yaml"),
    ("Kubernetes: an overlay Kustomize cannot render", "kubernetes",
     lambda r: edit(r, f"{PROD}/kustomization.yaml", "  - path: networkpolicy-egress.yaml",
                    "  - path: networkpolicy-egres.yaml"),
     "kustomize cannot render it"),
    ("Kubernetes: a database gate query on a metric the daemon does not serve", "kubernetes",
     lambda r: edit(r, f"{K8S}/components/keda-gated/gate.yaml", "min(edc_db_gate_open{", "min(edc_gate_open{"),
     "edc_gate_open is not a metric the daemon serves"),
    ("Alerts: a rule on a metric the daemon does not serve", "rules",
     lambda r: edit(r, RULES, "expr: edc_db_gate_open == 0", "expr: edc_db_gate_opened == 0"),
     "edc_db_gate_opened is not a metric the daemon serves"),
    ("Alerts: a rule on a histogram's bare name", "rules",
     lambda r: edit(r, RULES, "rate(edc_publish_to_commit_seconds_bucket[5m])", "rate(edc_publish_to_commit_seconds[5m])"),
     "edc_publish_to_commit_seconds is a histogram"),
    ("Alerts: the PrometheusRule not regenerated after a change", "rules",
     lambda r: edit(r, RULES, "expr: max by (job) (edc_relay_lag_seconds) > 300", "expr: max by (job) (edc_relay_lag_seconds) > 600"),
     "differs from deploy/prometheus/edc-ingest.rules.yml"),
    ("Alerts: an alert no test makes fire", "rules",
     lambda r: edit(r, TESTS, "alertname: EdcIngestEventsParked", "alertname: EdcIngestEventsParkedX", 0),
     "EdcIngestEventsParked: no test in which it fires"),
    ("Alerts: an alert without a severity", "rules",
     lambda r: edit(r, RULES, "        labels:\n          severity: warning\n", "", 1),
     "labels.severity must be one of"),
    ("Grafana: a panel on a metric the daemon does not serve", "grafana",
     lambda r: edit(r, "deploy/grafana/edc-ingest.json", '"max(edc_relay_lag_seconds{', '"max(edc_relay_lag{'),
     "edc_relay_lag is not a metric the daemon serves"),
    ("Compose: an image without a digest", "compose",
     lambda r: sub(r, "docker-compose.yml", r"image: grafana/grafana:([0-9.]+)@sha256:[0-9a-f]+", r"image: grafana/grafana:\1"),
     "service grafana: image 'grafana/grafana:12.1.1' is not pinned by digest"),
    ("Compose: the sizing defaults contradicted", "compose",
     lambda r: edit(r, "docker-compose.yml", '      EDC__POSTGRES__MIGRATE_ON_START: "false"\n',
                    '      EDC__POSTGRES__MIGRATE_ON_START: "false"\n      EDC__POSTGRES__POOL_SIZE: "8"\n'),
     "postgres.pool_size is 8 here but"),
    ("Compose: the daemons migrating as the owner", "compose",
     lambda r: sub(r, "docker-compose.yml", r'^\s*EDC__POSTGRES__MIGRATE_URL: .*\n', ""),
     "no EDC__POSTGRES__MIGRATE_URL"),
    ("Compose: the demo publisher with a flag `generate` does not have", "compose",
     lambda r: edit(r, "docker-compose.yml", "--invalid-ratio 0.03", "--invalid-share 0.03"),
     "`generate --invalid-share`: no such flag"),
    ("Compose: Prometheus scraping another port", "compose",
     lambda r: edit(r, "deploy/prometheus/prometheus.yml", "port: 9090", "port: 9091"),
     "does not ask the service edc-ingest on port 9090"),
    ("Compose: a mounted file that does not exist", "compose",
     lambda r: (r / "deploy/compose/postgres-init.sql").unlink(),
     "postgres-init.sql, which does not exist"),
    ("Compose: a file Docker Compose refuses", "compose",
     lambda r: edit(r, "docker-compose.yml", "      migrate:\n        condition: service_completed_successfully",
                    "      migrations:\n        condition: service_completed_successfully"),
     "docker compose config"),
    ("Dockerfile: a base image without a digest", "compose",
     lambda r: sub(r, "Dockerfile", r"^FROM debian:\S+", "FROM debian:bookworm-slim"),
     "FROM debian:bookworm-slim: not pinned by digest"),
]

# Edits the checks must accept: (what is changed, section, the edit, what no problem may say).
ACCEPTED = [
    ("Kubernetes: an overlay choosing another worker count, and saying so", "kubernetes",
     lambda r: edit(r, f"{PROD}/config.yaml", "\nlog:\n", "\nworkers: 12  # not the default: a smaller node\nlog:\n"),
     "workers"),
]

PROMTOOL_CASES = [
    ("Alerts: a threshold the unit tests disagree with (promtool test rules)", "rules",
     lambda r: (edit(r, RULES, "expr: edc_db_gate_open == 0\n        for: 2m", "expr: edc_db_gate_open == 0\n        for: 20m"),
                edit(r, "deploy/kubernetes/components/prometheus-operator/prometheusrule.yaml",
                     "expr: edc_db_gate_open == 0\n          for: 2m", "expr: edc_db_gate_open == 0\n          for: 20m")),
     "promtool test rules failed"),
    ("Alerts: an expression PromQL cannot parse (promtool check rules)", "rules",
     lambda r: (edit(r, RULES, "expr: edc_db_gate_open == 0", "expr: edc_db_gate_open == == 0"),
                edit(r, "deploy/kubernetes/components/prometheus-operator/prometheusrule.yaml",
                     "expr: edc_db_gate_open == 0", "expr: edc_db_gate_open == == 0")),
     "promtool check rules failed"),
]


def fresh_copy():
    root = Path(tempfile.mkdtemp(prefix="edc-selftest-"))
    for entry in COPY:
        source = REPO / entry
        target = root / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return root


def cases(args):
    """(what, section, edit, text, must fail) of every case in force."""
    return [c + (True,) for c in CASES + (PROMTOOL_CASES if args.promtool else [])] + \
        [c + (False,) for c in ACCEPTED]


def run_case(index, args):
    """(as expected, line) of case `index`."""
    what, section, mutate, expected, must_fail = cases(args)[index]
    root = fresh_copy()
    try:
        try:
            mutate(root)
        except Stale as e:
            return False, f"  FAIL  {what}: the edit no longer applies ({e}): update deploy/check/selftest.py"
        args.only = [section]
        report = check_deploy.run(Repo(root), args, Report(quiet=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    caught = [e for e in report.errors if expected in e]
    if not must_fail:
        if caught:
            return False, f"  FAIL  {what}: refused ({caught[0].splitlines()[0][:160]})"
        return True, f"  ok    {what}: accepted"
    if caught:
        first = caught[0].replace(str(root) + "/", "").splitlines()[0]
        return True, f"  ok    {what}: caught ({first[:160]})"
    seen = "; ".join(e.splitlines()[0] for e in report.errors[:3]) or "no problem at all"
    return False, f"  FAIL  {what}: not caught as expected ({expected!r}); the check said: {seen}"


def main():
    parser = check_deploy.parser()
    parser.description = __doc__.splitlines()[0]
    args = parser.parse_args()
    # The schemas of one Kubernetes version are enough to catch the broken copies (the check itself
    # validates the real files against two).
    args.versions = args.versions or ["1.31"]
    count = len(cases(args))
    print(f"==> Self-test: {count - len(ACCEPTED)} broken copies, each must fail, and "
          f"{len(ACCEPTED)} legitimate change(s) that must pass"
          + ("" if args.promtool else " (promtool's cases skipped: no promtool)"))
    started = time.time()
    # Two at a time: most of a case is Kustomize and schema validation, one core each.
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        results = list(pool.map(run_case, range(count), [args] * count))
    for _, line in results:
        print(line)
    missed = sum(1 for caught, _ in results if not caught)
    print(f"    {count - missed} of {count} cases as expected ({time.time() - started:.0f}s)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
