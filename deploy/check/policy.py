"""Checks of deploy/kubernetes that no schema sees, for what a pod may run and reach (imported by
check_deploy.py, which passes in its index of the documents and its report):

- every container image is pinned by digest (a tag can be moved to another build under running
  pods), and the edc-ingest image is the same in the migration Job and the Deployment;
- the NetworkPolicy selects the daemons' and the migration Job's pods, lets in only the HTTP port
  and only from selected pods or namespaces, and lets out DNS and the ports of the URLs in
  secrets/secrets.example.yaml, with every egress rule limited to ports.
"""

import re
from pathlib import Path
from urllib.parse import urlsplit

DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "postgres": 5432, "postgresql": 5432}


def _rel(path):
    parts = Path(path).parts
    return str(Path(*parts[parts.index("deploy"):])) if "deploy" in parts else str(path)


def _pod_templates(by_kind):
    """(where, labels, pod spec) of every Deployment and Job."""
    out = []
    for kind in ("Deployment", "Job"):
        for name, entries in by_kind.get(kind, {}).items():
            for path, doc in entries:
                template = (doc.get("spec") or {}).get("template") or {}
                labels = (template.get("metadata") or {}).get("labels") or {}
                out.append((f"{_rel(path)} {kind}/{name}", labels, template.get("spec") or {}))
    return out


def _containers(spec):
    return [("initContainer", c) for c in spec.get("initContainers") or []] + \
           [("container", c) for c in spec.get("containers") or []]


def check_images(by_kind, report):
    before = len(report.errors)
    ours = {}
    count = 0
    for where, _, spec in _pod_templates(by_kind):
        for what, c in _containers(spec):
            image = c.get("image") or ""
            count += 1
            if not DIGEST.match(image):
                report.fail(f"{where} {what} {c.get('name')}",
                            f"image {image!r} is not pinned by digest (name@sha256:<64 hex>): set it "
                            "with deploy/kubernetes/set-image.sh")
            repository = image.split("@")[0].rsplit(":", 1)[0] if "/" in image else image
            if repository.rsplit("/", 1)[-1] == "edc-ingest":
                ours.setdefault(image, []).append(f"{where} {what} {c.get('name')}")
    if len(ours) > 1:
        report.fail("deploy/kubernetes", "the edc-ingest image differs between "
                    + "; ".join(f"{image} ({', '.join(at)})" for image, at in ours.items())
                    + ": set all at once with deploy/kubernetes/set-image.sh")
    if count and len(report.errors) == before:
        image = next(iter(ours), "none")
        report.ok(f"{count} container images pinned by digest; edc-ingest's is one image in every "
                  f"place ({image.split('@')[0]}@sha256:...)")


def _url_ports(by_kind, report):
    """{port: what} of the URLs in the example Secrets: every node of amqp-url, postgres-url and
    the migration's url."""
    ports = {}
    for secret, key in (("edc-ingest-runtime", "amqp-url"), ("edc-ingest-runtime", "postgres-url"),
                        ("edc-ingest-migrate", "url")):
        for _, doc in by_kind.get("Secret", {}).get(secret, []):
            value = (doc.get("stringData") or {}).get(key)
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


def _port_of(entry, named):
    port = entry.get("port")
    return named.get(port, port) if isinstance(port, str) else port


def check_network_policy(by_kind, http_port, report):
    policies = [(name, path, doc) for name, entries in by_kind.get("NetworkPolicy", {}).items()
                for path, doc in entries]
    if not policies:
        report.fail("deploy/kubernetes", "no NetworkPolicy: any pod could reach the daemons, and "
                                         "they could reach anything")
        return
    before = len(report.errors)
    templates = _pod_templates(by_kind)
    named = {}
    for _, _, spec in templates:
        for _, c in _containers(spec):
            for p in c.get("ports") or []:
                if p.get("name"):
                    named[p["name"]] = p.get("containerPort")
    wanted = _url_ports(by_kind, report)
    for name, path, doc in policies:
        where = f"{_rel(path)} NetworkPolicy/{name}"
        spec = doc.get("spec") or {}
        selector = (spec.get("podSelector") or {}).get("matchLabels") or {}
        if (spec.get("podSelector") or {}).get("matchExpressions"):
            report.fail(where, "podSelector: use matchLabels only (checked against the pods here)")
        for pod, labels, _ in templates:
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                report.fail(where, f"podSelector {selector} does not select {pod} (labels {labels})")
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
            report.note(where, f"egress lets out ports {extra}, which no URL in secrets.example.yaml uses")
        if len(report.errors) == before:
            report.ok(f"{where}: selects every edc-ingest pod; in: port {http_port} only, from selected "
                      f"pods only; out: DNS and the URLs' ports {sorted(wanted)}, each rule to named "
                      "destinations and ports")
