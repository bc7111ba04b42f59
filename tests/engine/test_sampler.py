import logging
import time

import pytest
import torch

from inference.engine.logits import top_p_threshold
from inference.engine.sampler import Sampler, SamplingRow
from inference.engine.types import SamplingParams

V = 64


def make_row(prompt=(1, 2, 3), output=(), generator=None, eos=(0,), mask=None, **params) -> SamplingRow:
    return SamplingRow(
        params=SamplingParams(**params),
        prompt_token_ids=list(prompt),
        output_token_ids=list(output),
        generator=generator,
        eos_token_ids=frozenset(eos),
        token_mask=mask,
    )


def draws(sampler, logits, row_factory, n) -> list[int]:
    """n independent draws of one row (a batch of n copies sharing the sampler's generator)."""
    results = sampler(logits.expand(n, -1), [row_factory() for _ in range(n)])
    return [r.token_id for r in results]


class FixedMask:
    def __init__(self, allowed):
        self._allowed = allowed
        self.accepted = []

    def allowed(self):
        return self._allowed

    def accept(self, token_id):
        self.accepted.append(token_id)


def reference_processed(logits: torch.Tensor, row: SamplingRow) -> torch.Tensor:
    """Steps 2-5 for one row, written the slow obvious way."""
    p = row.params
    x = logits.clone().float()
    for token, bias in p.logit_bias.items():
        if 0 <= token < x.numel():
            x[token] += bias
    if len(row.output_token_ids) < p.min_tokens:
        for token in (*row.eos_token_ids, *p.stop_token_ids):
            x[token] = float("-inf")
    for token in set(row.prompt_token_ids) | set(row.output_token_ids):
        x[token] = x[token] / p.repetition_penalty if x[token] > 0 else x[token] * p.repetition_penalty
    for token in set(row.output_token_ids):
        count = list(row.output_token_ids).count(token)
        x[token] -= p.presence_penalty + p.frequency_penalty * count
    return x


def test_greedy_rows_equal_argmax_in_a_batch_with_sampled_rows():
    torch.manual_seed(0)
    logits = torch.randn(12, V)
    rows = [make_row(temperature=0.0) if i % 3 else make_row(temperature=1.0, top_p=0.9) for i in range(12)]
    tokens = [r.token_id for r in Sampler(V, seed=0)(logits, rows)]
    argmax = logits.argmax(dim=-1).tolist()
    assert [t for i, t in enumerate(tokens) if i % 3] == [a for i, a in enumerate(argmax) if i % 3]


def test_greedy_rows_with_processing_equal_argmax_of_their_processed_logits():
    torch.manual_seed(1)
    logits = torch.randn(16, V) * 2
    gen = torch.Generator().manual_seed(5)
    rows = []
    for i in range(16):
        rnd = lambda: float(torch.rand((), generator=gen))  # noqa: E731
        output = torch.randint(0, V, (int(torch.randint(0, 12, (), generator=gen)),), generator=gen).tolist()
        rows.append(
            make_row(
                prompt=torch.randint(0, V, (10,), generator=gen).tolist(),
                output=output,
                eos=(int(logits[i].argmax()),),
                temperature=0.0 if i % 4 else 0.8,
                repetition_penalty=1.0 + rnd() if i % 2 else 1.0,
                presence_penalty=rnd() * 2,
                frequency_penalty=rnd(),
                logit_bias={int(torch.randint(0, V, (), generator=gen)): rnd() * 4 - 2},
                min_tokens=8 if i % 5 == 0 else 0,
            )
        )
    tokens = [r.token_id for r in Sampler(V, seed=0)(logits, rows)]
    for i, row in enumerate(rows):
        if row.params.temperature == 0:
            assert tokens[i] == int(torch.argmax(reference_processed(logits[i], row))), i


def test_greedy_accepts_bfloat16_logits():
    torch.manual_seed(2)
    logits = torch.randn(4, V).bfloat16()
    results = Sampler(V)(logits, [make_row(temperature=0.0) for _ in range(4)])
    assert [r.token_id for r in results] == logits.argmax(dim=-1).tolist()


def test_same_seed_gives_same_tokens_whatever_the_batch_neighbours_and_row_order():
    torch.manual_seed(3)
    vocab = 700  # > 64 top-p candidates and not a multiple of the draw's block size
    target_logits = torch.randn(vocab) * 0.5  # flat enough that draws really vary
    sampler = Sampler(vocab, seed=0)
    configs = [
        {"temperature": 0.9},
        {"temperature": 1.3, "top_p": 0.8},
        {"temperature": 0.7, "top_k": 50, "min_p": 0.05, "repetition_penalty": 1.2, "presence_penalty": 0.3},
    ]
    neighbours = [
        lambda: make_row(temperature=0.0),
        lambda: make_row(temperature=1.0, top_k=5),
        lambda: make_row(temperature=0.5, top_p=0.5, frequency_penalty=1.0, output=(4, 4, 5)),
        lambda: make_row(temperature=1.0, generator=sampler.make_generator(99)),
        lambda: make_row(temperature=2.0, mask=FixedMask(torch.arange(vocab) % 2 == 0), logit_bias={3: 5.0}),
    ]

    def run(params, position, n_neighbours):
        gen = sampler.make_generator(1234)
        out = []
        for step in range(12):
            rows = [f() for f in neighbours[:n_neighbours]]
            rows.insert(position, make_row(output=out, generator=gen, **params))
            logits = torch.randn(len(rows), vocab) * 3
            logits[position] = target_logits
            out.append(sampler(logits, rows)[position].token_id)
        return out

    for params in configs:
        alone = run(params, 0, 0)
        assert len(set(alone)) > 3  # it does sample
        assert run(params, 2, 5) == alone
        assert run(params, 5, 5) == alone
        assert run(params, 1, 3) == alone


def test_different_seeds_give_different_draws():
    sampler = Sampler(V)
    logits = torch.zeros(1, 1000)

    def sequence(gen):
        return [sampler(logits, [make_row(generator=gen)])[0].token_id for _ in range(20)]

    assert sequence(sampler.make_generator(1)) != sequence(sampler.make_generator(2))
    assert sequence(sampler.make_generator(1)) == sequence(sampler.make_generator(1))
    assert len({tuple(sequence(sampler.make_generator(None))) for _ in range(3)}) == 3


def test_draws_follow_the_distribution_across_blocks_and_the_tail():
    vocab = 1000  # 3 full blocks of 256 ids and a partial one
    logits = torch.full((vocab,), float("-inf"))
    logits[[3, 300, 999]] = torch.log(torch.tensor([0.2, 0.3, 0.5]))
    picks = draws(Sampler(vocab, seed=0), logits, lambda: make_row(), 4000)
    assert set(picks) == {3, 300, 999}
    assert picks.count(3) / 4000 == pytest.approx(0.2, abs=0.03)
    assert picks.count(300) / 4000 == pytest.approx(0.3, abs=0.03)


def test_top_k_one_is_greedy():
    torch.manual_seed(4)
    logits = torch.randn(50, V)
    results = Sampler(V, seed=0)(logits, [make_row(temperature=1.5, top_k=1) for _ in range(50)])
    assert [r.token_id for r in results] == logits.argmax(dim=-1).tolist()


def test_top_k_never_samples_outside_the_k_most_likely():
    logits = torch.linspace(3, 0, V)  # ids in order of likelihood
    picks = draws(Sampler(V, seed=0), logits, lambda: make_row(temperature=2.0, top_k=3), 400)
    assert set(picks) == {0, 1, 2}


def test_tiny_top_p_keeps_only_the_most_likely_token():
    logits = torch.tensor([0.0, 1.0, 0.5, 0.9])
    picks = draws(Sampler(4, seed=0), logits, lambda: make_row(top_p=1e-6), 200)
    assert set(picks) == {1}


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    # probs [0.5, 0.3, 0.15, 0.05]: top_p=0.7 keeps the first two, 0.81 the first three.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    sampler = Sampler(4, seed=0)
    assert set(draws(sampler, logits, lambda: make_row(top_p=0.7), 400)) == {0, 1}
    assert set(draws(sampler, logits, lambda: make_row(top_p=0.81), 400)) == {0, 1, 2}


def test_top_p_is_measured_after_top_k():
    # probs [0.4, 0.3, 0.2, 0.1]; top_k=3 renormalises to [4/9, 3/9, 2/9], where
    # 0.75 is reached after two ids (without top-k it would take three).
    logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    sampler = Sampler(4, seed=0)
    assert set(draws(sampler, logits, lambda: make_row(top_p=0.75), 400)) == {0, 1, 2}
    assert set(draws(sampler, logits, lambda: make_row(top_p=0.75, top_k=3), 400)) == {0, 1}


def test_a_nucleus_wider_than_the_candidates_is_still_exact():
    vocab = 2000
    logits = torch.linspace(0.0, -6.0, vocab)  # a slowly decaying tail: the 0.9 nucleus holds 760 ids
    probs = torch.softmax(logits, dim=-1)
    nucleus = int(((probs.cumsum(0) - probs) < 0.9).sum())
    assert 64 < nucleus < vocab
    picks = draws(Sampler(vocab, seed=0), logits, lambda: make_row(top_p=0.9), 2000)
    assert max(picks) < nucleus
    assert max(picks) > nucleus * 0.8


@pytest.mark.parametrize("scale", [8.0, 2.0, 0.0001])  # nucleus inside 64, inside 1024, needs the full sort
def test_top_p_threshold_matches_a_full_sort(scale):
    torch.manual_seed(5)
    weights = torch.softmax(torch.randn(6, 3000) * scale, dim=-1)
    top_p = torch.tensor([0.1, 0.5, 0.9, 0.95, 0.99, 1e-6])
    got = top_p_threshold(weights, top_p)
    ordered = weights.sort(dim=-1, descending=True).values
    mass_before = ordered.cumsum(dim=-1) - ordered
    n_keep = (mass_before < top_p.unsqueeze(1) * weights.sum(-1, keepdim=True)).sum(dim=-1)
    assert torch.equal(got.flatten(), ordered.gather(1, (n_keep - 1).unsqueeze(1)).flatten())


def test_min_p_drops_tokens_below_a_fraction_of_the_max():
    # probs [0.5, 0.3, 0.15, 0.05] with min_p=0.2: threshold 0.1 drops only the last.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    picks = draws(Sampler(4, seed=0), logits, lambda: make_row(min_p=0.2), 600)
    assert set(picks) == {0, 1, 2}


def test_temperature_sharpens_and_flattens_the_distribution():
    logits = torch.log(torch.tensor([0.6, 0.4]))
    sampler = Sampler(2, seed=0)
    n = 4000

    def share_of_first(temperature):
        return draws(sampler, logits, lambda: make_row(temperature=temperature), n).count(0) / n

    # p0 = 0.6^(1/T) / (0.6^(1/T) + 0.4^(1/T))
    assert share_of_first(1.0) == pytest.approx(0.6, abs=0.03)
    assert share_of_first(0.5) == pytest.approx(0.36 / 0.52, abs=0.03)
    assert share_of_first(2.0) == pytest.approx(0.6**0.5 / (0.6**0.5 + 0.4**0.5), abs=0.03)
    assert share_of_first(0.05) > 0.99


def test_logit_bias_forces_and_forbids_tokens():
    torch.manual_seed(6)
    logits = torch.randn(1, V)
    best, second = logits[0].topk(2).indices.tolist()
    sampler = Sampler(V, seed=0)
    assert sampler(logits, [make_row(temperature=0.0, logit_bias={17: 100.0})])[0].token_id == 17
    assert set(draws(sampler, logits[0], lambda: make_row(logit_bias={17: 100.0}), 50)) == {17}
    assert sampler(logits, [make_row(temperature=0.0, logit_bias={best: -100.0})])[0].token_id == second
    # Out-of-range ids are the API's business; here they are simply ignored.
    assert sampler(logits, [make_row(temperature=0.0, logit_bias={V + 5: 100.0})])[0].token_id == best


def test_min_tokens_blocks_eos_and_stop_ids_until_reached():
    logits = torch.tensor([[5.0, 0.0, 1.0, 0.0, 4.0, 0.0, 0.0, 3.0]])  # eos 0, stop id 4, then 7
    sampler = Sampler(8)

    def greedy(output):
        row = make_row(temperature=0.0, output=output, eos=(0,), stop_token_ids=(4,), min_tokens=2)
        return sampler(logits, [row])[0].token_id

    assert greedy([]) == 7
    assert greedy([3]) == 7
    assert greedy([3, 3]) == 0
    # A sampled row never draws them either.
    blocked = make_row(output=[5], eos=(0,), stop_token_ids=(4,), min_tokens=2)
    assert 0 not in draws(sampler, logits[0], lambda: blocked, 200)
    assert 4 not in draws(sampler, logits[0], lambda: blocked, 200)


def test_greedy_rows_under_min_tokens_alone_match_the_processed_argmax_in_a_mixed_batch():
    # Rows whose raw argmax is a blocked id, rows where it is not, a blocked id tied with the best: each must pick
    # what blocking EOS and the stop ids and then taking the argmax picks, beside sampled and penalised rows.
    torch.manual_seed(11)
    logits = torch.randn(24, V)
    rows = []
    for i in range(24):
        best = int(logits[i].argmax())
        if i % 4 == 0:
            eos = (best,)  # the raw choice is EOS: it must be passed over
        elif i % 4 == 1:
            eos = ((best + 1) % V,)
            logits[i, eos[0]] = logits[i, best]  # a blocked id tied with the best, after it or before it
        else:
            eos = ((best + 3) % V,)
        kind = i % 6
        rows.append(make_row(temperature=0.9 if kind == 5 else 0.0, output=[1] * (i % 3), eos=eos,
                             stop_token_ids=(int(logits[i].argsort()[-2]),) if i % 8 == 2 else (),
                             min_tokens=0 if kind == 4 else 2, repetition_penalty=1.3 if kind == 3 else 1.0,
                             prompt=[best, 2, 3]))
    tokens = [r.token_id for r in Sampler(V, seed=0)(logits, rows)]
    for i, row in enumerate(rows):
        if row.params.temperature == 0:
            assert tokens[i] == int(torch.argmax(reference_processed(logits[i], row))), i
        if len(row.output_token_ids) < row.params.min_tokens:
            assert tokens[i] not in (*row.eos_token_ids, *row.params.stop_token_ids), i


def test_token_mask_restricts_the_choice():
    torch.manual_seed(7)
    logits = torch.randn(1, V)
    allowed = torch.zeros(V, dtype=torch.bool)
    allowed[[3, 9, 20]] = True
    mask = FixedMask(allowed)
    sampler = Sampler(V, seed=0)
    greedy = sampler(logits, [make_row(temperature=0.0, mask=mask)])[0].token_id
    assert greedy == max([3, 9, 20], key=lambda t: logits[0, t])
    picks = draws(sampler, logits[0], lambda: make_row(temperature=3.0, mask=mask), 300)
    assert set(picks) == {3, 9, 20}
    assert mask.accepted == []  # accepting the final token is the engine's job
    # A mask of None means "no constraint now"; a list works as well as a tensor.
    assert sampler(logits, [make_row(temperature=0.0, mask=FixedMask(None))])[0].token_id == int(logits.argmax())
    assert sampler(logits, [make_row(temperature=0.0, mask=FixedMask(allowed.tolist()))])[0].token_id == greedy


def test_token_mask_allowing_nothing_falls_back_to_unmasked_logits(caplog):
    torch.manual_seed(8)
    logits = torch.randn(2, V)
    nothing = FixedMask(torch.zeros(V, dtype=torch.bool))
    rows = [make_row(temperature=0.0, mask=nothing), make_row(temperature=1.0, mask=nothing)]
    with caplog.at_level(logging.WARNING, logger="inference.engine.logits"):
        results = Sampler(V, seed=0)(logits, rows)
    assert results[0].token_id == int(logits[0].argmax())
    assert 0 <= results[1].token_id < V
    assert "allows no token" in caplog.text


def test_repetition_penalty_lowers_seen_tokens_of_either_sign():
    sampler = Sampler(4)
    positive = torch.tensor([[2.0, 1.9, -5.0, -5.0]])
    assert sampler(positive, [make_row(temperature=0.0, prompt=[0])])[0].token_id == 0
    assert sampler(positive, [make_row(temperature=0.0, prompt=[0], repetition_penalty=1.2)])[0].token_id == 1
    negative = torch.tensor([[-1.0, -1.1, -5.0, -5.0]])  # -1.0 * 1.2 = -1.2 < -1.1
    seen = make_row(temperature=0.0, prompt=[2], output=[0], repetition_penalty=1.2)
    assert sampler(negative, [seen])[0].token_id == 1


def test_repetition_penalty_follows_the_prompt_it_is_given_across_steps():
    sampler = Sampler(4)
    logits = torch.tensor([[2.0, 1.9, 1.8, -5.0]])
    prompt = [0]
    assert sampler(logits, [make_row(temperature=0.0, prompt=prompt, repetition_penalty=2.0)])[0].token_id == 1
    row = make_row(temperature=0.0, repetition_penalty=2.0)
    row.prompt_token_ids = prompt
    prompt.append(1)  # the same list object, grown
    assert sampler(logits, [row])[0].token_id == 2
    row.prompt_token_ids = [2]  # another sequence
    assert sampler(logits, [row])[0].token_id == 0


def test_presence_penalty_applies_to_generated_tokens_only():
    sampler = Sampler(4)
    logits = torch.tensor([[1.0, 0.8, 0.0, 0.0]])
    assert sampler(logits, [make_row(temperature=0.0, prompt=[0], presence_penalty=0.5)])[0].token_id == 0
    assert sampler(logits, [make_row(temperature=0.0, output=[0], presence_penalty=0.5)])[0].token_id == 1


def test_frequency_penalty_grows_with_the_count():
    sampler = Sampler(4)
    logits = torch.tensor([[1.0, 0.8, 0.0, 0.0]])
    assert sampler(logits, [make_row(temperature=0.0, output=[0], frequency_penalty=0.1)])[0].token_id == 0
    assert sampler(logits, [make_row(temperature=0.0, output=[0, 2, 0, 0], frequency_penalty=0.1)])[0].token_id == 1


def test_logprobs_come_from_the_raw_logits():
    torch.manual_seed(9)
    logits = torch.randn(4, V)
    rows = [
        make_row(temperature=0.7, logprobs=5, logit_bias={11: 3.0}, top_k=10),
        make_row(temperature=0.0, logprobs=0, repetition_penalty=1.5),
        make_row(logprobs=None),
        make_row(temperature=0.0, logprobs=20),
    ]
    results = Sampler(V, seed=0)(logits, rows)
    raw = torch.log_softmax(logits, dim=-1)
    for i in (0, 1, 3):
        assert results[i].logprob == pytest.approx(float(raw[i, results[i].token_id]), abs=1e-6)
    assert [t for t, _ in results[0].top] == raw[0].topk(5).indices.tolist()
    assert [lp for _, lp in results[0].top] == pytest.approx(raw[0].topk(5).values.tolist(), abs=1e-6)
    assert len(results[3].top) == 20
    assert [lp for _, lp in results[3].top] == sorted((lp for _, lp in results[3].top), reverse=True)
    assert results[1].top == []
    assert results[2].logprob is None and results[2].top == []


def test_padded_vocabulary_ids_are_never_chosen():
    vocab, padded = 50, 64
    logits = torch.randn(6, padded)
    logits[:, vocab:] = 100.0  # padded lm_head columns hold garbage
    rows = [
        make_row(temperature=0.0, logprobs=3),
        make_row(temperature=1.0),
        make_row(temperature=1.0, top_k=5, top_p=0.9),
        make_row(temperature=0.0, repetition_penalty=1.3, output=[1, 2]),
        make_row(temperature=1.0, logit_bias={vocab + 1: 100.0}, min_p=0.1),
        make_row(temperature=1.0, mask=FixedMask(torch.ones(padded, dtype=torch.bool))),
    ]
    sampler = Sampler(vocab, seed=0)
    for _ in range(20):
        results = sampler(logits, rows)
        assert all(0 <= r.token_id < vocab for r in results)
    assert results[0].token_id == int(logits[0, :vocab].argmax())
    assert all(t < vocab for t, _ in results[0].top)


def test_batch_shape_is_checked_and_an_empty_batch_is_fine():
    sampler = Sampler(V)
    assert sampler(torch.zeros(0, V), []) == []
    with pytest.raises(ValueError):
        sampler(torch.zeros(2, V), [make_row()])


def _benchmark(rows_n: int = 256, vocab: int = 49152, repeats: int = 9) -> None:
    """Micro-benchmark: python -m tests.engine.test_sampler"""
    torch.manual_seed(0)
    sampler = Sampler(vocab, seed=0)

    def peaked():
        # LLM-like: a few dozen plausible tokens carry almost all the mass.
        logits = torch.randn(rows_n, vocab)
        boost = torch.randint(0, vocab, (rows_n, 32))
        return logits.scatter_add_(1, boost, torch.rand(rows_n, 32) * 6 + 8)

    def mixed_rows():
        rows = []
        for i in range(rows_n):
            prompt = torch.randint(0, vocab, (512,)).tolist()
            output = torch.randint(0, vocab, (128,)).tolist()
            gen = sampler.make_generator(i)
            kind = i % 4
            if kind == 0:
                rows.append(make_row(prompt, output, gen, temperature=0.0))
            elif kind == 1:
                rows.append(make_row(prompt, output, gen, temperature=0.7, top_p=0.9, repetition_penalty=1.1))
            elif kind == 2:
                params = {"temperature": 0.8, "top_k": 50, "presence_penalty": 0.5, "frequency_penalty": 0.3}
                rows.append(make_row(prompt, output, gen, **params))
            else:
                params = {"temperature": 1.0, "min_p": 0.05, "logit_bias": {5: 2.0}, "min_tokens": 200}
                rows.append(make_row(prompt, output, gen, **params))
        return rows

    cases = [
        ("greedy only", peaked(), [make_row(temperature=0.0) for _ in range(rows_n)]),
        (
            "temperature only (seeded)",
            peaked(),
            [make_row(temperature=0.8, generator=sampler.make_generator(i)) for i in range(rows_n)],
        ),
        ("mixed with penalties", peaked(), mixed_rows()),
        ("mixed with penalties, flat logits", torch.randn(rows_n, vocab) * 2, mixed_rows()),
    ]
    print(f"{rows_n} rows x V={vocab}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, logits, rows in cases:
        sampler(logits, rows)  # warm-up: workspace, prompt id cache
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sampler(logits, rows)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        print(f"  {name:36s} min {times[0]:7.1f} ms   median {times[len(times) // 2]:7.1f} ms")


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1:  # thread count: on a shared machine 1 thread gives steadier numbers
        torch.set_num_threads(int(sys.argv[1]))
    _benchmark()
