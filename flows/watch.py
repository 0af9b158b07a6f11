"""Run a deployment and follow it in this terminal: every log line of the flow and its stages (training steps,
loss, ETA, generation progress) as it is written, then the final state. What `make run` uses.

    python -m flows.watch ssft/full [--param train.max_steps=2000 ...]

Exits 0 when the flow run completes, 1 when it fails or crashes (its last error lines are the reason).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import arun_deployment

POLL_S = 2.0


async def follow(deployment: str, params: dict) -> int:
    run = await arun_deployment(deployment, parameters={"params": params} if params else None, timeout=0)
    print(f"flow run {run.name} ({run.id}) of {deployment}", flush=True)
    seen = 0
    async with get_client() as client:
        while True:
            state = (await client.read_flow_run(run.id)).state
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                                          offset=seen, sort=LogSort.TIMESTAMP_ASC)
            for log in logs:
                print(log.message, flush=True)
            seen += len(logs)
            if state is not None and state.is_final() and not logs:  # final, and every line printed
                print(f"flow run {run.name}: {state.name}", flush=True)
                return 0 if state.is_completed() else 1
            await asyncio.sleep(POLL_S)


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
    return asyncio.run(follow(args.deployment, params))


if __name__ == "__main__":
    sys.exit(main())
