"""A tiny, random, fully offline chat model for tests and local development.

Same file layout and chat conventions (ChatML, eos <|im_end|>) as the real
model, so every code path that loads a model directory can run in seconds
without network access or large files.  Its output is gibberish by design.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 400

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A small model can still learn how
words are put together, even if it cannot say anything useful yet.
You are a helpful assistant. The user asks a question and the assistant answers it.
What is the capital of France? The capital of France is Paris.
What is the capital of Germany? The capital of Germany is Berlin.
Hello, how are you today? I am fine, thank you for asking. How can I help you?
Please write a short story about a cat who likes to read books in the library.
Once upon a time there was a cat. The cat lived in a house near the river, and
every morning it walked to the library to read about the sea, the stars and the
history of the world. The people in the town were surprised, but they were kind.
Numbers such as one, two, three, four, five and 2024 appear in text as well.
The weather is nice and the sun is shining, so we will go for a walk in the park.
Computers process information quickly; programs tell them what to do, step by step.
Thank you very much! You are welcome. Have a good day, and see you tomorrow.
"""


def build_tokenizer() -> PreTrainedTokenizerFast:
    # Byte-level BPE: every byte is in the alphabet, so any Unicode text
    # round-trips (non-ASCII characters split into several byte tokens,
    # which is exactly what the UTF-8 tests need).
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=2048,
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    return hf_tok


# Families whose decoder the engine must run; each differs in attention details
# (Qwen2: q/k/v biases; Qwen3: per-head q/k norms and an explicit head_dim; Mistral: sliding-window config).
FAMILIES = {"llama": {}, "qwen2": {}, "qwen3": {"head_dim": 32}, "mistral": {"sliding_window": None}}


def build_tiny_model(out_dir, family: str = "llama") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = AutoConfig.for_model(
        family,
        **FAMILIES[family],
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    # fork_rng: deterministic weights without resetting the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
