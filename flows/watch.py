"""Run a deployment and follow it in this terminal: every log line of the flow and its stages (training steps,
loss, ETA, generation progress) as it is written, then the final state. What `make run` uses.

    python -m flows.watch ssft/full [--param train.max_steps=2000 ...]

Exits 0 when the flow run completes, its last line the headline of the run's summary (ssft vs baselines);
1 when it fails or crashes (its last error lines are the reason); 2, with one line, when no Prefect server answers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTimestamp,
)
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import arun_deployment

POLL_S = 2.0
FINAL_QUIET_POLLS = 3  # Prefect ships log lines in batches every ~2 s
LATE_S = 30            # a line may arrive this long after a later-stamped one (workers batch independently)
PAGE = 200
SUMMARY_PREFIX = "Headline"  # the line of a run's summary artifact printed last (ssft/eval/report.py's headline)


async def new_logs(client: Any, run_id: Any, since: Any, seen: set) -> list:
    """The flow run's log lines not printed yet, oldest first (read from ``since``, deduplicated by id)."""
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]),
                    timestamp=LogFilterTimestamp(after_=since) if since else None)
    out, offset = [], 0
    while True:
        page = await client.read_logs(flt, offset=offset, limit=PAGE, sort=LogSort.TIMESTAMP_ASC)
        out += [log for log in page if log.id not in seen]
        if len(page) < PAGE:
            break
        offset += PAGE
    seen.update(log.id for log in out)
    return out


async def summary_line(client: Any, run_id: Any) -> str | None:
    """The headline of the flow run's summary artifact (the pipeline's, a smoke run's, a study's first line)."""
    found = await client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), type=ArtifactFilterType(any_=["markdown"])))
    for artifact in found:
        for line in str(artifact.data or "").splitlines():
            if line.startswith(SUMMARY_PREFIX):
                return line
    return None


async def follow(deployment: str, params: dict) -> int:
    run = await arun_deployment(deployment, parameters={"params": params} if params else None, timeout=0)
    print(f"flow run {run.name} ({run.id}) of {deployment}", flush=True)
    seen: set = set()
    since = None
    quiet = 0
    async with get_client() as client:
        while True:
            state = (await client.read_flow_run(run.id)).state
            logs = await new_logs(client, run.id, since, seen)
            for log in logs:
                print(log.message, flush=True)
            if logs:
                since = logs[-1].timestamp - timedelta(seconds=LATE_S)
            quiet = 0 if logs else quiet + 1
            # Lines reach the server in batches, after the state may have turned final: stop after quiet polls.
            if state is not None and state.is_final() and quiet >= FINAL_QUIET_POLLS:
                if state.is_completed():
                    print(f"flow run {run.name}: {state.name}", flush=True)
                    line = await summary_line(client, run.id)
                    if line:  # last: what the run found, under the table the flow printed above
                        print(line, flush=True)
                    return 0
                # the reason in one line, last, e.g. "... ConfigError: train.max_step: unknown setting; known: ..."
                reason = " ".join(line.strip() for line in (state.message or "no message").splitlines())
                print(f"flow run {run.name}: {state.name}: {reason}", flush=True)
                return 1
            await asyncio.sleep(POLL_S)


async def unreachable() -> str | None:
    """Why no Prefect server can be asked (None when one answers): one line instead of httpx's traceback."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:  # Prefect would start a throw-away server of its own, which knows no deployment
        return "PREFECT_API_URL is not set; start the local stack with `make up`, then `source scripts/env.sh`"
    async with get_client() as client:
        err = await client.api_healthcheck()
    if err is None:
        return None
    return (f"no Prefect server answers at {url} ({type(err).__name__}: {err}); start the local stack with "
            "`make up`, then `source scripts/env.sh` in this shell")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.watch", description=__doc__.splitlines()[0])
    ap.add_argument("deployment", help="e.g. ssft/full or ssft/smoke")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml override for the flow, e.g. train.max_steps=2000")
    args = ap.parse_args(argv)
    params = {}
    for pair in args.param:
        key, sep, value = pair.partition("=")
        if not sep:
            ap.error(f"--param {pair!r}: expected KEY=VALUE")
        params[key] = yaml.safe_load(value)
    problem = asyncio.run(unreachable())
    if problem:
        print(f"flows.watch: {problem}", file=sys.stderr)
        return 2
    return asyncio.run(follow(args.deployment, params))


if __name__ == "__main__":
    sys.exit(main())
