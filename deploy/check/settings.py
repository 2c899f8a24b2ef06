"""What no schema sees in a rendered overlay, about the daemon itself: its settings file against
config/default.yaml (keys known, the sizing defaults not contradicted), the names that must agree
between documents (ConfigMaps, Secrets and their keys, volumes, KEDA references), the Deployment
against the daemon's rules (grace period, migrations, probes, the pseudonym key), the hardened
security contexts, and KEDA (queues, formula, TLS, the connection budget of its cap).
"""

import re
from urllib.parse import urlsplit

import yaml

from common import check_tuning, chosen_keys, env_settings, flatten, lookup, merged, seconds

IMAGE_UID = 10001

# Names a KEDA scalingModifiers formula may use besides its triggers' names (expr-lang).
FORMULA_WORDS = {
    "max", "min", "abs", "ceil", "floor", "round", "float", "int", "len", "count", "sum", "mean",
    "median", "all", "any", "none", "one", "filter", "map", "nil", "true", "false", "let", "in",
    "not", "and", "or",
}


def literal_env(container):
    """{name: value} of a container's environment; None for a value taken from a Secret or a
    ConfigMap."""
    return {e["name"]: e.get("value") for e in container.get("env") or [] if "name" in e}


def settings_configmap(render, spec):
    """The ConfigMap mounted by a pod spec's volume `settings`, or None."""
    vol = next((v for v in spec.get("volumes") or [] if v.get("name") == "settings"), None)
    name = ((vol or {}).get("configMap") or {}).get("name")
    return (name, render.one("ConfigMap", name)) if name else (None, None)


def check_settings(repo, render, ctx, report):
    """The settings file (keys known to config/default.yaml, sizing defaults agreed) and the
    EDC__ variables of every container. Returns the daemon's effective settings: the defaults,
    the file, then its container's EDC__ variables."""
    defaults = ctx["defaults"]
    known = flatten(defaults)
    dep, spec, main = render.daemon()
    if dep is None or main is None:
        report.fail(render.name, "no Deployment edc-ingest with a container edc-ingest")
        return defaults
    name, cm = settings_configmap(render, spec)
    where = f"{render.name} ConfigMap/{name}"
    file_settings = {}
    text = None
    if cm is None:
        report.fail(dep.where(), f"the volume `settings` names ConfigMap {name}, which the overlay does "
                                 "not make (configMapGenerator edc-ingest-settings from config.yaml)")
    else:
        text = (cm.doc.get("data") or {}).get("config.yaml")
        if text is None:
            report.fail(where, "no config.yaml key")
        else:
            try:
                file_settings = yaml.safe_load(text) or {}
            except yaml.YAMLError as e:
                report.fail(where, f"config.yaml is not valid YAML: {e}")
    unknown = sorted(flatten(file_settings) - known)
    for key in unknown:
        report.fail(where, f"config.yaml: `{key}` is not a key of config/default.yaml (the daemon "
                           "refuses unknown keys)")
    set_here = check_tuning(file_settings, defaults, f"{where} config.yaml", report, chosen_keys(text))
    for d, _, pod in render.pod_specs():
        other, _ = settings_configmap(render, pod)
        if other != name:
            report.fail(d.where(), f"mounts settings ConfigMap {other}, the Deployment {name}")
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            set_here += check_tuning(env_settings(literal_env(c)), defaults,
                                     f"{d.where()} container {c.get('name')}", report)
            for var in sorted(n for n in literal_env(c) if n.startswith("EDC__")):
                key = ".".join(part.lower() for part in var[5:].split("__"))
                if key not in known or isinstance(lookup(defaults, key), dict):
                    # The daemon refuses an unknown EDC__ variable at start.
                    report.fail(d.where(), f"container {c.get('name')}: {var} ({key}) is not a "
                                           "setting of config/default.yaml")
    if not unknown:
        report.ok(f"{where}: every key of config.yaml is in config/default.yaml; "
                  + (f"{set_here} sizing setting(s) repeated, each equal to config/default.yaml's"
                     if set_here else "workers, pool_size, worker_connections, batch_size and committers left to "
                     "config/default.yaml"))
    return merged(merged(defaults, file_settings), env_settings(literal_env(main)))


def check_references(render, report):
    """ConfigMaps, Secrets and their keys, volumes, accounts and KEDA objects: every name used is
    defined (the Secrets and the CA by the examples in secrets/ and ca/)."""
    secrets = {}
    for d in render.of_kind("Secret"):
        secrets.setdefault(d.name, set()).update((d.doc.get("stringData") or {}).keys(),
                                                 (d.doc.get("data") or {}).keys())
    configmaps = {}
    for d in render.of_kind("ConfigMap"):
        configmaps.setdefault(d.name, set()).update((d.doc.get("data") or {}).keys())
    accounts = set(render.by_kind.get("ServiceAccount", {}))
    count = 0
    before = len(report.errors)

    def resolve(where, store, what, name, key):
        nonlocal count
        count += 1
        if name not in store:
            report.fail(where, f"{what} {name} is not defined (for a Secret or the CA: described in "
                               "secrets/ or ca/)")
        elif key is not None and key not in store[name]:
            report.fail(where, f"{what} {name} has no key {key}")

    for d, _, spec in render.pod_specs():
        where = d.where()
        sa = spec.get("serviceAccountName")
        if sa and sa not in accounts:
            report.fail(where, f"ServiceAccount {sa} is not defined")
        for vol in spec.get("volumes") or []:
            if "configMap" in vol:
                for item in vol["configMap"].get("items") or [{"key": None}]:
                    resolve(where, configmaps, "ConfigMap", vol["configMap"].get("name"), item.get("key"))
            if "secret" in vol:
                for item in vol["secret"].get("items") or [{"key": None}]:
                    resolve(where, secrets, "Secret", vol["secret"].get("secretName"), item.get("key"))
        names = {v.get("name") for v in spec.get("volumes") or []}
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            for m in c.get("volumeMounts") or []:
                count += 1
                if m.get("name") not in names:
                    report.fail(where, f"{c.get('name')}: mounts volume {m.get('name')}, which is not defined")
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    resolve(where, secrets, "Secret", ref.get("name"), ref.get("key"))
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    resolve(where, configmaps, "ConfigMap", ref.get("name"), ref.get("key"))

    for d in render.of_kind("TriggerAuthentication"):
        spec = d.doc.get("spec") or {}
        for ref in spec.get("secretTargetRef") or []:
            resolve(d.where(), secrets, "Secret", ref.get("name"), ref.get("key"))
        for ref in spec.get("configMapTargetRef") or []:
            resolve(d.where(), configmaps, "ConfigMap", ref.get("name"), ref.get("key"))

    for d in render.of_kind("ScaledObject"):
        spec = d.doc.get("spec") or {}
        target = (spec.get("scaleTargetRef") or {}).get("name")
        count += 1
        if target not in render.by_kind.get("Deployment", {}):
            report.fail(d.where(), f"scaleTargetRef: Deployment {target} is not defined")
        for trig in spec.get("triggers") or []:
            auth = (trig.get("authenticationRef") or {}).get("name")
            if auth:
                count += 1
                if auth not in render.by_kind.get("TriggerAuthentication", {}):
                    report.fail(d.where(), f"trigger {trig.get('name')}: TriggerAuthentication {auth} is not defined")
    if len(report.errors) == before:
        report.ok(f"{render.name}: {count} references to ConfigMaps, Secrets (and their keys), "
                  "volumes and KEDA objects resolve")


def check_daemon(render, settings, report):
    """The Deployment against the settings and the daemon's rules."""
    dep, spec, main = render.daemon()
    if main is None:
        return
    where = dep.where()
    env = literal_env(main)
    before = len(report.errors)

    grace = spec.get("terminationGracePeriodSeconds", 30)
    shutdown = seconds(settings.get("shutdown_grace"))
    if grace <= shutdown:
        report.fail(where, f"terminationGracePeriodSeconds ({grace}) must exceed shutdown_grace ({shutdown:g}s)")

    if env.get("EDC__POSTGRES__MIGRATE_ON_START") != "false":
        report.fail(where, "EDC__POSTGRES__MIGRATE_ON_START must be \"false\": the migration Job applies them")

    listen = str(lookup(settings, "http.listen") or "")
    if env.get("EDC__HTTP__LISTEN") is None:
        listen = "0.0.0.0:9090"  # the image's
    port = int(listen.rsplit(":", 1)[1]) if ":" in listen else None
    ports = {p.get("name"): p.get("containerPort") for p in main.get("ports") or []}
    for probe, want in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", None)):
        get = (main.get(probe) or {}).get("httpGet")
        if get is None:
            if want:
                report.fail(where, f"{probe} must be an httpGet on {want}")
            continue
        if want and get.get("path") != want:
            report.fail(where, f"{probe} must ask {want}, not {get.get('path')}")
        if ports.get(get.get("port"), get.get("port")) != port:
            report.fail(where, f"{probe} asks port {get.get('port')}, the daemon listens on {port}")

    # The pseudonym key: a file the daemon accepts only with mode 0400 and its own uid, which a
    # Secret volume never gives (fsGroup makes it 0440; without fsGroup it is root's).
    key_file = settings.get("pseudonym_key_file")
    if not key_file:
        report.fail(where, "no pseudonym_key_file in the settings")
    else:
        mounts = sorted(main.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"]))
        mount = next((m for m in mounts if key_file.startswith(m["mountPath"].rstrip("/") + "/")), None)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        vol = volumes.get(mount["name"]) if mount else None
        if vol is None:
            report.fail(where, f"pseudonym_key_file {key_file} is on no volume of the container")
        elif "emptyDir" not in vol or vol["emptyDir"].get("medium") != "Memory":
            report.fail(where, f"pseudonym_key_file {key_file} must be on a memory-backed emptyDir filled "
                               "by the init container: the daemon refuses a Secret volume's 0440 file")
        elif not [c for c in spec.get("initContainers") or []
                  if any(m["name"] == mount["name"] and not m.get("readOnly") for m in c.get("volumeMounts") or [])]:
            report.fail(where, f"no init container writes the pseudonym key into volume {mount['name']}")
    if len(report.errors) == before:
        report.ok(f"{where}: terminationGracePeriodSeconds {grace} > shutdown_grace {shutdown:g}s; "
                  f"migrations left to the Job; probes on port {port}; pseudonym key copied by an init "
                  f"container into a memory-backed volume (mode 0400, uid {IMAGE_UID})")


def check_security(render, report):
    checked = 0
    before = len(report.errors)
    for d, _, spec in render.pod_specs():
        pod = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            report.fail(d.where(), "automountServiceAccountToken must be false (the daemon never calls the API)")
        for what, c in [("initContainer", c) for c in spec.get("initContainers") or []] + \
                       [("container", c) for c in spec.get("containers") or []]:
            sc = c.get("securityContext") or {}
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
                report.fail(f"{d.where()} {what} {c.get('name')}", f"needs {p}")
    if checked and len(report.errors) == before:
        report.ok(f"{render.name}: {checked} containers: non-root uid {IMAGE_UID}, read-only root, no "
                  "privilege escalation, no capabilities, RuntimeDefault seccomp, memory limit")


def _auth_value(render, auth_doc, parameter):
    """(found, value) of a TriggerAuthentication parameter, from the ConfigMaps of the render or the
    example Secrets (value None when it cannot be read)."""
    spec = auth_doc.get("spec") or {}
    for source, kind in (("secretTargetRef", "Secret"), ("configMapTargetRef", "ConfigMap")):
        for ref in spec.get(source) or []:
            if ref.get("parameter") == parameter:
                d = render.one(kind, ref.get("name"))
                data = {}
                if d is not None:
                    data = dict(d.doc.get("data") or {}, **(d.doc.get("stringData") or {}))
                return True, data.get(ref.get("key"))
    for ref in spec.get("env") or []:
        if ref.get("parameter") == parameter:
            return True, None
    return False, None


def check_keda(render, settings, ctx, report):
    amqp = settings.get("amqp") or {}
    queue = amqp.get("queue")
    urgent = amqp.get("urgent_queue") or f"{queue}.urgent"
    pool = lookup(settings, "postgres.pool_size")
    share = lookup(settings, "postgres.worker_connections")
    committers = settings.get("committers")
    workers = settings.get("workers")
    # What a replica opens (Settings::pool_connections in src/config/mod.rs): one connection per
    # committer, the workers' share, the gate's probe and the backlog gauge, at most pool_size; and
    # the outbox relay's, outside the pool.
    opens = min(pool, committers + share + 2) + 1
    if workers > pool:
        report.fail(f"{render.name} settings", f"workers ({workers}) exceed postgres.pool_size ({pool})")
    dep, _, _ = render.daemon()
    surge = 1
    if dep is not None:
        surge = ((dep.doc["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge", 1)
        if not isinstance(surge, int):
            surge = 1  # a percentage: of up to a handful of replicas, one pod
        if render.of_kind("ScaledObject") and "replicas" in dep.doc["spec"]:
            report.fail(dep.where(), "KEDA manages the replica count, but the Deployment sets replicas: "
                                     "every apply would reset it (the keda component removes it)")
    for d in render.of_kind("ScaledObject"):
        where = d.where()
        spec = d.doc.get("spec") or {}
        triggers = spec.get("triggers") or []
        rabbit = [t for t in triggers if t.get("type") == "rabbitmq"]
        queues = {t["metadata"].get("queueName") for t in rabbit}
        if queues != {queue, urgent}:
            report.fail(where, f"scales on queues {sorted(queues)}; the settings name {queue} and {urgent}")
        else:
            report.ok(f"{where}: scales on {queue} and {urgent}, the queues of the settings")
        auths = {(t.get("authenticationRef") or {}).get("name") for t in rabbit}
        for name in sorted(a for a in auths if a):
            auth = render.one("TriggerAuthentication", name)
            if auth is None:
                continue
            _, host = _auth_value(render, auth.doc, "host")
            scheme = urlsplit(host).scheme if host else None
            has_tls, tls = _auth_value(render, auth.doc, "tls")
            has_ca, _ = _auth_value(render, auth.doc, "ca")
            if scheme == "amqps" and (tls != "enable" or not has_ca):
                report.fail(auth.where(), "the scaler's host URL is amqps:// (secrets.example.yaml) but the "
                                          "TriggerAuthentication lacks `tls: enable` and a `ca`: KEDA would "
                                          "not speak TLS, or not trust the broker's certificate")
            elif scheme == "amqp":
                report.note(auth.where(), "the scaler reads the queues over plain amqp:// (secrets.example.yaml)")
            elif has_tls and scheme == "amqps":
                report.ok(f"{auth.where()}: amqps:// with tls enabled and the CA of edc-ingest-ca")
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
        need = (most + surge) * opens + 1
        budget = ctx["max_connections"] - ctx["reserved_connections"]
        line = (f"(maxReplicaCount {most} + maxSurge {surge}) x {opens} a replica (min(pool_size {pool}, "
                f"committers {committers} + worker_connections {share} + 2) + 1 relay) + 1 migration"
                f" = {need} connections, PostgreSQL allows {budget} (max_connections {ctx['max_connections']}"
                f" - {ctx['reserved_connections']} reserved)")
        if need > budget:
            report.fail(where, f"connection budget exceeded: {line}")
        else:
            report.ok(f"{where}: {line}")
