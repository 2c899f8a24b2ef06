"""Monitoring: the alert rules, the scrape that feeds them, and the Grafana dashboards.

- deploy/prometheus/edc-ingest.rules.yml: only metric names the daemon serves (the list of
  src/stats/tests.rs, which a unit test proves against a scrape), a severity, a summary and a
  description on every alert, a unit test in edc-ingest.rules.test.yml in which each alert fires,
  and `promtool check rules` / `promtool test rules` when promtool is there;
- the prometheus-operator component's PrometheusRule carries exactly the same groups
  (`python3 deploy/check/monitoring.py --write` writes it from the rules file);
- in each rendered overlay: a PodMonitor or ServiceMonitor that selects the daemons and their
  metrics port, whenever a PrometheusRule or a KEDA Prometheus trigger needs the series;
- deploy/grafana/*.json: valid JSON, a Prometheus datasource variable used by every panel, only
  metric names the daemon serves.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from common import Repo, metric_names, unknown_metrics

SEVERITIES = {"critical", "warning", "info"}

PROMETHEUS_RULE_HEADER = """\
# GENERATED from deploy/prometheus/edc-ingest.rules.yml by `python3 deploy/check/monitoring.py --write`:
# edit that file and run the command (scripts/check-deploy.sh fails when the two differ). The
# alerts, with the Prometheus Operator: its Prometheus picks PrometheusRules by its ruleSelector
# (kube-prometheus-stack selects `release: <its release name>` unless
# ruleSelectorNilUsesHelmValues is false: add that label if yours does).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: edc-ingest
  namespace: edc-ingest
  labels:
    app.kubernetes.io/name: edc-ingest
spec:
"""


def prometheus_rule_text(repo):
    """The PrometheusRule made from the rules file: its `groups:` onwards, indented under spec."""
    text = repo.rules.read_text(encoding="utf-8")
    start = re.search(r"^groups:", text, re.M)
    if not start:
        raise ValueError(f"{repo.rel(repo.rules)}: no top-level `groups:`")
    body = "".join(("  " + line if line.strip() else line)
                   for line in text[start.start():].splitlines(keepends=True))
    return PROMETHEUS_RULE_HEADER + body


# ------------------------------------------------------------------------------------------------
# rules


def _load(path, report, repo):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        report.fail(repo.rel(path), f"cannot read: {e}")
        return None


def check_rules(repo, ctx, report, promtool):
    report.section("Prometheus alert rules (deploy/prometheus/) and their PrometheusRule")
    names, histograms = ctx["metrics"]
    where = repo.rel(repo.rules)
    rules = _load(repo.rules, report, repo)
    if rules is None:
        return
    before = len(report.errors)
    alerts = []
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record") or "?"
            for problem in unknown_metrics(str(rule.get("expr", "")), names, histograms):
                report.fail(where, f"{name}: {problem}")
            if "alert" not in rule:
                continue
            alerts.append(name)
            severity = (rule.get("labels") or {}).get("severity")
            if severity not in SEVERITIES:
                report.fail(where, f"{name}: labels.severity must be one of {sorted(SEVERITIES)}, not {severity!r}")
            for key in ("summary", "description"):
                if not (rule.get("annotations") or {}).get(key):
                    report.fail(where, f"{name}: no annotations.{key}")
    if not alerts:
        report.fail(where, "no alert")
    if len(report.errors) == before:
        used = set()
        for group in rules.get("groups") or []:
            for rule in group.get("rules") or []:
                used |= metric_names(str(rule.get("expr", "")), histograms)
        report.ok(f"{where}: {len(alerts)} alerts on {len(used)} metrics the daemon serves "
                  f"({', '.join(sorted(used))}), each with a severity, a summary and a description")

    tests = _load(repo.rules_test, report, repo)
    if tests is not None:
        where_t = repo.rel(repo.rules_test)
        if repo.rules.name not in (tests.get("rule_files") or []):
            report.fail(where_t, f"rule_files does not name {repo.rules.name}")
        firing = set()
        for test in tests.get("tests") or []:
            for t in test.get("alert_rule_test") or []:
                if t.get("exp_alerts"):
                    firing.add(t.get("alertname"))
        untested = [a for a in alerts if a not in firing]
        for a in untested:
            report.fail(where_t, f"{a}: no test in which it fires (alert_rule_test with exp_alerts)")
        if not untested:
            report.ok(f"{where_t}: every alert has a test in which it fires")

    # The PrometheusRule of the prometheus-operator component carries the same groups.
    if repo.prometheus_rule.exists():
        expected = yaml.safe_load(prometheus_rule_text(repo))
        actual = _load(repo.prometheus_rule, report, repo)
        if actual is not None and actual != expected:
            report.fail(repo.rel(repo.prometheus_rule), f"differs from {where}: run "
                        "`python3 deploy/check/monitoring.py --write`")
        elif actual is not None:
            report.ok(f"{repo.rel(repo.prometheus_rule)}: the groups of {where}, unchanged")
    else:
        report.fail(repo.rel(repo.prometheus_rule), "missing: run `python3 deploy/check/monitoring.py --write`")

    if promtool is None:
        return
    for args, what in ((["check", "rules", repo.rules.name], "promtool check rules"),
                       (["test", "rules", repo.rules_test.name], "promtool test rules"),
                       (["check", "config", repo.prometheus_config.name], "promtool check config")):
        done = subprocess.run([promtool, *args], cwd=repo.prometheus, capture_output=True, text=True,
                              timeout=120, check=False)
        target = f"deploy/prometheus/{args[-1]}"
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            report.fail(target, f"{what} failed:\n{output}")
        else:
            report.ok(f"{target}: {what}")


# ------------------------------------------------------------------------------------------------
# the scrape, in one render


def _selects(selector, labels):
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items()) \
        and not (selector or {}).get("matchExpressions")


def check_scrape(render, ctx, report):
    names, histograms = ctx["metrics"]
    dep, spec, main = render.daemon()
    if dep is None or main is None:
        return
    pod_labels = ((dep.doc["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
    ports = {p.get("name") for p in main.get("ports") or [] if p.get("name")}
    scraped = []
    for d in render.of_kind("PodMonitor"):
        s = d.doc.get("spec") or {}
        problems = []
        if not _selects(s.get("selector"), pod_labels):
            problems.append(f"selector {s.get('selector')} does not select the daemon's pods ({pod_labels})")
        for job_pod, labels, _ in render.pod_specs():
            if job_pod.kind == "Job" and _selects(s.get("selector"), labels):
                problems.append(f"selector also selects {job_pod.where()}, which serves no metrics")
        ns = s.get("namespaceSelector") or {}
        if ns and not ns.get("any") and "edc-ingest" not in (ns.get("matchNames") or []):
            problems.append(f"namespaceSelector {ns} leaves out the namespace edc-ingest")
        endpoints = s.get("podMetricsEndpoints") or []
        if not endpoints:
            problems.append("no podMetricsEndpoints")
        for e in endpoints:
            if e.get("port") not in ports:
                problems.append(f"endpoint port {e.get('port')!r} is no named port of the daemon ({sorted(ports)})")
            if e.get("path", "/metrics") != "/metrics":
                problems.append(f"endpoint path {e.get('path')} is not /metrics")
        for p in problems:
            report.fail(d.where(), p)
        if not problems:
            scraped.append(d)
            report.ok(f"{d.where()}: scrapes /metrics on port {endpoints[0].get('port')} of every daemon "
                      "replica (not the migration Job)")
    for d in render.of_kind("ServiceMonitor"):
        s = d.doc.get("spec") or {}
        services = [svc for svc in render.of_kind("Service") if _selects(s.get("selector"), svc.doc["metadata"].get("labels") or {})
                    and _selects({"matchLabels": (svc.doc.get("spec") or {}).get("selector") or {}}, pod_labels)]
        service_ports = {p.get("name") for svc in services for p in (svc.doc.get("spec") or {}).get("ports") or []}
        bad = [e.get("port") for e in s.get("endpoints") or [] if e.get("port") not in service_ports]
        if not services or bad or not s.get("endpoints"):
            report.fail(d.where(), "selects no Service of the daemons with its endpoint ports")
        else:
            scraped.append(d)
    need = [(d, "its alerts") for d in render.of_kind("PrometheusRule")]
    for d in render.of_kind("ScaledObject"):
        for t in (d.doc.get("spec") or {}).get("triggers") or []:
            if t.get("type") != "prometheus":
                continue
            query = (t.get("metadata") or {}).get("query", "")
            need.append((d, f"the query of trigger {t.get('name')}"))
            for problem in unknown_metrics(query, names, histograms):
                report.fail(d.where(), f"trigger {t.get('name')}: {problem}")
            for label, value in re.findall(r'(namespace)\s*=\s*"([^"]*)"', query):
                if value != "edc-ingest":
                    report.fail(d.where(), f"trigger {t.get('name')}: selects {label}=\"{value}\", the "
                                           "daemons run in edc-ingest")
    for d, what in need:
        if not scraped:
            report.fail(d.where(), f"{what} read the daemons' series from Prometheus, but no PodMonitor "
                                   "or ServiceMonitor of this overlay scrapes them: no data (add the "
                                   "prometheus-operator component)")
    for d in render.of_kind("PrometheusRule"):
        for group in (d.doc.get("spec") or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                for problem in unknown_metrics(str(rule.get("expr", "")), names, histograms):
                    report.fail(d.where(), f"{rule.get('alert') or rule.get('record')}: {problem}")


# ------------------------------------------------------------------------------------------------
# Grafana


def check_grafana(repo, ctx, report):
    report.section("Grafana dashboards (deploy/grafana/)")
    names, histograms = ctx["metrics"]
    files = sorted(repo.grafana.glob("*.json"))
    if not files:
        report.fail(repo.rel(repo.grafana), "no dashboard found")
    for path in files:
        where = repo.rel(path)
        try:
            with open(path, encoding="utf-8") as f:
                dash = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            report.fail(where, f"not valid JSON: {e}")
            continue
        before = len(report.errors)
        variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list") or []}
        ds_vars = [n for n, v in variables.items() if v.get("type") == "datasource" and v.get("query") == "prometheus"]
        if not ds_vars:
            report.fail(where, "no Prometheus datasource variable (templating: type datasource, query prometheus)")
        uids = {f"${{{n}}}" for n in ds_vars} | {f"${n}" for n in ds_vars}
        panels = list(dash.get("panels") or [])
        for p in list(panels):
            panels.extend(p.get("panels") or [])
        ids, used = set(), set()
        for p in panels:
            title = p.get("title", "?")
            if p.get("id") in ids:
                report.fail(where, f"panel {title}: id {p.get('id')} used twice")
            ids.add(p.get("id"))
            if not {"h", "w", "x", "y"} <= set(p.get("gridPos") or {}):
                report.fail(where, f"panel {title}: gridPos incomplete")
            if p.get("type") == "row":
                continue
            if (p.get("datasource") or {}).get("uid") not in uids:
                report.fail(where, f"panel {title}: datasource is not the datasource variable")
            targets = p.get("targets") or []
            if not targets:
                report.fail(where, f"panel {title}: no query")
            for t in targets:
                expr = t.get("expr") or ""
                if not expr:
                    report.fail(where, f"panel {title}: query {t.get('refId')} is empty")
                if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                    report.fail(where, f"panel {title}: unbalanced brackets in {expr}")
                for problem in unknown_metrics(expr, names, histograms):
                    report.fail(where, f"panel {title}: {problem}")
                used |= metric_names(expr, histograms)
        for v in variables.values():
            if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") not in uids:
                report.fail(where, f"variable {v.get('name')}: datasource is not the datasource variable")
            for problem in unknown_metrics(v.get("definition") or "", names, histograms):
                report.fail(where, f"variable {v.get('name')}: {problem}")
        if len(report.errors) == before:
            unused = sorted(names - used)
            report.ok(f"{where}: valid JSON, {len(panels)} panels on the datasource variable, "
                      f"{len(used & names)} of the daemon's {len(names)} metrics"
                      + (f" (not shown: {', '.join(unused)})" if unused else ""))


def main():
    if sys.argv[1:] != ["--write"]:
        print("usage: python3 deploy/check/monitoring.py --write   (writes the PrometheusRule of "
              "deploy/kubernetes/components/prometheus-operator from deploy/prometheus/edc-ingest.rules.yml)",
              file=sys.stderr)
        return 2
    repo = Repo(Path(__file__).resolve().parents[2])
    repo.prometheus_rule.write_text(prometheus_rule_text(repo), encoding="utf-8")
    print(f"wrote {repo.rel(repo.prometheus_rule)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
