#!/usr/bin/env bash
# A GPU host's worker for the pipeline's work pool: `make worker POOL=gpu` (run from this host's clone).
# Creates the pool (type process) if the Prefect server has none of that name, registers the deployment
# ssft-stage/<pool> (flows/stage.py), then runs `prefect worker start`. The stages it gets check out the
# orchestrator's commit from $SSFT_REPO into .prefect/worker/<stage>/ and log to $MLFLOW_TRACKING_URI.
#   PREFECT_API_URL, PREFECT_API_AUTH_STRING   the orchestrator's Prefect server and its password (.prefect/auth there)
#   MLFLOW_TRACKING_URI                        the shared MLflow server, e.g. http://127.0.0.1:5000 through a tunnel
#   MLFLOW_TRACKING_USERNAME, _PASSWORD        its login (the orchestrator's: ssft, .prefect/mlflow-auth there)
#   SSFT_REPO    git URL of the project (default: this clone's origin)   POOL (gpu)   LIMIT: stages at once (1)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
POOL="${POOL:-gpu}"
: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server of the orchestrator, e.g. http://127.0.0.1:4200/api}"
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to the shared MLflow server, e.g. http://127.0.0.1:5000}"
export SSFT_REPO="${SSFT_REPO:-$(git remote get-url origin 2>/dev/null || true)}"
if [ -z "$SSFT_REPO" ]; then
  echo "worker: set SSFT_REPO to the git URL the orchestrator pushes its commits to (this clone has no origin)" >&2
  exit 2
fi
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
eval "$(PYTHONPATH="$ROOT" python3 -m ssft.env "$ROOT")"   # offline defaults; the settings above win
export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"      # the deployment imports flows.stage from this clone
if ! prefect work-pool inspect "$POOL" >/dev/null 2>&1; then
  prefect work-pool create "$POOL" --type process
fi
python -m flows.stage "$POOL"
echo "worker: pool $POOL, deployment ssft-stage/$POOL, workspaces in ${SSFT_WORKER_HOME:-$ROOT/.prefect/worker}"
exec prefect worker start --pool "$POOL" --type process --limit "${LIMIT:-1}"
