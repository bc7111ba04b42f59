"""Single-sequence model execution: prefill once, then decode with the KV cache.

One request at a time by design; a continuous-batching runner replaces this.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from transformers import AutoModelForCausalLM

from .sampling import make_generator, sample_next_token
from .types import SamplingParams

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class ModelRunner:
    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; expected one of {sorted(DTYPES)}")
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        model = AutoModelForCausalLM.from_pretrained(str(model_path), local_files_only=True, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])

    def stream(self, prompt_token_ids: Sequence[int], params: SamplingParams, max_new_tokens: int) -> Iterator[int]:
        """Yield up to max_new_tokens sampled ids, lazily.

        Each next() runs exactly one forward pass, so the caller can stop
        (cancel, EOS, stop string) between steps without wasted compute.
        The caller decides when to stop; this never looks at EOS.
        """
        if not prompt_token_ids:
            raise ValueError("prompt_token_ids is empty")
        bad = [t for t in prompt_token_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} outside vocabulary of {self.vocab_size}")
        if max_new_tokens <= 0:
            return
        generator = make_generator(params.seed, self.device)
        input_ids = torch.tensor([list(prompt_token_ids)], dtype=torch.long, device=self.device)  # [1, P]
        logits, past = self._forward(input_ids, None)  # [V]
        for step in range(max_new_tokens):
            token = sample_next_token(logits, temperature=params.temperature, top_p=params.top_p, generator=generator)
            yield token
            if step + 1 == max_new_tokens:
                break  # the next forward would produce logits nobody samples
            next_ids = torch.tensor([[token]], dtype=torch.long, device=self.device)  # [1, 1]
            logits, past = self._forward(next_ids, past)

    @torch.inference_mode()
    def _forward(self, input_ids: torch.Tensor, past):
        # input_ids: [1, T]; positions continue from the cache length.
        # logits_to_keep=1 keeps prefill from materialising [1, P, V] logits.
        out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float(), out.past_key_values  # [V], cache
