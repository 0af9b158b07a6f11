#!/usr/bin/env bash
# Start the local stack on 127.0.0.1: Prefect server, MLflow server (store under mlruns/), and the process
# serving the ssft deployments. Safe to re-run: what is already up is left alone.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
mkdir -p "$RUN" "$SSFT_MLFLOW_ARTIFACTS"

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
wait_for() {  # name, command, seconds
  for _ in $(seq 1 $(( $3 * 2 ))); do eval "$2" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "up: $1 did not come up within $3 s; see $RUN/$1.log" >&2; exit 1
}

if ! curl -sf -u "$PREFECT_API_AUTH_STRING" "$PREFECT_API_URL/health" >/dev/null; then
  echo "up: starting Prefect server on $PREFECT_API_URL"
  setsid nohup prefect server start --host 127.0.0.1 --port "$PREFECT_PORT" --analytics-off \
    >"$RUN/prefect.log" 2>&1 < /dev/null & echo $! >"$RUN/prefect.pid"
  wait_for prefect "curl -sf -u '$PREFECT_API_AUTH_STRING' $PREFECT_API_URL/health" 180
fi

if [[ "$MLFLOW_TRACKING_URI" == http* ]]; then
  echo "up: stages log to the MLflow server at $MLFLOW_TRACKING_URI (not starting one)"
elif ! alive mlflow; then
  # Create (migrate) the store before anything writes to it concurrently.
  python -c "import mlflow; mlflow.MlflowClient('$MLFLOW_TRACKING_URI').search_experiments()"
  echo "up: starting MLflow server on http://127.0.0.1:$MLFLOW_PORT"
  # Every request but /health needs a login (MLflow's basic-auth app): env.sh's user and password, the admin
  # of a user store beside them; any other user gets nothing until the admin grants it.
  printf '[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///%s\nadmin_username = %s\n%s\n%s\n' \
    "$PREFECT_HOME/mlflow-users.db" "$MLFLOW_TRACKING_USERNAME" "grant_default_workspace_access = false" \
    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" >"$RUN/mlflow-auth.ini"
  [ -s "$PREFECT_HOME/mlflow-secret" ] || (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' \
    >"$PREFECT_HOME/mlflow-secret")
  MLFLOW_AUTH_CONFIG_PATH="$RUN/mlflow-auth.ini" MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD" \
  MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$PREFECT_HOME/mlflow-secret")" \
  setsid nohup mlflow server --app-name basic-auth --backend-store-uri "$MLFLOW_TRACKING_URI" \
    --default-artifact-root "$SSFT_MLFLOW_ARTIFACTS" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    >"$RUN/mlflow.log" 2>&1 < /dev/null & echo $! >"$RUN/mlflow.pid"
  wait_for mlflow "curl -sf http://127.0.0.1:$MLFLOW_PORT/health" 120
fi

if ! alive serve; then
  echo "up: serving deployments ssft/full and ssft/smoke"
  setsid nohup python -m flows.serve >"$RUN/serve.log" 2>&1 < /dev/null & echo $! >"$RUN/serve.pid"
  wait_for serve "grep -q 'ssft/smoke' $RUN/serve.log && prefect deployment inspect ssft/smoke" 120
fi
echo "up: Prefect UI http://127.0.0.1:$PREFECT_PORT (password: \$(cat $PREFECT_HOME/auth))   MLflow UI http://127.0.0.1:$MLFLOW_PORT (user $MLFLOW_TRACKING_USERNAME, password: \$(cat $PREFECT_HOME/mlflow-auth))"
