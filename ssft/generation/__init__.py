"""Generation, the package's bottom floor: one :class:`~ssft.generation.sampler.Sampler` interface, three engines.

``factory.make(backend, ...)`` picks one by name (:data:`ssft.generation.factory.BACKENDS`): ``hf`` (batched
``model.generate`` on a loaded model), ``openai`` (any OpenAI-compatible server through the completions endpoint,
token-id prompts) or ``vllm`` (vLLM's offline engine, GPU only). Evaluation, the validation tag, ``ssft sample``
and the ``hf`` teacher all generate through it. Nothing here imports ssft.data, ssft.train, ssft.eval or
ssft.tracking, nor MLflow, Prefect or DVC; importing this package imports no engine.
"""
