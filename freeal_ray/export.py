"""The SLM as ONNX, for serving stacks that run ONNX Runtime rather than torch.

`export_onnx(model, output)` writes the folder layout Hugging Face's ONNX tools use: `model.onnx`
beside the model's `config.json` (id2label) and tokenizer files. The graph takes `input_ids` and
`attention_mask` of any batch size and length and returns `logits` (per text, or per token for
NER). The exporter is torch's own (`torch.onnx.export`, dynamo); the export is checked against
torch on a probe batch before the function returns, so a folder it wrote gives the same scores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from freeal_ray.errors import FreeALError

ONNX_EXTRA = "pip install 'freeal-ray[onnx]' (onnx, onnxscript and onnxruntime)"
PROBE_TEXTS = ["A short one.", "A longer text, with punctuation and a few more words, to vary the length."]


def export_onnx(model: str | Path, output: str | Path, opset: int = 18, atol: float = 1e-4) -> Path:
    """Write the SLM at `model` (a run folder or its slm/) as an ONNX model folder at `output`."""
    from freeal_ray.checkpoint import load_checkpoint
    from freeal_ray.model import slm_folder

    _require_onnx_packages()
    source = slm_folder(model)
    checkpoint = load_checkpoint(source, device="cpu")
    output = Path(output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    network = checkpoint.model.model  # the plain transformers model, without the loop's mixup wrapper
    inputs = _probe_inputs(checkpoint)
    _export_graph(network, inputs, output / "model.onnx", opset)
    network.config.save_pretrained(output)
    checkpoint.tokenizer.save_pretrained(output)
    shutil.copy(source / "slm.json", output / "slm.json")
    _check_against_torch(network, inputs, output / "model.onnx", atol)
    return output


def _require_onnx_packages() -> None:
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
    if missing:
        raise FreeALError(f"ONNX export needs {', '.join(missing)}: {ONNX_EXTRA}")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _probe_inputs(checkpoint) -> dict:
    texts = [t.split() for t in PROBE_TEXTS] if checkpoint.head == "tagger" else PROBE_TEXTS
    encoded = checkpoint.tokenizer(texts, is_split_into_words=checkpoint.head == "tagger", padding=True,
                                   truncation=True, max_length=checkpoint.max_length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _export_graph(network, inputs: dict, path: Path, opset: int) -> None:
    import logging
    import warnings

    import torch

    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}}
    # One file while it can be: protobuf caps a model file at 2 GB, past that weights go beside it.
    weights_bytes = sum(p.numel() * p.element_size() for p in network.parameters())
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its notes on ops it skips are not the user's
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(network.eval(), args=(), kwargs=inputs, f=str(path), dynamo=True, opset_version=opset,
                              input_names=list(inputs), output_names=["logits"], dynamic_shapes=axes, verbose=False,
                              external_data=weights_bytes > 1.8e9)
    except Exception as exc:  # the exporter's errors are long; the cause is kept for --verbose
        raise FreeALError(f"torch.onnx.export could not export {type(network).__name__}: {str(exc)[:300]}") from exc


def _check_against_torch(network, inputs: dict, path: Path, atol: float) -> None:
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [ours] = session.run(["logits"], {name: tensor.numpy() for name, tensor in inputs.items()})
    with torch.no_grad():
        theirs = network(**inputs).logits.numpy()
    worst = float(np.abs(ours - theirs).max())
    if worst > atol:
        raise FreeALError(f"the ONNX export of {path.parent} differs from torch by {worst:.2e} in its logits "
                          f"(more than {atol:g}); the folder is kept for inspection")
    (path.parent / "onnx.json").write_text(json.dumps({"max_abs_logit_diff_vs_torch": worst}))
