#!/usr/bin/env python3
"""Offline checks of the deployment artefacts; run by scripts/check-deploy.sh, which installs what
this needs (kubernetes-validate, which brings jsonschema and PyYAML; kubectl for Kustomize; the
Docker Compose binary; promtool) and passes their paths.

1. Kubernetes (kube.py, settings.py, policy.py, monitoring.py): every overlay of deploy/kubernetes
   rendered by Kustomize, plus one render with every component, validated against the schemas and
   against the daemon's rules, the settings, images pinned by digest, the NetworkPolicy, the scrape.
2. Alert rules (monitoring.py): metric names the daemon serves, a test in which each alert fires,
   promtool, the PrometheusRule identical to the rules file.
3. Grafana dashboards (monitoring.py).
4. docker-compose.yml and the Dockerfile (compose.py).

Exit status 0 when everything holds, 1 otherwise; every problem is printed, not just the first.
--root checks a copy of the repository instead (the self-test mutates copies: selftest.py).
"""

import argparse
import os
import sys
from pathlib import Path

import kubernetes_validate

import compose
import kube
import monitoring
from common import MetricsSourceError, Report, Repo, served_metrics

SECTIONS = ("kubernetes", "rules", "grafana", "compose")


def context(repo, args):
    versions = args.versions or ["1.31", kubernetes_validate.utils.major_minor(
        kubernetes_validate.utils.latest_version())]
    return {
        "versions": versions,
        "defaults": repo.defaults(),
        "metrics": served_metrics(repo),
        "max_connections": args.max_connections,
        "reserved_connections": args.reserved_connections,
        "compose_version": args.compose_version,
    }


def run(repo, args, report):
    """Runs the sections asked for; returns the report."""
    try:
        ctx = context(repo, args)
    except MetricsSourceError as e:
        report.fail("src/stats", str(e))
        return report
    only = set(args.only or SECTIONS)
    if "kubernetes" in only:
        kube.check(repo, ctx, report, args.kubectl)
    if "rules" in only:
        monitoring.check_rules(repo, ctx, report, args.promtool)
    if "grafana" in only:
        monitoring.check_grafana(repo, ctx, report)
    if "compose" in only:
        compose.check(repo, ctx, report, args.compose)
    return report


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2]),
                   help="the repository to check (default: this one)")
    p.add_argument("--kubectl", default="kubectl", help="kubectl, for `kubectl kustomize`")
    p.add_argument("--compose", default="docker-compose", help="the Docker Compose v2 binary")
    p.add_argument("--compose-version", default="?", help="its version, for the output")
    p.add_argument("--promtool", default=None,
                   help="promtool, for `check rules`, `test rules` and `check config` (without it "
                        "those are skipped, and said so)")
    p.add_argument("--only", action="append", choices=SECTIONS, help="check only this part (repeatable)")
    p.add_argument("-k", "--kubernetes-version", action="append", dest="versions",
                   help="Kubernetes version to validate against (repeatable; default: 1.31, the oldest "
                        "the manifests claim, and the newest the installed schemas know)")
    p.add_argument("--max-connections", type=int,
                   default=int(os.environ.get("EDC_PG_MAX_CONNECTIONS", "100")),
                   help="PostgreSQL max_connections the KEDA cap must fit (default 100)")
    p.add_argument("--reserved-connections", type=int, default=3,
                   help="superuser_reserved_connections + reserved_connections (default 3)")
    return p


def main():
    args = parser().parse_args()
    repo = Repo(args.root)
    report = run(repo, args, Report())
    if args.promtool is None and (not args.only or "rules" in args.only):
        report.note("deploy/prometheus", "promtool was not given: `promtool check rules`, `test rules` "
                                         "and `check config` did not run")
    print(f"    {len(report.errors)} problem(s), {len(report.notes)} note(s)")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
