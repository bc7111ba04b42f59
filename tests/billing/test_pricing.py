"""Price arithmetic with prompt tokens served from the prefix cache: exact, rounded up once, bounded."""
import pytest

from core.money import TOKENS_PER_PRICE_UNIT, Price, cached_within

pytestmark = pytest.mark.money


def exact(price: Price, prompt: int, completion: int, cached: int) -> int:
    """The formula, written out: every token at its price, one ceiling over the sum."""
    numerator = ((prompt - cached) * price.input_micro_per_mtok + cached * price.cached_input_micro_per_mtok
                 + completion * price.output_micro_per_mtok)
    return -(-numerator // TOKENS_PER_PRICE_UNIT)


@pytest.mark.parametrize("input_price, half", [(100_000, 50_000), (1_000_001, 500_000), (3, 1), (1, 0), (0, 0)])
def test_the_cached_input_price_defaults_to_half_the_input_price_rounded_down(input_price, half):
    price = Price(input_micro_per_mtok=input_price, output_micro_per_mtok=7)
    assert price.cached_input_micro_per_mtok == half
    assert price == Price(input_price, 7, half)


def test_a_cached_input_price_given_is_kept_even_zero():
    assert Price(100_000, 200_000, 10_000).cached_input_micro_per_mtok == 10_000
    assert Price(100_000, 200_000, cached_input_micro_per_mtok=0).cached_input_micro_per_mtok == 0


def test_without_cached_tokens_the_cost_is_what_it_always_was():
    price = Price(input_micro_per_mtok=100_000, output_micro_per_mtok=200_000)
    assert price.cost_micro(prompt_tokens=24, completion_tokens=36) == 10
    assert price.cost_micro(prompt_tokens=24, completion_tokens=36, cached_tokens=0) == 10


def test_cached_tokens_are_charged_the_cached_price_and_the_rest_the_input_price():
    price = Price(input_micro_per_mtok=1_000_000, output_micro_per_mtok=2_000_000, cached_input_micro_per_mtok=250_000)
    # 6 uncached at 1, 4 cached at 0.25, 5 completion at 2: 6 + 1 + 10
    assert price.cost_micro(prompt_tokens=10, completion_tokens=5, cached_tokens=4) == 17
    # the whole prompt cached
    assert price.cost_micro(prompt_tokens=8, completion_tokens=0, cached_tokens=8) == 2


def test_the_sum_is_rounded_up_once_not_each_part():
    # Odd input price: half of 3 micro-USD per million tokens is 1 (rounded down, never up against the client).
    price = Price(input_micro_per_mtok=3, output_micro_per_mtok=3)
    assert price.cached_input_micro_per_mtok == 1
    # 400_000 * 3 + 300_000 * 1 + 300_000 * 3 = 2_400_000 -> 2.4 -> 3; per part it would be 2 + 1 + 1 = 4
    assert price.cost_micro(prompt_tokens=700_000, completion_tokens=300_000, cached_tokens=300_000) == 3
    # an exact micro-USD is not rounded further
    assert price.cost_micro(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=1_000_000) == 1


@pytest.mark.parametrize("input_price, cached_price, output_price", [
    (100_000, None, 200_000), (1_000_001, None, 3), (999_999, 333_333, 1), (7, 0, 0), (150_000, 75_001, 600_001),
])
@pytest.mark.parametrize("prompt, completion, cached", [
    (1, 0, 1), (1, 1, 0), (3, 5, 2), (999_999, 1, 999_998), (1_234_567, 89, 1_000_000), (10, 0, 5),
])
def test_the_cost_matches_the_formula_exactly(input_price, cached_price, output_price, prompt, completion, cached):
    price = Price(input_price, output_price, cached_price)
    cost = price.cost_micro(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    assert cost == exact(price, prompt, completion, cached)
    # cheaper or equal to charging the whole prompt at the input price, never negative
    assert 0 <= cost <= price.cost_micro(prompt_tokens=prompt, completion_tokens=completion)


@pytest.mark.parametrize("prompt, cached", [(10, 11), (10, -1), (0, 1)])
def test_cached_tokens_outside_the_prompt_are_refused(prompt, cached):
    with pytest.raises(ValueError, match="cached_tokens"):
        Price(100_000, 200_000).cost_micro(prompt_tokens=prompt, completion_tokens=1, cached_tokens=cached)


@pytest.mark.parametrize("cached, prompt, within", [
    (5, 10, 5), (10, 10, 10), (11, 10, 10), (-3, 10, 0), (4, 0, 0), (None, 10, 0),
])
def test_a_reported_cached_count_is_brought_within_the_prompt(cached, prompt, within):
    assert cached_within(cached, prompt) == within
