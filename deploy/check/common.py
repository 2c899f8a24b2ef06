"""What every part of the deployment check shares: the report that collects problems, the repository
paths (relative to a root, so that the self-test can check a mutated copy), YAML helpers, the
settings layering of the daemon, and the metric names the daemon serves, read from its source.
"""

import re
from pathlib import Path

import yaml

# The settings that size a daemon. A manifest or the compose file that sets one must give it
# config/default.yaml's value, so that a changed default is never shadowed by a stale copy. Another
# value is a choice, said on its line of a settings file: `workers: 32  # not the default: why`.
TUNING = ("workers", "postgres.pool_size", "postgres.worker_connections", "batch_size", "committers")
CHOSEN = "# not the default"


class Report:
    """Collects problems; every one is printed, not just the first."""

    def __init__(self, quiet=False):
        self.errors = []
        self.notes = []
        self.quiet = quiet

    def ok(self, what):
        if not self.quiet:
            print(f"  ok    {what}")

    def fail(self, where, message):
        self.errors.append(f"{where}: {message}")
        if not self.quiet:
            print(f"  FAIL  {where}: {message}")

    def note(self, where, message):
        self.notes.append(f"{where}: {message}")
        if not self.quiet:
            print(f"  note  {where}: {message}")

    def section(self, title):
        if not self.quiet:
            print(f"==> {title}")


class Repo:
    """The paths the checks read, under one root (the repository, or a copy of it)."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        self.k8s = self.root / "deploy" / "kubernetes"
        self.grafana = self.root / "deploy" / "grafana"
        self.prometheus = self.root / "deploy" / "prometheus"
        self.compose_dir = self.root / "deploy" / "compose"
        self.schemas = self.root / "deploy" / "check" / "schemas"
        self.default_yaml = self.root / "config" / "default.yaml"
        self.studies = self.root / "config" / "studies"
        self.compose = self.root / "docker-compose.yml"
        self.dockerfile = self.root / "Dockerfile"
        self.rules = self.prometheus / "edc-ingest.rules.yml"
        self.rules_test = self.prometheus / "edc-ingest.rules.test.yml"
        self.prometheus_config = self.prometheus / "prometheus.yml"
        self.prometheus_rule = self.k8s / "components" / "prometheus-operator" / "prometheusrule.yaml"

    def rel(self, path):
        try:
            return str(Path(path).resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    def defaults(self):
        with open(self.default_yaml, encoding="utf-8") as f:
            return yaml.safe_load(f)


def flatten(mapping, prefix=""):
    """Dotted key paths of a nested mapping, sections included."""
    keys = set()
    for k, v in (mapping or {}).items():
        path = f"{prefix}{k}"
        keys.add(path)
        if isinstance(v, dict):
            keys |= flatten(v, path + ".")
    return keys


def lookup(mapping, dotted, default=None):
    node = mapping
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def merged(base, over):
    """Settings layered as the daemon layers them: `over`'s keys replace `base`'s, section by section."""
    out = dict(base or {})
    for k, v in (over or {}).items():
        out[k] = merged(out.get(k), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def env_settings(env):
    """The settings that EDC__SECTION__KEY variables give (values read as YAML scalars, as the
    daemon reads them), as a nested mapping."""
    out = {}
    for name, value in env.items():
        if not name.startswith("EDC__") or value is None:
            continue
        parts = [p.lower() for p in name[5:].split("__")]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            node[parts[-1]] = value
    return out


def seconds(duration):
    """A humantime duration as the daemon reads it (25s, 500ms, 1m, 1m30s) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration).replace(" ", ""):
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def chosen_keys(text):
    """The TUNING keys whose line in a settings file's text says it is a choice (CHOSEN)."""
    out = set()
    for key in TUNING:
        leaf = key.rsplit(".", 1)[-1]
        if re.search(rf"^\s*{leaf}\s*:[^#\n]*{re.escape(CHOSEN)}", text or "", re.M):
            out.add(key)
    return out


def check_tuning(settings, defaults, where, report, chosen=()):
    """The TUNING keys that `settings` sets agree with config/default.yaml, unless `chosen` names
    them. Returns how many it set."""
    count = 0
    for key in TUNING:
        value = lookup(settings, key)
        if value is None:
            continue
        count += 1
        default = lookup(defaults, key)
        if str(value) == str(default):
            continue
        if key in chosen:
            report.ok(f"{where}: {key} {value}, chosen instead of config/default.yaml's {default}")
        else:
            report.fail(where, f"{key} is {value} here but {default} in config/default.yaml: repeat a "
                               "default only to agree with it (drop the line, or update it), or say "
                               f"that another value is a choice: `{key.rsplit('.', 1)[-1]}: {value}  "
                               f"{CHOSEN}: <why>`")
    return count


# ------------------------------------------------------------------------------------------------
# The metrics the daemon serves


class MetricsSourceError(Exception):
    pass


def served_metrics(repo):
    """(names, histograms): the metric families the daemon serves, as the unit test
    `every_metric_the_dashboard_uses_is_served_and_nothing_else` (src/stats/tests.rs) lists them and
    proves against a scrape, and which of them are histograms (registered with a Histogram in
    src/stats/)."""
    tests = repo.root / "src" / "stats" / "tests.rs"
    try:
        text = tests.read_text(encoding="utf-8")
    except OSError as e:
        raise MetricsSourceError(f"cannot read {repo.rel(tests)}: {e}") from e
    block = re.search(r"fn every_metric_\w*\s*\(\)\s*\{.*?let expected = \[(.*?)\];", text, re.S)
    if not block:
        raise MetricsSourceError(f"{repo.rel(tests)}: no `let expected = [...]` in a test named "
                                 "every_metric_*: where does the list of served metrics live now?")
    names = set(re.findall(r'"(edc_[a-z0-9_]+)"', block.group(1)))
    histograms = set()
    for path in sorted((repo.root / "src" / "stats").glob("*.rs")):
        source = path.read_text(encoding="utf-8")
        variables = set(re.findall(r"let\s+(\w+)\s*=\s*Histogram::new", source))
        for name, value in re.findall(
                r'register\(\s*"(edc_[a-z0-9_]+)",\s*"(?:[^"\\]|\\.)*",\s*(\w+)', source):
            if value in variables:
                histograms.add(name)
    if not names:
        raise MetricsSourceError(f"{repo.rel(tests)}: the list of served metrics is empty")
    if not histograms or not histograms <= names:
        raise MetricsSourceError(f"src/stats/: found histograms {sorted(histograms)}, which the "
                                 "served list does not match: the registration code changed shape")
    return names, histograms


def metric_names(expr, histograms):
    """The daemon's metric families an expression names (edc_*; a histogram's _bucket, _sum and
    _count count as the histogram)."""
    return {family for family, _ in _metrics_in(expr, histograms)}


def unknown_metrics(expr, names, histograms):
    """The edc_* names in an expression that the daemon does not serve, each with why."""
    bad = []
    for family, raw in sorted(_metrics_in(expr, histograms)):
        if family not in names:
            bad.append(f"{raw} is not a metric the daemon serves")
        elif raw == family and family in histograms:
            bad.append(f"{raw} is a histogram: it is served as {raw}_bucket, _sum and _count only")
    return bad


def _metrics_in(expr, histograms):
    found = set()
    for raw in re.findall(r"\bedc_[a-z0-9_]+", expr):
        family = raw
        for suffix in ("_bucket", "_sum", "_count"):
            if raw.endswith(suffix) and raw[: -len(suffix)] in histograms:
                family = raw[: -len(suffix)]
        found.add((family, raw))
    return found
