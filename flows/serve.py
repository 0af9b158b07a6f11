"""Serve the ``ssft`` flow's deployments (``full``, ``smoke`` and ``study``) from this process.

    python -m flows.serve        # started by `make up`; then: prefect deployment run ssft/full --watch

``serve`` freezes the flow code at start: restart it (``make down up``) after editing flows/.
"""

from __future__ import annotations

from prefect import serve

from flows.pipeline import ssft

# The smoke run: the whole pipeline, tiny, in a scratch copy, with its own MLflow experiment and artifact key,
# and out of the model registry (a smoke model must never become anyone's champion).
SMOKE = {
    "traces.train_questions": 32, "traces.eval_questions": 16,
    "model.hidden_size": 32, "model.num_layers": 2, "model.num_heads": 2, "model.intermediate_size": 64,
    "train.max_steps": 16, "train.questions_per_step": 4, "train.warmup_steps": 2, "train.save_steps": 8,
    "train.logging_steps": 4, "eval.samples": 8, "eval.ks": [8], "eval.max_new_tokens": 40,
    "gfpo.steps": 2, "gfpo.questions_per_step": 4, "gfpo.rollouts": 4,
    "tracking.experiment": "ssft-smoke", "tracking.register": False,
}


def main() -> None:
    full = ssft.to_deployment(name="full", description="The whole pipeline on params.yaml, in this project.")
    smoke = ssft.to_deployment(name="smoke", parameters={"params": SMOKE, "workspace": "scratch"},
                               description="A tiny end-to-end run in a scratch copy (about 2 minutes).")
    study = ssft.to_deployment(name="study", parameters={"study": "cpu"},
                               description="A study (studies/<study>.yaml: settings x seeds) and its report, "
                                           "results/study.md for cpu; finished cells are reused.")
    # to_deployment is @sync_compatible, typed as "maybe a coroutine"; called synchronously it returns the value
    serve(full, smoke, study)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
