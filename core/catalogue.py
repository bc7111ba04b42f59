"""Public model ids: where each model lives on disk and what it costs by default.

The built-in entry is the default model, converted by `manage.py prepare_model`
into MODEL_CACHE_DIR. More models can be listed in a JSON file named by
MODELS_FILE: {"model-id": {"path": "/dir", "input_usd_per_mtok": "0.1",
"output_usd_per_mtok": "0.2", "owned_by": "me"}}, and optionally
"cached_input_usd_per_mtok" (prompt tokens served from the prefix cache; half
the input price when absent), "dtype" (auto, bfloat16, float16, float32) and
"quantization" (auto, none, int8, int4), which win over INFERENCE_DTYPE and
INFERENCE_QUANTIZATION for that model, and "max_model_len" (a context window
shorter than the model's, as INFERENCE_MAX_MODEL_LEN for that model).

Only the hosts that run a model need its weights (the embedded default, the
inference workers); a web host in front of the worker queue needs its tokenizer,
chat template and config alone (`manage.py prepare_model --tokenizer-only`).
"""
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.money import Price, usd_to_micro

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
# What the model's authors recommend; the GGUF does not carry it, so
# prepare_model writes it into the converted generation_config.json.
DEFAULT_MODEL_SAMPLING = {"do_sample": True, "temperature": 0.2, "top_p": 0.9}


# A checkpoint's weights, in any of the layouts transformers saves.
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
# What a web host needs of a checkpoint to tokenize and render prompts (`prepare_model --tokenizer-only`): every one
# of these that the checkpoint has, and no weights.
TOKENIZER_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt",
    "vocab.txt",
)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    path: Path
    default_price: Price
    owned_by: str = "platform"
    created: int = 1735689600  # 2025-01-01, when the model was added to the catalogue
    dtype: str | None = None  # None: INFERENCE_DTYPE
    quantization: str | None = None  # None: INFERENCE_QUANTIZATION
    max_model_len: int | None = None  # None: INFERENCE_MAX_MODEL_LEN, else the model's own context window

    @property
    def context_limit(self) -> int | None:
        """The context window an engine gives this model here (None: the model's own, from its config)."""
        return self.max_model_len or settings.INFERENCE_MAX_MODEL_LEN or None

    @property
    def config_window(self) -> int | None:
        """The model's own context window as its config.json states it (max_position_embeddings, or its text
        model's), read without loading the model; None when the file or the number is missing."""
        try:
            config = json.loads((self.path / "config.json").read_text())
        except (OSError, ValueError):
            return None
        for section in (config, config.get("text_config") if isinstance(config, dict) else None):
            window = section.get("max_position_embeddings") if isinstance(section, dict) else None
            if type(window) is int and window > 0:
                return window
        return None

    @property
    def declared_window(self) -> int | None:
        """The context window an engine here would give the model, before one is loaded: the shorter of
        context_limit and config_window (a loaded engine may lower it further, to what its KV cache holds)."""
        return min((w for w in (self.context_limit, self.config_window) if w), default=None)

    def engine_options(self) -> dict:
        """How an engine runs this model here: its own choices, else the settings'."""
        return {
            "dtype": self.dtype or settings.INFERENCE_DTYPE,
            "quantization": self.quantization or settings.INFERENCE_QUANTIZATION,
            "attention_backend": settings.INFERENCE_ATTENTION_BACKEND,
            "enforce_eager": settings.INFERENCE_ENFORCE_EAGER,
            "gpu_memory_utilization": settings.INFERENCE_GPU_MEMORY_UTILIZATION,
        }

    @property
    def has_weights(self) -> bool:
        """The whole checkpoint is here: what an engine loads (the embedded default, a worker host)."""
        return (self.path / "config.json").is_file() and any(
            next(self.path.glob(pattern), None) is not None for pattern in WEIGHT_PATTERNS)

    @property
    def has_tokenizer(self) -> bool:
        """The tokenizer, chat template and config are here: what a web host with the worker queue needs."""
        return (self.path / "config.json").is_file() and any(
            (self.path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))

    @property
    def is_prepared(self) -> bool:
        """Prepared for this host: with the worker queue (INFERENCE_QUEUE_URL) a web host tokenizes and the workers
        hold the weights, so its tokenizer files suffice; the embedded engine needs the weights here."""
        if getattr(settings, "INFERENCE_QUEUE_URL", None):
            return self.has_tokenizer
        return self.has_weights

    def sampling_defaults(self) -> dict:
        """temperature and top_p from the checkpoint's generation_config.json, used when a request omits them."""
        return _sampling_defaults(str(self.path / "generation_config.json"))


@cache
def _sampling_defaults(path: str) -> dict:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not config.get("do_sample", False):
        return {}
    return {k: float(config[k]) for k in ("temperature", "top_p") if isinstance(config.get(k), (int, float))}


def _builtin() -> dict[str, ModelSpec]:
    return {
        DEFAULT_MODEL_ID: ModelSpec(
            id=DEFAULT_MODEL_ID,
            path=Path(settings.MODEL_CACHE_DIR) / DEFAULT_MODEL_ID,
            # Cached prompt tokens: half the input price, Price's default.
            default_price=Price(input_micro_per_mtok=100_000, output_micro_per_mtok=200_000),
            owned_by="HuggingFaceTB",
        )
    }


def _price(entry: dict) -> Price:
    cached = entry.get("cached_input_usd_per_mtok")
    price = Price(usd_to_micro(entry["input_usd_per_mtok"]), usd_to_micro(entry["output_usd_per_mtok"]),
                  None if cached is None else usd_to_micro(cached))
    # Holds reserve prompt tokens at the input price; a dearer cached token would outgrow the hold.
    if not 0 <= price.cached_input_micro_per_mtok <= price.input_micro_per_mtok:
        raise ValueError("cached_input_usd_per_mtok must be between 0 and input_usd_per_mtok")
    return price


DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANTIZATIONS = ("auto", "none", "int8", "int4")


def _choice(entry: dict, key: str, choices: tuple[str, ...]) -> str | None:
    value = entry.get(key)
    if value is not None and value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _positive(entry: dict, key: str) -> int | None:
    value = entry.get(key)
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{key} must be a positive integer, not {value!r}")
    return value


def _from_file(path: str) -> dict[str, ModelSpec]:
    try:
        entries = json.loads(Path(path).read_text())
        return {
            model_id: ModelSpec(
                id=model_id,
                path=Path(entry["path"]),
                default_price=_price(entry),
                owned_by=entry.get("owned_by", "platform"),
                dtype=_choice(entry, "dtype", DTYPES),
                quantization=_choice(entry, "quantization", QUANTIZATIONS),
                max_model_len=_positive(entry, "max_model_len"),
            )
            for model_id, entry in entries.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ImproperlyConfigured(f"MODELS_FILE {path}: {exc!r}") from None


@cache
def _catalogue(cache_dir: str, models_file: str | None) -> dict[str, ModelSpec]:
    models = _builtin()
    if models_file:
        models.update(_from_file(models_file))
    return models


def all_models() -> dict[str, ModelSpec]:
    return _catalogue(str(settings.MODEL_CACHE_DIR), settings.MODELS_FILE)


def get_model(model_id: str) -> ModelSpec | None:
    return all_models().get(model_id)


def served_models() -> list[ModelSpec]:
    """Models this host is prepared for (ModelSpec.is_prepared): listed, and their files on disk. With the worker
    queue, models that live workers serve are listed too, files or not (inference.dispatch.listed_models)."""
    return [spec for spec in all_models().values() if spec.is_prepared]
