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

# Qwen2.5-style ChatML with tools: a system <tools> block, calls as <tool_call>
# blocks, tool results as <tool_response> blocks in a user turn.
HERMES_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) or (message.role == 'assistant' and not message.tool_calls) %}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' + tool_call.arguments | tojson + '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""

# Llama 3.1-style JSON tool calling: tools in the first user turn, a call is the
# whole assistant turn ({"name": ..., "parameters": ...}), results in ipython turns.
LLAMA3_TEMPLATE = """\
{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}
{%- else %}{%- set system_message = '' %}{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}
{%- if tools %}{{- 'Environment: ipython\n' }}{%- endif %}
{{- 'Cutting Knowledge Date: December 2023\n\n' + system_message + '<|eot_id|>' }}
{%- if tools and messages | length != 0 %}
{%- set first_user_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}
{{- '<|start_header_id|>user<|end_header_id|>\n\n' }}
{{- 'Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n' }}
{{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.\n\n' }}
{%- for t in tools %}{{- t | tojson(indent=4) }}{{- '\n\n' }}{%- endfor %}
{{- first_user_message + '<|eot_id|>' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'tool' or message.role == 'ipython' %}
{{- '<|start_header_id|>ipython<|end_header_id|>\n\n' + message.content + '<|eot_id|>' }}
{%- elif message.tool_calls %}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- for tool_call in message.tool_calls %}
{%- if not loop.first %}{{- '; ' }}{%- endif %}
{{- '{"name": "' + tool_call.function.name + '", "parameters": ' + tool_call.function.arguments | tojson + '}' }}
{%- endfor %}
{{- '<|eot_id|>' }}
{%- else %}
{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' + message.content | trim + '<|eot_id|>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}
"""

HERMES_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]  # added, not special (as Qwen)
LLAMA3_TOKENS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"]
CHAT_TEMPLATES = ("chatml", "hermes", "llama3")

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


def build_tokenizer(chat_template: str = "chatml") -> PreTrainedTokenizerFast:
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
    if chat_template == "hermes":
        # One token each, as in Qwen's vocabulary: the model can emit a tag in one step.
        hf_tok.add_tokens(HERMES_TOKENS)
        hf_tok.chat_template = HERMES_TEMPLATE
    elif chat_template == "llama3":
        hf_tok.add_special_tokens({"additional_special_tokens": LLAMA3_TOKENS})
        hf_tok.bos_token, hf_tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
        hf_tok.chat_template = LLAMA3_TEMPLATE
    elif chat_template != "chatml":
        raise ValueError(f"unknown tiny chat template {chat_template!r}; expected one of {CHAT_TEMPLATES}")
    return hf_tok


# Families whose decoder the engine must run; each differs in attention details
# (Qwen2: q/k/v biases; Qwen3: per-head q/k norms and an explicit head_dim; Mistral: sliding-window config).
FAMILIES = {"llama": {}, "qwen2": {}, "qwen3": {"head_dim": 32}, "mistral": {"sliding_window": None}}


def build_tiny_model(out_dir, family: str = "llama", chat_template: str = "chatml", **sizes) -> Path:
    """chat_template: "chatml" (default, no tools), "hermes" or "llama3" (tool-capable templates); sizes: other
    values for the configuration's sizes (hidden_size=128, intermediate_size=256, ...)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(chat_template)
    config = AutoConfig.for_model(
        family,
        **FAMILIES[family],
        vocab_size=len(tokenizer),
        **{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 128, "max_position_embeddings": 2048, **sizes},
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
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
