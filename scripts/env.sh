# Sourced by up.sh / down.sh / `make`: one place for the local stack's settings. Anything already set wins.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PREFECT_PORT="${PREFECT_PORT:-4200}"
export MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:$PREFECT_PORT/api}"
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT="$PREFECT_PORT"
export PREFECT_RUNNER_POLL_FREQUENCY="${PREFECT_RUNNER_POLL_FREQUENCY:-2}"
# The Prefect server answers only its own UI and this checkout's clients: browsers get CORS for its own
# origin only, state-changing requests need a CSRF token, and every request needs this checkout's password
# (HTTP basic auth; generated once into $PREFECT_HOME/auth, mode 600; the UI asks for it).
export PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS="http://127.0.0.1:$PREFECT_PORT"
export PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED=true
if [ ! -s "$PREFECT_HOME/auth" ]; then
  mkdir -p "$PREFECT_HOME"
  (umask 077 && python3 -c 'import secrets; print("ssft:" + secrets.token_urlsafe(24))' >"$PREFECT_HOME/auth")
fi
PREFECT_API_AUTH_STRING="$(cat "$PREFECT_HOME/auth")"
export PREFECT_API_AUTH_STRING PREFECT_SERVER_API_AUTH_STRING="$PREFECT_API_AUTH_STRING"
# The MLflow server started by up.sh asks for a login too (MLflow's basic-auth app): user `ssft`, its own
# password in $PREFECT_HOME/mlflow-auth (mode 600), which MLflow's clients read from these two variables.
if [ ! -s "$PREFECT_HOME/mlflow-auth" ]; then
  (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$PREFECT_HOME/mlflow-auth")
fi
export MLFLOW_TRACKING_USERNAME="${MLFLOW_TRACKING_USERNAME:-ssft}"
MLFLOW_TRACKING_PASSWORD="${MLFLOW_TRACKING_PASSWORD:-$(cat "$PREFECT_HOME/mlflow-auth")}"
export MLFLOW_TRACKING_PASSWORD
# Offline defaults and the local MLflow store (MLFLOW_TRACKING_URI, SSFT_MLFLOW_ARTIFACTS): their one home is ssft/env.py.
eval "$(PYTHONPATH="$ROOT" python3 -m ssft.env "$ROOT")"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
export SSFT_MLFLOW_UI="${SSFT_MLFLOW_UI:-http://127.0.0.1:$MLFLOW_PORT}"   # links in the flow's log and run pages
export PATH="$ROOT/.venv/bin:$PATH"
RUN="$PREFECT_HOME/run"   # pid files and logs of what up.sh started
# `prefect deployment ...` with no server answering prints one line instead of Prefect's long traceback.
prefect() {
  if [ "${1:-}" = deployment ] && ! curl -sf -m 5 -u "$PREFECT_API_AUTH_STRING" "$PREFECT_API_URL/health" >/dev/null; then
    echo "prefect: no Prefect server answers at $PREFECT_API_URL; start the local stack with \`make up\`" >&2
    return 1
  fi
  command prefect "$@"
}
