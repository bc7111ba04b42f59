import pytest
import torch

from inference.engine.types import SamplingParams

from .helpers import until_eos

GREEDY = SamplingParams(max_tokens=48, temperature=0.0)


@pytest.mark.parametrize(
    "content",
    ["What is the capital of France?", "Write a short story about a cat.", "héllo 你好"],
)
def test_greedy_output_equals_transformers_generate(runner, chat_tokenizer, content):
    prompt = chat_tokenizer.encode_chat([{"role": "user", "content": content}])
    ours = list(runner.stream(prompt, GREEDY, GREEDY.max_tokens))
    with torch.inference_mode():
        out = runner.model.generate(
            torch.tensor([prompt]),
            max_new_tokens=GREEDY.max_tokens,
            do_sample=False,
            pad_token_id=chat_tokenizer.hf_tokenizer.pad_token_id,
        )
    theirs = out[0, len(prompt) :].tolist()
    assert until_eos(ours, chat_tokenizer.eos_token_ids) == theirs
    assert len(set(ours)) > 3, "degenerate greedy output would make this test meaningless"


def test_same_seed_gives_same_output(runner, prompt_ids):
    params = SamplingParams(max_tokens=32, temperature=1.0, top_p=0.9, seed=1234)
    first = list(runner.stream(prompt_ids, params, params.max_tokens))
    second = list(runner.stream(prompt_ids, params, params.max_tokens))
    assert first == second


def test_different_seeds_give_different_outputs(runner, prompt_ids):
    outputs = {
        tuple(runner.stream(prompt_ids, SamplingParams(max_tokens=16, seed=seed), 16)) for seed in range(3)
    }
    assert len(outputs) == 3


def test_stream_yields_exactly_max_new_tokens(runner, prompt_ids):
    assert len(list(runner.stream(prompt_ids, SamplingParams(seed=0), 7))) == 7
    assert list(runner.stream(prompt_ids, SamplingParams(seed=0), 0)) == []


def test_out_of_vocabulary_prompt_is_rejected(runner):
    with pytest.raises(ValueError, match="outside vocabulary"):
        list(runner.stream([1, 10**6], SamplingParams(), 4))
