"""freeal_ray: LLM and SLM label a corpus together (FreeAL) on Ray. `run_freeal(config)` is the call;
`load_model(path).predict(texts)` labels new text with the small model a run trained."""


def __getattr__(name):
    # Lazy, so `import freeal_ray` (and the CLI's --help) does not start importing Ray and torch.
    if name == "run_freeal":
        from freeal_ray.run import run_freeal

        return run_freeal
    if name == "load_model":
        from freeal_ray.model import load_model

        return load_model
    raise AttributeError(name)
