"""Checks of a rendered overlay that no schema sees, for what a pod may run and reach (called by
kube.py with the render and the daemon's effective settings):

- every container image is pinned by digest (a tag can be moved to another build under running
  pods), and the edc-ingest image is the same in the migration Job and the Deployment;
- the NetworkPolicy selects the daemons' and the migration Job's pods, lets in only the HTTP port
  and only from selected pods or namespaces, and lets out DNS, the ports of the URLs in
  secrets/secrets.example.yaml and, with traces on, the collector's port, with every egress rule
  limited to named destinations and ports;
- the trace endpoint is OTLP over HTTP (the exporter's protocol): port 4318 rather than gRPC's
  4317, no path (the daemon adds /v1/traces).
"""

import re
from urllib.parse import urlsplit

DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "postgres": 5432, "postgresql": 5432, "http": 80, "https": 443}
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318


def _containers(spec):
    return [("initContainer", c) for c in spec.get("initContainers") or []] + \
           [("container", c) for c in spec.get("containers") or []]


def check_images(render, report):
    before = len(report.errors)
    ours = {}
    count = 0
    for d, _, spec in render.pod_specs():
        for what, c in _containers(spec):
            image = c.get("image") or ""
            count += 1
            where = f"{d.where()} {what} {c.get('name')}"
            if not DIGEST.match(image):
                report.fail(where, f"image {image!r} is not pinned by digest (name@sha256:<64 hex>): set "
                                   "it in the overlay's `images:` (deploy/kubernetes/set-image.sh)")
            repository = image.split("@")[0]
            if ":" in repository.rsplit("/", 1)[-1]:
                repository = repository.rsplit(":", 1)[0]
            if repository.rsplit("/", 1)[-1] == "edc-ingest":
                ours.setdefault(image, []).append(where)
    if len(ours) > 1:
        report.fail(render.name, "the edc-ingest image differs between "
                    + "; ".join(f"{image} ({', '.join(at)})" for image, at in ours.items())
                    + ": set it once, in the overlay's `images:`")
    if count and len(report.errors) == before:
        image = next(iter(ours), "none")
        report.ok(f"{render.name}: {count} container images pinned by digest; edc-ingest's is one "
                  f"image in every place ({image.split('@')[0]}@sha256:...)")


def _url_ports(render, report):
    """{port: what} of the URLs in the example Secrets: every node of amqp-url, postgres-url and the
    migration's url."""
    ports = {}
    for secret, key in (("edc-ingest-runtime", "amqp-url"), ("edc-ingest-runtime", "postgres-url"),
                        ("edc-ingest-migrate", "url")):
        for d in render.by_kind.get("Secret", {}).get(secret, []):
            value = (d.doc.get("stringData") or {}).get(key)
            if not value:
                continue
            for node in re.split(r",(?=\s*[a-z][a-z0-9+.-]*://)", value):
                parts = urlsplit(node.strip())
                try:
                    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
                except ValueError:
                    port = None
                if port is None:
                    report.fail(f"Secret {secret}", f"{key}: cannot tell the port of a node")
                    continue
                ports[port] = f"{secret} {key}"
    return ports


def check_otel_endpoint(render, settings, report):
    """The trace endpoint of the effective settings: None when traces are off, else its port."""
    endpoint = str(((settings.get("otel") or {}).get("endpoint")) or "").strip()
    if not endpoint:
        return None
    dep, _, _ = render.daemon()
    where = dep.where() if dep else render.name
    parts = urlsplit(endpoint)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    problems = []
    if parts.scheme not in ("http", "https"):
        problems.append(f"otel.endpoint {endpoint!r} must be an http:// URL (OTLP over HTTP)")
    if port == OTLP_GRPC_PORT:
        problems.append(f"otel.endpoint {endpoint!r} names port {OTLP_GRPC_PORT}, OTLP's gRPC port; the "
                        f"daemon exports OTLP over HTTP: port {OTLP_HTTP_PORT}")
    if parts.path not in ("", "/"):
        problems.append(f"otel.endpoint {endpoint!r} has a path: the daemon adds /v1/traces itself")
    for p in problems:
        report.fail(where, p)
    if not problems:
        report.ok(f"{where}: traces to {endpoint} (OTLP over HTTP, spans to /v1/traces)")
    return port


def _port_of(entry, named):
    port = entry.get("port")
    return named.get(port, port) if isinstance(port, str) else port


def check_network_policy(render, settings, report):
    policies = render.of_kind("NetworkPolicy")
    collector = check_otel_endpoint(render, settings, report)
    if not policies:
        report.fail(render.name, "no NetworkPolicy: any pod could reach the daemons, and they could "
                                 "reach anything")
        return
    before = len(report.errors)
    templates = render.pod_specs()
    named = {}
    for _, _, spec in templates:
        for _, c in _containers(spec):
            for p in c.get("ports") or []:
                if p.get("name"):
                    named[p["name"]] = p.get("containerPort")
    listen = str(((settings.get("http") or {}).get("listen")) or "0.0.0.0:9090")
    http_port = int(listen.rsplit(":", 1)[1]) if ":" in listen else None
    wanted = _url_ports(render, report)
    if collector is not None:
        wanted[collector] = "otel.endpoint"
    for d in policies:
        where = d.where()
        spec = d.doc.get("spec") or {}
        selector = (spec.get("podSelector") or {}).get("matchLabels") or {}
        if (spec.get("podSelector") or {}).get("matchExpressions"):
            report.fail(where, "podSelector: use matchLabels only (checked against the pods here)")
        for pod, labels, _ in templates:
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                report.fail(where, f"podSelector {selector} does not select {pod.where()} (labels {labels})")
        types = set(spec.get("policyTypes") or [])
        if types != {"Ingress", "Egress"}:
            report.fail(where, f"policyTypes must be [Ingress, Egress], not {sorted(types)}")
        for i, rule in enumerate(spec.get("ingress") or []):
            peers = rule.get("from") or []
            if not peers:
                report.fail(where, f"ingress[{i}]: no `from`: it would let in every pod and address")
            for peer in peers:
                if "ipBlock" in peer or not (peer.get("namespaceSelector") or peer.get("podSelector")):
                    report.fail(where, f"ingress[{i}]: {peer}: only selected pods or namespaces may come in")
            ports = [_port_of(p, named) for p in rule.get("ports") or []]
            if ports != [http_port]:
                report.fail(where, f"ingress[{i}]: ports {ports}: only the HTTP port {http_port} may be open")
        allowed = {}
        for i, rule in enumerate(spec.get("egress") or []):
            ports = rule.get("ports") or []
            if not ports or not rule.get("to"):
                report.fail(where, f"egress[{i}]: every egress rule names its destinations and ports")
            for p in ports:
                allowed.setdefault(_port_of(p, named), set()).add(p.get("protocol", "TCP"))
        if not {"UDP", "TCP"} <= allowed.get(53, set()):
            report.fail(where, "egress: DNS (port 53, UDP and TCP) is not let out")
        for port, what in sorted(wanted.items()):
            if "TCP" not in allowed.get(port, set()):
                report.fail(where, f"egress: port {port} ({what}) is not let out")
        extra = sorted(set(allowed) - set(wanted) - {53})
        if extra:
            report.note(where, f"egress lets out ports {extra}, which no URL in secrets.example.yaml "
                               "nor otel.endpoint uses")
        if len(report.errors) == before:
            report.ok(f"{where}: selects every edc-ingest pod; in: port {http_port} only, from selected "
                      f"pods only; out: DNS and ports {sorted(wanted)} (the URLs'"
                      + (", the trace collector's" if collector is not None else "")
                      + "), each rule to named destinations and ports")
