"""The Kubernetes side of the deployment check: renders every overlay of deploy/kubernetes with
Kustomize (`kubectl kustomize`, the Kustomize built into kubectl, so that what is checked is what
`kubectl apply -k` would send), plus one render that adds every component an overlay leaves out,
and validates each render:

- every document against the Kubernetes JSON schemas of kubernetes-validate, strict (an unknown
  field is an error), and the custom resources (KEDA, Prometheus Operator) against the strict
  schemas of deploy/check/schemas/;
- what no schema sees (settings.py, policy.py, monitoring.py): names that must agree, the
  settings against config/default.yaml, the daemon's rules, the security contexts, KEDA, images
  pinned by digest, the NetworkPolicy, the scrape and the alerts.

Also: no YAML file under deploy/kubernetes that no kustomization uses (it would be neither applied
nor checked), and the protocols of base/studies/ identical to config/studies/.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

import monitoring
import policy
import settings as daemon

NAMESPACE = "edc-ingest"

# Kinds no bundled Kubernetes schema knows, and the schema written for each.
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}

# Components in the order they may be listed (keda-gated patches what keda adds). One not named
# here goes last.
COMPONENT_ORDER = ["prometheus-operator", "keda", "keda-gated", "otel"]

# Folders whose files are examples, documented and checked but applied by hand, never by Kustomize.
EXAMPLES = ("secrets", "ca")


class Doc:
    """One document of a render or an example file, and where it comes from."""

    def __init__(self, origin, doc):
        self.origin = origin
        self.doc = doc

    @property
    def kind(self):
        return self.doc.get("kind") if isinstance(self.doc, dict) else None

    @property
    def name(self):
        return ((self.doc.get("metadata") or {}).get("name")) if isinstance(self.doc, dict) else None

    def where(self):
        return f"{self.origin} {self.kind or '?'}/{self.name or '?'}"


class Render:
    """The documents of one rendered overlay, with the example Secrets and ConfigMaps beside them,
    indexed by kind and name."""

    def __init__(self, name, docs, examples):
        self.name = name
        self.docs = docs
        self.all = docs + examples
        self.by_kind = {}
        for d in self.all:
            if d.kind and d.name:
                self.by_kind.setdefault(d.kind, {}).setdefault(d.name, []).append(d)

    def one(self, kind, name):
        found = self.by_kind.get(kind, {}).get(name)
        return found[0] if found else None

    def of_kind(self, kind):
        return [d for entries in self.by_kind.get(kind, {}).values() for d in entries]

    def pod_specs(self):
        """(Doc, pod template labels, pod spec) of every Deployment and Job."""
        out = []
        for kind in ("Deployment", "Job"):
            for d in self.of_kind(kind):
                template = (d.doc.get("spec") or {}).get("template") or {}
                labels = (template.get("metadata") or {}).get("labels") or {}
                out.append((d, labels, template.get("spec") or {}))
        return out

    def daemon(self):
        """(Deployment Doc, its pod spec, its container edc-ingest), or Nones."""
        d = self.one("Deployment", "edc-ingest")
        if d is None:
            return None, None, None
        spec = ((d.doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        main = next((c for c in spec.get("containers") or [] if c.get("name") == "edc-ingest"), None)
        return d, spec, main


def containers_of(spec):
    return [("initContainer", c) for c in spec.get("initContainers") or []] + \
           [("container", c) for c in spec.get("containers") or []]


# ------------------------------------------------------------------------------------------------
# rendering


def overlays(repo):
    root = repo.k8s / "overlays"
    return sorted(p for p in root.iterdir() if (p / "kustomization.yaml").is_file()) if root.is_dir() else []


def kustomize(kubectl, directory):
    """(YAML text, None) or (None, error) of `kubectl kustomize DIRECTORY`."""
    try:
        done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                              timeout=120, check=False)
    except OSError as e:
        return None, f"cannot run {kubectl}: {e}"
    if done.returncode != 0:
        return None, (done.stderr or done.stdout).strip()
    return done.stdout, None


def listed_components(kustomization):
    with open(kustomization, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return [Path(c).name for c in data.get("components") or []]


def with_every_component(repo, overlay):
    """A temporary kustomization that renders `overlay` plus every component it does not list, so
    that the components an overlay leaves commented out are validated too. Returns its folder."""
    have = set(listed_components(overlay / "kustomization.yaml"))
    present = sorted(p.name for p in (repo.k8s / "components").iterdir() if p.is_dir())
    order = [c for c in COMPONENT_ORDER if c in present] + [c for c in present if c not in COMPONENT_ORDER]
    missing = [c for c in order if c not in have]
    folder = Path(tempfile.mkdtemp(prefix="edc-check-all-"))
    text = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay, folder)],
        "components": [os.path.relpath(repo.k8s / "components" / c, folder) for c in missing],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(text), encoding="utf-8")
    return folder, missing


def parse(origin, text, report):
    docs = []
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        report.fail(origin, f"not valid YAML: {e}")
        return docs
    for doc in loaded:
        if doc is not None:
            docs.append(Doc(origin, doc))
    if not docs:
        report.fail(origin, "no Kubernetes document")
    return docs


def examples(repo, report):
    """The documents of secrets/ and ca/: examples applied by hand, needed to resolve references."""
    docs = []
    for folder in EXAMPLES:
        for path in sorted((repo.k8s / folder).glob("*.y*ml")):
            docs.extend(parse(repo.rel(path), path.read_text(encoding="utf-8"), report))
    return docs


def check_orphans(repo, report):
    """Every YAML file under deploy/kubernetes is a kustomization, used by one, or an example."""
    used = set()
    kustomizations = sorted(repo.k8s.rglob("kustomization.yaml"))
    for k in kustomizations:
        data = yaml.safe_load(k.read_text(encoding="utf-8")) or {}
        for entry in (data.get("resources") or []) + (data.get("components") or []):
            used.add((k.parent / entry).resolve())
        for patch in data.get("patches") or []:
            if patch.get("path"):
                used.add((k.parent / patch["path"]).resolve())
        for gen in (data.get("configMapGenerator") or []) + (data.get("secretGenerator") or []):
            for entry in (gen.get("files") or []) + (gen.get("envs") or []):
                used.add((k.parent / entry.split("=", 1)[-1]).resolve())
    orphans = []
    for path in sorted(repo.k8s.rglob("*.y*ml")):
        parts = path.relative_to(repo.k8s).parts
        if path.name == "kustomization.yaml" or parts[0] in EXAMPLES:
            continue
        if path.resolve() not in used:
            orphans.append(repo.rel(path))
    for o in orphans:
        report.fail(o, "no kustomization.yaml lists it: it is neither applied nor checked (add it to "
                       "one, or move it under secrets/ or ca/ if it is an example)")
    if not orphans:
        report.ok(f"{len(kustomizations)} kustomizations; every other YAML file under deploy/kubernetes "
                  "is used by one or is an example (secrets/, ca/)")


def check_studies(repo, report):
    """base/studies/ holds copies of config/studies/, byte for byte."""
    folder = repo.k8s / "base" / "studies"
    files = sorted(folder.glob("*")) if folder.is_dir() else []
    if not files:
        report.fail(repo.rel(folder), "no study protocol")
    for path in files:
        if path.suffix not in (".yaml", ".yml"):
            report.fail(repo.rel(path), "the daemon reads only *.yaml and *.yml files")
            continue
        source = repo.studies / path.name
        if not source.exists():
            report.note(repo.rel(path), "has no counterpart in config/studies/")
        elif source.read_bytes() != path.read_bytes():
            report.fail(repo.rel(path), f"differs from config/studies/{path.name}: copy it again")
        else:
            report.ok(f"{repo.rel(path)} is identical to config/studies/{path.name}")


# ------------------------------------------------------------------------------------------------
# schemas


def validators(repo):
    out = {}
    for key, filename in CUSTOM_SCHEMAS.items():
        with open(repo.schemas / filename, encoding="utf-8") as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        out[key] = (filename, jsonschema.Draft202012Validator(schema))
    return out


def check_schemas(docs, versions, custom, report):
    passed_docs = 0
    for d in docs:
        where = d.where()
        doc = d.doc
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            report.fail(where, "a document without apiVersion and kind")
            continue
        if not d.name:
            report.fail(where, "metadata.name is missing")
            continue
        if d.kind != "Namespace" and (doc.get("metadata") or {}).get("namespace") != NAMESPACE:
            report.fail(where, f"metadata.namespace must be {NAMESPACE}")
        key = (doc["apiVersion"], d.kind)
        if key in custom:
            filename, validator = custom[key]
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            for e in errors:
                loc = ".".join(str(p) for p in e.path) or "(document)"
                report.fail(where, f"{loc}: {e.message} (schema deploy/check/schemas/{filename})")
            passed_docs += not errors
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
        passed_docs += passed
    return passed_docs


# ------------------------------------------------------------------------------------------------
# one render


def check_render(repo, render, ctx, report):
    """Everything that holds for one rendered overlay."""
    passed = check_schemas(render.docs, ctx["versions"], ctx["custom"], report)
    if passed == len(render.docs):
        report.ok(f"{render.name}: {len(render.docs)} documents valid against the schemas "
                  f"(Kubernetes {', '.join(ctx['versions'])}, strict; custom resources: "
                  "deploy/check/schemas/)")
    effective = daemon.check_settings(repo, render, ctx, report)
    daemon.check_references(render, report)
    daemon.check_daemon(render, effective, report)
    daemon.check_security(render, report)
    daemon.check_keda(render, effective, ctx, report)
    policy.check_images(render, report)
    policy.check_network_policy(render, effective, report)
    monitoring.check_scrape(render, ctx, report)


def check(repo, ctx, report, kubectl):
    report.section("Kubernetes: every overlay rendered with Kustomize "
                   f"(kubectl kustomize; kubernetes-validate {kubernetes_validate.version.__version__})")
    check_orphans(repo, report)
    check_studies(repo, report)
    ctx["custom"] = validators(repo)
    example_docs = examples(repo, report)
    if check_schemas(example_docs, ctx["versions"], ctx["custom"], report) == len(example_docs):
        report.ok(f"{len(example_docs)} example documents of secrets/ and ca/ valid against the schemas")
    found = overlays(repo)
    if not found:
        report.fail(repo.rel(repo.k8s / "overlays"), "no overlay (overlays/<name>/kustomization.yaml)")
        return
    targets = [(repo.rel(o), o) for o in found]
    first = next((o for o in found if o.name == "production"), found[0])
    everything, added = with_every_component(repo, first)
    if added:
        targets.append((f"{repo.rel(first)} + components {', '.join(added)}", everything))
    try:
        for name, folder in targets:
            text, error = kustomize(kubectl, folder)
            if error:
                report.fail(name, f"kustomize cannot render it: {error}")
                continue
            render = Render(name, parse(name, text, report), example_docs)
            check_render(repo, render, ctx, report)
    finally:
        shutil.rmtree(everything, ignore_errors=True)
