import pytest
import torch

from inference.engine.sampling import make_generator, sample_next_token
from inference.engine.types import SamplingParams


def test_zero_temperature_is_argmax():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    gen = make_generator(0)
    assert all(sample_next_token(logits, temperature=0.0, top_p=1.0, generator=gen) == 1 for _ in range(5))


def test_tiny_top_p_keeps_only_the_most_likely_token():
    logits = torch.tensor([0.0, 1.0, 0.5, 0.9])
    gen = make_generator(123)
    picks = {sample_next_token(logits, temperature=1.0, top_p=1e-6, generator=gen) for _ in range(50)}
    assert picks == {1}


def test_top_p_never_samples_outside_the_nucleus():
    # probs ~ [0.5, 0.3, 0.15, 0.05]: top_p=0.7 keeps the first two only.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    gen = make_generator(7)
    picks = {sample_next_token(logits, temperature=1.0, top_p=0.7, generator=gen) for _ in range(300)}
    assert picks == {0, 1}


def test_same_seed_replays_the_same_samples():
    logits = torch.zeros(50)

    def draw(gen):
        return [sample_next_token(logits, temperature=1.0, top_p=1.0, generator=gen) for _ in range(20)]

    assert draw(make_generator(42)) == draw(make_generator(42))


def test_unseeded_generators_differ():
    logits = torch.zeros(1000)
    draws = {
        tuple(sample_next_token(logits, temperature=1.0, top_p=1.0, generator=g) for _ in range(5))
        for g in (make_generator(None) for _ in range(3))
    }
    assert len(draws) > 1


def test_sampling_params_normalise_stop_strings():
    assert SamplingParams(stop=["a", "", "b"]).stop == ("a", "b")
    assert SamplingParams(stop="END").stop == ("END",)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_tokens": -1}, {"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}, {"stop": ("ok", 3)}],
)
def test_invalid_sampling_params_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)
