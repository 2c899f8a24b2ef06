"""The local stack and the image: docker-compose.yml, its Prometheus and Grafana provisioning, and
the Dockerfile.

- docker-compose.yml through the real Docker Compose v2 binary (`config --quiet`, then the resolved
  model as JSON): every third-party image pinned by digest (a service that is built here is
  exempt), every file it mounts present, its EDC__ variables settings of config/default.yaml that
  do not contradict the sizing defaults, the migration run as the owner and the daemons as another
  role, Prometheus scraping the daemons' service on their port, Grafana provisioned with that
  Prometheus and the dashboard folder, and the demo publisher's `generate` flags ones the CLI has;
- the Dockerfile: its syntax image and every FROM pinned by digest.
"""

import json
import os
import re
import subprocess
from urllib.parse import urlsplit

import yaml

from common import check_tuning, env_settings, flatten, lookup

DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
DAEMON_PORT = 9090


def resolved(repo, compose_bin, report):
    """The compose model as Docker Compose resolves it (anchors, merges, interpolation), or None."""
    where = repo.rel(repo.compose)
    args = [compose_bin, "-f", str(repo.compose), "--project-directory", str(repo.root)]
    quiet = subprocess.run(args + ["config", "--quiet"], capture_output=True, text=True, timeout=120,
                           check=False)
    if quiet.returncode != 0:
        report.fail(where, f"docker compose config: {(quiet.stderr or quiet.stdout).strip()}")
        return None
    done = subprocess.run(args + ["config", "--format", "json"], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        report.fail(where, f"docker compose config --format json: {(done.stderr or done.stdout).strip()}")
        return None
    report.ok(f"{where}: docker compose config --quiet")
    return json.loads(done.stdout)


def generate_flags(repo):
    """The long flags of `edc-ingest generate`, from the CLI's definition (src/cli/mod.rs)."""
    text = (repo.root / "src" / "cli" / "mod.rs").read_text(encoding="utf-8")
    block = re.search(r"\n\s*Generate\s*\{(.*?)\n\s*\},", text, re.S)
    if not block:
        return None
    return {"--" + f.replace("_", "-") for f in re.findall(r"^\s*(\w+)\s*:", block.group(1), re.M)}


def check_compose(repo, ctx, report, compose_bin):
    report.section(f"docker-compose.yml (Docker Compose {ctx.get('compose_version', '?')}), its "
                   "Prometheus and Grafana provisioning")
    model = resolved(repo, compose_bin, report)
    if model is None:
        return
    where = repo.rel(repo.compose)
    defaults = ctx["defaults"]
    known = flatten(defaults)
    services = model.get("services") or {}
    before = len(report.errors)
    pinned = 0
    for name, svc in sorted(services.items()):
        image = svc.get("image") or ""
        if not svc.get("build"):
            pinned += 1
            if not DIGEST.match(image):
                report.fail(where, f"service {name}: image {image!r} is not pinned by digest "
                                   "(name:tag@sha256:<64 hex>)")
        for vol in svc.get("volumes") or []:
            if vol.get("type") == "bind":
                source = vol.get("source", "")
                if not os.path.exists(source):
                    report.fail(where, f"service {name}: mounts {source}, which does not exist")
        env = {k: v for k, v in (svc.get("environment") or {}).items()}
        for var in sorted(v for v in env if v.startswith("EDC__")):
            key = ".".join(p.lower() for p in var[5:].split("__"))
            if key not in known or isinstance(lookup(defaults, key), dict):
                report.fail(where, f"service {name}: {var} ({key}) is not a setting of config/default.yaml")
        check_tuning(env_settings(env), defaults, f"{where} service {name}", report)
    if len(report.errors) == before:
        report.ok(f"{where}: {pinned} third-party images pinned by digest; every mounted file exists; "
                  "every EDC__ variable a setting, the sizing defaults not contradicted")

    _check_roles(where, services, report)
    _check_demo(repo, where, services, report)
    _check_prometheus(repo, where, services, report)
    _check_grafana(repo, where, services, report)


def _user(url):
    try:
        return urlsplit(url).username
    except ValueError:
        return None


def _check_roles(where, services, report):
    daemon = services.get("edc-ingest") or {}
    migrate = services.get("migrate") or {}
    d_env, m_env = daemon.get("environment") or {}, migrate.get("environment") or {}
    problems = []
    if not daemon or not migrate:
        problems.append("needs the services edc-ingest and migrate")
    owner = _user(m_env.get("EDC__POSTGRES__MIGRATE_URL") or m_env.get("EDC__POSTGRES__URL") or "")
    runtime = _user(d_env.get("EDC__POSTGRES__URL") or "")
    if "EDC__POSTGRES__MIGRATE_URL" not in m_env:
        problems.append("service migrate: no EDC__POSTGRES__MIGRATE_URL (the owner runs the migrations)")
    if owner and runtime and owner == runtime:
        problems.append(f"the daemons log in as {runtime}, the owner that migrates: give them the runtime role")
    if d_env.get("EDC__POSTGRES__MIGRATE_ON_START") != "false":
        problems.append("service edc-ingest: EDC__POSTGRES__MIGRATE_ON_START must be \"false\"")
    cond = ((daemon.get("depends_on") or {}).get("migrate") or {}).get("condition")
    if cond != "service_completed_successfully":
        problems.append("service edc-ingest must wait for migrate (service_completed_successfully)")
    for p in problems:
        report.fail(where, p)
    if not problems:
        report.ok(f"{where}: migrate runs as {owner} (the owner), the daemons as {runtime}, after it")


def _check_demo(repo, where, services, report):
    demo = services.get("demo-records")
    if demo is None:
        report.fail(where, "no service demo-records (the one-shot publisher of generated records)")
        return
    script = " ".join(demo.get("entrypoint") or []) + " " + " ".join(demo.get("command") or [])
    flags = generate_flags(repo)
    problems = []
    if "edc-ingest generate" not in script or "edc-ingest publish -" not in script:
        problems.append("its command must pipe `edc-ingest generate` into `edc-ingest publish -`")
    generate = script.split("edc-ingest generate", 1)[-1].split("|", 1)[0]
    if flags is None:
        problems.append("cannot find the flags of `generate` in src/cli/mod.rs")
    else:
        for flag in sorted(set(re.findall(r"--[a-z][a-z-]*", generate)) - flags):
            problems.append(f"`generate {flag}`: no such flag (it has {', '.join(sorted(flags))})")
    if ((demo.get("depends_on") or {}).get("edc-ingest") or {}).get("condition") != "service_healthy":
        problems.append("must wait for edc-ingest to be healthy (consuming) before publishing")
    for p in problems:
        report.fail(f"{where} service demo-records", p)
    if not problems:
        report.ok(f"{where}: demo-records publishes generated records once the replicas are healthy")


def _mount_target(services, name, source_suffix):
    for vol in (services.get(name) or {}).get("volumes") or []:
        if vol.get("type") == "bind" and vol.get("source", "").endswith(source_suffix):
            return vol.get("target")
    return None


def _check_prometheus(repo, where, services, report):
    config_target = _mount_target(services, "prometheus", "deploy/prometheus/prometheus.yml")
    rules_target = _mount_target(services, "prometheus", "deploy/prometheus/edc-ingest.rules.yml")
    problems = []
    if config_target != "/etc/prometheus/prometheus.yml":
        problems.append("service prometheus must mount deploy/prometheus/prometheus.yml at "
                        "/etc/prometheus/prometheus.yml (its default configuration)")
    if rules_target is None:
        problems.append("service prometheus does not mount deploy/prometheus/edc-ingest.rules.yml")
    with open(repo.prometheus_config, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    for rule_file in config.get("rule_files") or []:
        if config_target and rules_target and rules_target != config_target.rsplit("/", 1)[0] + "/" + rule_file:
            problems.append(f"rule_files names {rule_file}, which is not where the rules are mounted ({rules_target})")
    jobs = {j.get("job_name"): j for j in config.get("scrape_configs") or []}
    job = jobs.get("edc-ingest")
    if job is None:
        problems.append("deploy/prometheus/prometheus.yml: no scrape job edc-ingest")
    else:
        targets = [(n, sd.get("port")) for sd in job.get("dns_sd_configs") or [] for n in sd.get("names") or []]
        targets += [tuple(t.rsplit(":", 1)) for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
        if not any(n == "edc-ingest" and int(p) == DAEMON_PORT for n, p in targets):
            problems.append(f"the scrape job edc-ingest does not ask the service edc-ingest on port {DAEMON_PORT} "
                            f"(it asks {targets})")
    for p in problems:
        report.fail(where, p)
    if not problems:
        report.ok(f"{where}: Prometheus scrapes every replica of the service edc-ingest on port "
                  f"{DAEMON_PORT} (job edc-ingest) and loads the alert rules")


def _check_grafana(repo, where, services, report):
    problems = []
    ds_path = repo.compose_dir / "grafana" / "datasources.yaml"
    db_path = repo.compose_dir / "grafana" / "dashboards.yaml"
    with open(ds_path, encoding="utf-8") as f:
        datasources = (yaml.safe_load(f) or {}).get("datasources") or []
    prom = [d for d in datasources if d.get("type") == "prometheus"]
    if not prom or not prom[0].get("isDefault"):
        problems.append(f"{repo.rel(ds_path)}: no default Prometheus data source (the dashboard's "
                        "datasource variable takes the default)")
    else:
        url = urlsplit(prom[0].get("url", ""))
        if url.hostname not in services or url.port != 9090:
            problems.append(f"{repo.rel(ds_path)}: {prom[0].get('url')} is not a service of the stack on 9090")
    with open(db_path, encoding="utf-8") as f:
        providers = (yaml.safe_load(f) or {}).get("providers") or []
    paths = {((p.get("options") or {}).get("path") or "").rstrip("/") for p in providers}
    mounted = _mount_target(services, "grafana", "deploy/grafana")
    if mounted is None or mounted.rstrip("/") not in paths:
        problems.append(f"{repo.rel(db_path)}: no provider reads {mounted}, where deploy/grafana is mounted")
    home = ((services.get("grafana") or {}).get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and mounted and not (home.startswith(mounted.rstrip("/") + "/")
                                 and (repo.grafana / home.rsplit("/", 1)[-1]).exists()):
        problems.append(f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home} is no dashboard of deploy/grafana")
    for d in ("datasources", "dashboards"):
        if _mount_target(services, "grafana", f"deploy/compose/grafana/{d}.yaml") is None:
            problems.append(f"service grafana does not mount deploy/compose/grafana/{d}.yaml")
    for p in problems:
        report.fail(where, p)
    if not problems:
        report.ok(f"{where}: Grafana provisioned with the stack's Prometheus and the dashboards of "
                  "deploy/grafana (home: edc-ingest)")


def check_dockerfile(repo, report):
    where = repo.rel(repo.dockerfile)
    lines = repo.dockerfile.read_text(encoding="utf-8").splitlines()
    stages = set()
    before = len(report.errors)
    count = 0
    syntax = next((l for l in lines if l.lower().startswith("# syntax=")), None)
    if syntax is not None:
        count += 1
        if not DIGEST.match(syntax.split("=", 1)[1].strip()):
            report.fail(where, f"{syntax}: the frontend image is not pinned by digest")
    for line in lines:
        m = re.match(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if not m:
            continue
        image, stage = m.group(1), m.group(2)
        if image not in stages:
            count += 1
            if not DIGEST.match(image):
                report.fail(where, f"FROM {image}: not pinned by digest (name:tag@sha256:<64 hex>)")
        if stage:
            stages.add(stage)
    if len(report.errors) == before:
        report.ok(f"{where}: {count} images (syntax frontend and bases) pinned by digest")


def check(repo, ctx, report, compose_bin):
    check_compose(repo, ctx, report, compose_bin)
    report.section("Dockerfile")
    check_dockerfile(repo, report)
