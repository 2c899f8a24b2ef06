#!/usr/bin/env python3
"""Offline checks of the deployment artefacts; run by scripts/check-deploy.sh, which installs what
this needs (kubernetes-validate, which brings jsonschema and PyYAML).

1. Every document of deploy/kubernetes/**.yaml against the Kubernetes JSON schemas bundled in
   kubernetes-validate, strict (an unknown field is an error), for each Kubernetes version given.
   A kind without a bundled schema is an error, except KEDA's, which are checked against the strict
   schemas written for this in deploy/check/schemas/.
2. What no schema sees: names that must agree between files (Secrets and their keys, ConfigMaps,
   the KEDA references, the queues), the settings file's keys against config/default.yaml, the
   protocols ConfigMap against config/studies/, the grace period against shutdown_grace, the
   pseudonym key never read from a Secret volume directly, the hardened security contexts, the
   connection budget of the KEDA cap, images pinned by digest, and the NetworkPolicy (policy.py).
3. deploy/grafana/*.json: valid JSON, a Prometheus datasource variable used by every panel, and
   only metric names that the daemon serves.

Exit status 0 when everything holds, 1 otherwise; every problem is printed, not just the first.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

import policy

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "kubernetes"
GRAFANA_DIR = REPO / "deploy" / "grafana"
SCHEMA_DIR = REPO / "deploy" / "check" / "schemas"
DEFAULT_YAML = REPO / "config" / "default.yaml"
STUDIES_DIR = REPO / "config" / "studies"

# Kinds that no bundled Kubernetes schema knows, and the schema written for each.
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
}

NAMESPACE = "edc-ingest"
IMAGE_UID = 10001

# The metrics the daemon serves on /metrics. Histograms add _bucket, _sum and _count. A metric added to
# the daemon goes here too before a dashboard may use it.
METRICS = {
    "edc_messages_total", "edc_dead_letters_total", "edc_records_stored_total",
    "edc_job_duration_seconds", "edc_publish_to_commit_seconds", "edc_commit_group_size",
    "edc_deliveries_in_flight", "edc_workers_busy", "edc_workers",
    "edc_pool_connections", "edc_pool_waiting", "edc_pool_size",
    "edc_db_gate_open", "edc_db_gate_closed_seconds_total",
    "edc_broker_reconnects_total", "edc_broker_sessions_total", "edc_broker_connected",
    "edc_outbox_backlog", "edc_relay_lag_seconds", "edc_events_published_total",
    "edc_events_parked_total", "edc_batches_open", "edc_reply_to_refused_total",
    "edc_ready", "edc_build_info",
}
HISTOGRAMS = {"edc_job_duration_seconds", "edc_publish_to_commit_seconds", "edc_commit_group_size"}

# Names a KEDA scalingModifiers formula may use besides its triggers' names (expr-lang).
FORMULA_WORDS = {
    "max", "min", "abs", "ceil", "floor", "round", "float", "int", "len", "count", "sum", "mean",
    "median", "all", "any", "none", "one", "filter", "map", "nil", "true", "false", "let", "in",
    "not", "and", "or",
}


class Report:
    def __init__(self):
        self.errors = []
        self.notes = []

    def ok(self, what):
        print(f"  ok    {what}")

    def fail(self, where, message):
        self.errors.append(f"{where}: {message}")
        print(f"  FAIL  {where}: {message}")

    def note(self, where, message):
        self.notes.append(f"{where}: {message}")
        print(f"  note  {where}: {message}")


def rel(path):
    try:
        return str(Path(path).relative_to(REPO))
    except ValueError:
        return str(path)


def flatten(mapping, prefix=""):
    """Dotted key paths of a nested mapping, sections included."""
    keys = set()
    for k, v in (mapping or {}).items():
        path = f"{prefix}{k}"
        keys.add(path)
        if isinstance(v, dict):
            keys |= flatten(v, path + ".")
    return keys


def seconds(duration):
    """A humantime duration as the daemon reads it (25s, 500ms, 1m, 1m30s) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration).replace(" ", ""):
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


# ------------------------------------------------------------------------------------------------
# 1. schemas


def load_manifests(report):
    """Every document of every YAML file under deploy/kubernetes, as (file, index, document)."""
    docs = []
    files = sorted(p for p in K8S_DIR.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        report.fail(rel(K8S_DIR), "no manifests found")
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            report.fail(rel(path), f"not valid YAML: {e}")
            continue
        found = [d for d in loaded if d is not None]
        if not found:
            report.fail(rel(path), "no Kubernetes document in the file")
        for i, doc in enumerate(found):
            docs.append((path, i, doc))
    return files, docs


def describe(path, doc):
    if not isinstance(doc, dict):
        return rel(path)
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{rel(path)} {doc.get('kind', '?')}/{name}"


def check_schemas(docs, versions, report):
    custom = {}
    for key, filename in CUSTOM_SCHEMAS.items():
        with open(SCHEMA_DIR / filename, encoding="utf-8") as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        custom[key] = jsonschema.Draft202012Validator(schema)

    for path, _, doc in docs:
        where = describe(path, doc)
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            report.fail(where, "a document without apiVersion and kind")
            continue
        meta = doc.get("metadata") or {}
        if not meta.get("name"):
            report.fail(where, "metadata.name is missing")
            continue
        if doc["kind"] != "Namespace" and meta.get("namespace") != NAMESPACE:
            report.fail(where, f"metadata.namespace must be {NAMESPACE}")
        key = (doc["apiVersion"], doc["kind"])
        if key in custom:
            errors = sorted(custom[key].iter_errors(doc), key=lambda e: list(e.path))
            for e in errors:
                loc = ".".join(str(p) for p in e.path) or "(document)"
                report.fail(where, f"{loc}: {e.message}")
            if not errors:
                report.ok(f"{where} (schema deploy/check/schemas/{CUSTOM_SCHEMAS[key]})")
            continue
        passed = True
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                loc = ".".join(str(p) for p in e.path) or "(document)"
                report.fail(where, f"Kubernetes {version}: {loc}: {e.message}")
                passed = False
            except kubernetes_validate.utils.SchemaNotFoundError as e:
                report.fail(where, f"{e.message}: a typo in apiVersion or kind, or a custom resource "
                                   "without a schema in deploy/check/schemas/")
                passed = False
                break
            except kubernetes_validate.utils.VersionNotSupportedError as e:
                report.fail(where, e.message)
                passed = False
                break
        if passed:
            report.ok(f"{where} (Kubernetes {', '.join(versions)}, strict)")


# ------------------------------------------------------------------------------------------------
# 2. what no schema sees


def index(docs):
    by_kind = {}
    for path, _, doc in docs:
        if isinstance(doc, dict) and doc.get("kind") and (doc.get("metadata") or {}).get("name"):
            by_kind.setdefault(doc["kind"], {}).setdefault(doc["metadata"]["name"], []).append((path, doc))
    return by_kind


def one(by_kind, kind, name):
    found = by_kind.get(kind, {}).get(name)
    return found[0] if found else (None, None)


def pod_specs(by_kind):
    """(where, pod spec) of every Deployment and Job."""
    out = []
    for kind in ("Deployment", "Job"):
        for name, entries in by_kind.get(kind, {}).items():
            for path, doc in entries:
                spec = (((doc.get("spec") or {}).get("template") or {}).get("spec")) or {}
                out.append((f"{rel(path)} {kind}/{name}", doc, spec))
    return out


def containers_of(spec):
    return [("initContainer", c) for c in spec.get("initContainers") or []] + \
           [("container", c) for c in spec.get("containers") or []]


def check_settings(by_kind, report):
    """The settings file: valid YAML, keys known to config/default.yaml. Returns it (or {})."""
    path, cm = one(by_kind, "ConfigMap", "edc-ingest-settings")
    if cm is None:
        report.fail("deploy/kubernetes", "no ConfigMap edc-ingest-settings")
        return {}
    where = f"{rel(path)} ConfigMap/edc-ingest-settings"
    text = (cm.get("data") or {}).get("config.yaml")
    if text is None:
        report.fail(where, "no config.yaml key")
        return {}
    try:
        settings = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        report.fail(where, f"config.yaml is not valid YAML: {e}")
        return {}
    with open(DEFAULT_YAML, encoding="utf-8") as f:
        known = flatten(yaml.safe_load(f))
    unknown = sorted(flatten(settings) - known)
    for key in unknown:
        report.fail(where, f"config.yaml: `{key}` is not a key of config/default.yaml (the daemon "
                           "refuses unknown keys)")
    if not unknown:
        report.ok(f"{where}: every key of config.yaml is in config/default.yaml")
    return settings


def check_env_keys(by_kind, report):
    with open(DEFAULT_YAML, encoding="utf-8") as f:
        known = flatten(yaml.safe_load(f))
    for where, _, spec in pod_specs(by_kind):
        for _, c in containers_of(spec):
            for env in c.get("env") or []:
                name = env.get("name", "")
                if name.startswith("EDC__"):
                    key = ".".join(part.lower() for part in name[5:].split("__"))
                    if key not in known:
                        # New settings may be added to the daemon before config/default.yaml lists
                        # them; the daemon itself refuses an unknown EDC__ variable at start.
                        report.note(where, f"{name} ({key}) is not in config/default.yaml")


def check_studies(by_kind, report):
    path, cm = one(by_kind, "ConfigMap", "edc-ingest-studies")
    if cm is None:
        report.fail("deploy/kubernetes", "no ConfigMap edc-ingest-studies")
        return
    where = f"{rel(path)} ConfigMap/edc-ingest-studies"
    data = cm.get("data") or {}
    if not data:
        report.fail(where, "no protocol in it")
    for key, text in sorted(data.items()):
        if not key.endswith((".yaml", ".yml")):
            report.fail(where, f"{key}: the daemon reads only *.yaml and *.yml files")
            continue
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as e:
            report.fail(where, f"{key} is not valid YAML: {e}")
            continue
        source = STUDIES_DIR / key
        if source.exists():
            if source.read_text(encoding="utf-8") != text:
                report.fail(where, f"{key} differs from config/studies/{key}: copy the file into "
                                   "the ConfigMap again (indented by 4 spaces under `|`)")
            else:
                report.ok(f"{where}: {key} is identical to config/studies/{key}")


def check_references(by_kind, report):
    """ConfigMaps, Secrets and their keys, KEDA references: every name used is defined."""
    secrets = {}
    for name, entries in by_kind.get("Secret", {}).items():
        for _, doc in entries:
            secrets.setdefault(name, set()).update((doc.get("stringData") or {}).keys(),
                                                   (doc.get("data") or {}).keys())
    configmaps = set(by_kind.get("ConfigMap", {}))
    accounts = set(by_kind.get("ServiceAccount", {}))
    count = 0
    before = len(report.errors)

    def secret_key(where, name, key):
        nonlocal count
        count += 1
        if name not in secrets:
            report.fail(where, f"Secret {name} is not described in secrets/secrets.example.yaml")
        elif key is not None and key not in secrets[name]:
            report.fail(where, f"Secret {name} has no key {key} in secrets/secrets.example.yaml")

    for where, _, spec in pod_specs(by_kind):
        sa = spec.get("serviceAccountName")
        if sa and sa not in accounts:
            report.fail(where, f"ServiceAccount {sa} is not defined")
        for vol in spec.get("volumes") or []:
            if "configMap" in vol:
                count += 1
                if vol["configMap"].get("name") not in configmaps:
                    report.fail(where, f"volume {vol['name']}: ConfigMap {vol['configMap'].get('name')} is not defined")
            if "secret" in vol:
                items = vol["secret"].get("items") or [{"key": None}]
                for item in items:
                    secret_key(where, vol["secret"].get("secretName"), item.get("key"))
        names = {v.get("name") for v in spec.get("volumes") or []}
        for _, c in containers_of(spec):
            for m in c.get("volumeMounts") or []:
                count += 1
                if m.get("name") not in names:
                    report.fail(where, f"{c.get('name')}: mounts volume {m.get('name')}, which is not defined")
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret_key(where, ref.get("name"), ref.get("key"))

    for name, entries in by_kind.get("TriggerAuthentication", {}).items():
        for path, doc in entries:
            for ref in (doc.get("spec") or {}).get("secretTargetRef") or []:
                secret_key(f"{rel(path)} TriggerAuthentication/{name}", ref.get("name"), ref.get("key"))

    for name, entries in by_kind.get("ScaledObject", {}).items():
        for path, doc in entries:
            where = f"{rel(path)} ScaledObject/{name}"
            spec = doc.get("spec") or {}
            target = (spec.get("scaleTargetRef") or {}).get("name")
            count += 1
            if target not in by_kind.get("Deployment", {}):
                report.fail(where, f"scaleTargetRef: Deployment {target} is not defined")
            for trig in spec.get("triggers") or []:
                auth = (trig.get("authenticationRef") or {}).get("name")
                if auth:
                    count += 1
                    if auth not in by_kind.get("TriggerAuthentication", {}):
                        report.fail(where, f"trigger {trig.get('name')}: TriggerAuthentication {auth} is not defined")
    if len(report.errors) == before:
        report.ok(f"{count} references to ConfigMaps, Secrets (and their keys), volumes and KEDA objects resolve")


def check_daemon(by_kind, settings, report):
    """The Deployment against the settings and the daemon's rules."""
    path, dep = one(by_kind, "Deployment", "edc-ingest")
    if dep is None:
        report.fail("deploy/kubernetes", "no Deployment edc-ingest")
        return
    where = f"{rel(path)} Deployment/edc-ingest"
    spec = dep["spec"]["template"]["spec"]
    main = next((c for c in spec.get("containers") or [] if c.get("name") == "edc-ingest"), None)
    if main is None:
        report.fail(where, "no container named edc-ingest")
        return
    env = {e["name"]: e.get("value") for e in main.get("env") or []}

    grace = spec.get("terminationGracePeriodSeconds", 30)
    shutdown = seconds(settings.get("shutdown_grace", "25s"))
    if grace <= shutdown:
        report.fail(where, f"terminationGracePeriodSeconds ({grace}) must exceed shutdown_grace ({shutdown:g}s)")
    else:
        report.ok(f"{where}: terminationGracePeriodSeconds {grace} > shutdown_grace {shutdown:g}s")

    if env.get("EDC__POSTGRES__MIGRATE_ON_START") != "false":
        report.fail(where, "EDC__POSTGRES__MIGRATE_ON_START must be \"false\": the migration Job applies them")

    listen = env.get("EDC__HTTP__LISTEN", "0.0.0.0:9090")
    port = int(listen.rsplit(":", 1)[1])
    ports = {p.get("name"): p.get("containerPort") for p in main.get("ports") or []}
    for probe, want in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", None)):
        get = (main.get(probe) or {}).get("httpGet")
        if get is None:
            if want:
                report.fail(where, f"{probe} must be an httpGet on {want}")
            continue
        if want and get.get("path") != want:
            report.fail(where, f"{probe} must ask {want}, not {get.get('path')}")
        probe_port = ports.get(get.get("port"), get.get("port"))
        if probe_port != port:
            report.fail(where, f"{probe} asks port {get.get('port')}, the daemon listens on {port}")

    # The pseudonym key: a file the daemon accepts only with mode 0400 and its own uid, which a
    # Secret volume never gives (fsGroup makes it 0440; without fsGroup it is root's).
    key_file = settings.get("pseudonym_key_file")
    if key_file:
        mounts = sorted(main.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"]))
        mount = next((m for m in mounts if key_file.startswith(m["mountPath"].rstrip("/") + "/")), None)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        vol = volumes.get(mount["name"]) if mount else None
        if vol is None:
            report.fail(where, f"pseudonym_key_file {key_file} is on no volume of the container")
        elif "emptyDir" not in vol or vol["emptyDir"].get("medium") != "Memory":
            report.fail(where, f"pseudonym_key_file {key_file} must be on a memory-backed emptyDir filled "
                               "by the init container: the daemon refuses a Secret volume's 0440 file")
        else:
            writers = [c.get("name") for c in spec.get("initContainers") or []
                       if any(m["name"] == mount["name"] and not m.get("readOnly") for m in c.get("volumeMounts") or [])]
            if not writers:
                report.fail(where, f"no init container writes the pseudonym key into volume {mount['name']}")
            else:
                report.ok(f"{where}: pseudonym key copied by init container {writers[0]} into memory-backed "
                          f"volume {mount['name']} (mode 0400, uid {IMAGE_UID})")


def http_port(by_kind):
    """The port the daemon's HTTP listener takes in the Deployment (EDC__HTTP__LISTEN, else the
    image's 0.0.0.0:9090)."""
    _, dep = one(by_kind, "Deployment", "edc-ingest")
    spec = ((dep or {}).get("spec") or {}).get("template", {}).get("spec") or {}
    main = next((c for c in spec.get("containers") or [] if c.get("name") == "edc-ingest"), {})
    env = {e["name"]: e.get("value") for e in main.get("env") or []}
    return int((env.get("EDC__HTTP__LISTEN") or "0.0.0.0:9090").rsplit(":", 1)[1])


def check_security(by_kind, report):
    checked = 0
    before = len(report.errors)
    for where, _, spec in pod_specs(by_kind):
        pod = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            report.fail(where, "automountServiceAccountToken must be false (the daemon never calls the API)")
        for what, c in containers_of(spec):
            sc = c.get("securityContext") or {}
            name = f"{where} {what} {c.get('name')}"
            checked += 1

            def eff(key):
                return sc.get(key, pod.get(key))
            problems = []
            if eff("runAsNonRoot") is not True:
                problems.append("runAsNonRoot: true")
            if eff("runAsUser") != IMAGE_UID:
                problems.append(f"runAsUser: {IMAGE_UID}")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append("allowPrivilegeEscalation: false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append("readOnlyRootFilesystem: true")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append("capabilities.drop: [ALL]")
            if (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append("seccompProfile RuntimeDefault")
            if (sc.get("capabilities") or {}).get("add"):
                problems.append("no capabilities.add")
            if not (c.get("resources") or {}).get("limits", {}).get("memory"):
                problems.append("a memory limit")
            for p in problems:
                report.fail(name, f"needs {p}")
    if checked and len(report.errors) == before:
        report.ok(f"{checked} containers: non-root uid {IMAGE_UID}, read-only root, no privilege "
                  "escalation, no capabilities, RuntimeDefault seccomp, memory limit")


def check_keda(by_kind, settings, report, max_connections, reserved):
    amqp = settings.get("amqp") or {}
    queue = amqp.get("queue", "edc.records")
    urgent = amqp.get("urgent_queue") or f"{queue}.urgent"
    pool = (settings.get("postgres") or {}).get("pool_size", 16)
    workers = settings.get("workers", 16)
    if workers > pool:
        report.fail("ConfigMap/edc-ingest-settings", f"workers ({workers}) exceed postgres.pool_size ({pool})")
    _, dep = one(by_kind, "Deployment", "edc-ingest")
    surge = 1
    if dep is not None:
        surge = ((dep["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge", 1)
        if not isinstance(surge, int):
            surge = 1  # a percentage: of up to a handful of replicas, one pod
    for name, entries in by_kind.get("ScaledObject", {}).items():
        for path, doc in entries:
            where = f"{rel(path)} ScaledObject/{name}"
            spec = doc.get("spec") or {}
            triggers = spec.get("triggers") or []
            queues = {t["metadata"].get("queueName") for t in triggers if t.get("type") == "rabbitmq"}
            if queues != {queue, urgent}:
                report.fail(where, f"scales on queues {sorted(queues)}; the settings name {queue} and {urgent}")
            else:
                report.ok(f"{where}: scales on {queue} and {urgent}, the queues of the settings")
            formula = ((spec.get("advanced") or {}).get("scalingModifiers") or {}).get("formula")
            if formula:
                names = {t.get("name") for t in triggers}
                stripped = re.sub(r'"[^"]*"|\'[^\']*\'', "", formula)
                unknown = sorted(set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", stripped)) - names - FORMULA_WORDS)
                if unknown:
                    report.fail(where, f"formula names {unknown}, which are no trigger's name")
            most = spec.get("maxReplicaCount", 100)
            least = spec.get("minReplicaCount", 0)
            if least > most:
                report.fail(where, f"minReplicaCount {least} > maxReplicaCount {most}")
            need = (most + surge) * (pool + 1) + 1
            budget = max_connections - reserved
            line = (f"(maxReplicaCount {most} + maxSurge {surge}) x (pool_size {pool} + 1 relay) + 1 migration"
                    f" = {need} connections, PostgreSQL allows {budget} (max_connections {max_connections}"
                    f" - {reserved} reserved)")
            if need > budget:
                report.fail(where, f"connection budget exceeded: {line}")
            else:
                report.ok(f"{where}: {line}")


# ------------------------------------------------------------------------------------------------
# 3. Grafana


def metric_names(expr):
    names = set()
    for m in re.findall(r"\bedc_[a-z0-9_]+", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if m.endswith(suffix) and m[: -len(suffix)] in HISTOGRAMS:
                m = m[: -len(suffix)]
        names.add(m)
    return names


def check_grafana(report):
    files = sorted(GRAFANA_DIR.glob("*.json"))
    if not files:
        report.fail(rel(GRAFANA_DIR), "no dashboard found")
    for path in files:
        where = rel(path)
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
                for m in sorted(metric_names(expr) - METRICS):
                    report.fail(where, f"panel {title}: {m} is not a metric the daemon serves")
                used |= metric_names(expr)
        for v in variables.values():
            if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") not in uids:
                report.fail(where, f"variable {v.get('name')}: datasource is not the datasource variable")
            definition = v.get("definition") or ""
            for m in sorted(metric_names(definition) - METRICS):
                report.fail(where, f"variable {v.get('name')}: {m} is not a metric the daemon serves")
        if len(report.errors) == before:
            unused = sorted(METRICS - used)
            report.ok(f"{where}: valid JSON, {len(panels)} panels on the datasource variable, "
                      f"{len(used)} of the daemon's {len(METRICS)} metrics"
                      + (f" (not shown: {', '.join(unused)})" if unused else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kubernetes-version", action="append", dest="versions",
                        help="Kubernetes version to validate against (repeatable)")
    parser.add_argument("--max-connections", type=int,
                        default=int(os.environ.get("EDC_PG_MAX_CONNECTIONS", "100")),
                        help="PostgreSQL max_connections the KEDA cap must fit (default 100)")
    parser.add_argument("--reserved-connections", type=int, default=3,
                        help="superuser_reserved_connections + reserved_connections (default 3)")
    args = parser.parse_args()
    # The oldest Kubernetes these manifests claim (PodDisruptionBudget's unhealthyPodEvictionPolicy
    # is GA from 1.31) and the newest the installed schemas know.
    versions = args.versions or ["1.31", kubernetes_validate.utils.major_minor(
        kubernetes_validate.utils.latest_version())]
    report = Report()

    print(f"==> Kubernetes manifests against the schemas (kubernetes-validate "
          f"{kubernetes_validate.version.__version__}; KEDA: deploy/check/schemas/)")
    files, docs = load_manifests(report)
    check_schemas(docs, versions, report)

    print("==> Kubernetes manifests against each other, the settings and the daemon's rules")
    by_kind = index(docs)
    settings = check_settings(by_kind, report)
    check_env_keys(by_kind, report)
    check_studies(by_kind, report)
    check_references(by_kind, report)
    check_daemon(by_kind, settings, report)
    check_security(by_kind, report)
    check_keda(by_kind, settings, report, args.max_connections, args.reserved_connections)
    policy.check_images(by_kind, report)
    policy.check_network_policy(by_kind, http_port(by_kind), report)

    print("==> Grafana dashboards")
    check_grafana(report)

    print(f"    {len(files)} manifest files, {len(docs)} documents; "
          f"{len(report.errors)} problem(s), {len(report.notes)} note(s)")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
