"""Paged attention: every backend reads the blocks where they lie and agrees with plain attention.

The reference is SDPA over each sequence's keys and values laid out contiguously;
the cache holds the same keys scattered over shuffled blocks. Decodes of uneven
lengths, prefill chunks that start after a cached prefix, and query tiles that
hold several sequences are all covered.
"""
import random

import pytest
import torch
import torch.nn.functional as F

from inference.engine.attention import Attention, StepMetadata
from inference.engine.block_masks import PrefillMaskBuilder, PrefillSegment, decode_block_mask
from inference.engine.kv_cache import KVCache

HQ, HKV, D, BS, NUM_BLOCKS = 4, 2, 16, 16, 48
SCALE = D ** -0.5
BACKENDS = ["sdpa", "inductor", "flex"]


@pytest.fixture(scope="module")
def cache():
    return KVCache(num_layers=1, num_blocks=NUM_BLOCKS, block_size=BS, num_kv_heads=HKV, head_dim=D,
                   dtype=torch.float32, device=torch.device("cpu"))


class World:
    """Sequences with known contiguous keys/values, scattered over random blocks of the cache."""

    def __init__(self, cache, lengths, seed):
        gen = torch.Generator().manual_seed(seed)
        blocks = list(range(NUM_BLOCKS))
        random.Random(seed).shuffle(blocks)
        self.cache, self.seqs = cache, []
        for length in lengths:
            count = -(-length // BS)
            table, blocks = blocks[:count], blocks[count:]
            k = torch.randn(length, HKV, D, generator=gen)
            v = torch.randn(length, HKV, D, generator=gen)
            self.seqs.append((table, k, v))

    def slots(self, table, positions):
        return torch.tensor([table[p // BS] * BS + p % BS for p in positions], dtype=torch.long)

    def store(self, upto):
        """Write each sequence's keys/values of positions [0, upto[i]) into the cache."""
        for (table, k, v), n in zip(self.seqs, upto):
            slots = self.slots(table, range(n))
            self.cache.k[0][:, slots] = k[:n].transpose(0, 1)
            self.cache.v[0][:, slots] = v[:n].transpose(0, 1)


def reference(q, k, v, first_position):
    """q [n, Hq, D] at positions first_position.. attending causally to k, v [L, Hkv, D]."""
    n, length = q.shape[0], k.shape[0]
    rows = torch.arange(n).unsqueeze(1) + first_position
    mask = torch.arange(length).unsqueeze(0) <= rows  # [n, L]
    out = F.scaled_dot_product_attention(q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0),
                                         v.transpose(0, 1).unsqueeze(0), attn_mask=mask, scale=SCALE,
                                         enable_gqa=True)
    return out[0].transpose(0, 1)


def decode_meta(world, lengths, backend):
    tables = torch.full((len(lengths), max(len(t) for t, _, _ in world.seqs) + 1), NUM_BLOCKS)
    for i, (table, _, _) in enumerate(world.seqs):
        tables[i, :len(table)] = torch.tensor(table)
    lens = torch.tensor(lengths)
    slots = torch.cat([world.slots(t, [n - 1]) for (t, _, _), n in zip(world.seqs, lengths)])
    meta = StepMetadata(slot_mapping=slots, num_decode=len(lengths), decode_tables=tables, decode_lens=lens)
    if backend == "flex":
        meta.decode_mask = decode_block_mask(tables, lens, block_size=BS, num_slots=world.cache.num_slots,
                                             pad_width=True)
    return meta


@pytest.mark.parametrize("backend", BACKENDS)
def test_decodes_of_uneven_lengths_read_their_own_blocks(cache, backend):
    lengths = [1, 17, 40, 64, 100]
    world = World(cache, lengths, seed=1)
    world.store([n - 1 for n in lengths])  # the cache holds everything but this step's token
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(len(lengths), HQ, D, generator=gen)
    new_k = torch.stack([k[n - 1] for (_, k, _), n in zip(world.seqs, lengths)])
    new_v = torch.stack([v[n - 1] for (_, _, v), n in zip(world.seqs, lengths)])
    out = Attention(backend, cache)(q, torch.stack((new_k, new_v), 1), 0, decode_meta(world, lengths, backend), SCALE)
    for i, ((_, k, v), n) in enumerate(zip(world.seqs, lengths)):
        expected = reference(q[i:i + 1], k[:n], v[:n], n - 1)
        torch.testing.assert_close(out[i:i + 1], expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prefill_chunks_of_several_sequences_after_cached_prefixes_are_one_call(cache, backend):
    # (cached prefix, chunk) per sequence: fresh prompts, continued chunks, a one-block prefix hit,
    # and short chunks that share a query tile.
    plan = [(0, 40), (16, 9), (48, 30), (0, 3), (5, 1), (32, 60)]
    world = World(cache, [s + n for s, n in plan], seed=3)
    world.store([s for s, _ in plan])
    gen = torch.Generator().manual_seed(4)
    total = sum(n for _, n in plan)
    q = torch.randn(total, HQ, D, generator=gen)
    new_k = torch.cat([k[s:s + n] for (_, k, _), (s, n) in zip(world.seqs, plan)])
    new_v = torch.cat([v[s:s + n] for (_, _, v), (s, n) in zip(world.seqs, plan)])
    slots = torch.cat([world.slots(t, range(s, s + n)) for (t, _, _), (s, n) in zip(world.seqs, plan)])
    segments = [PrefillSegment(table=t, start=s, num=n) for (t, _, _), (s, n) in zip(world.seqs, plan)]
    meta = StepMetadata(slot_mapping=slots, num_decode=0, prefills=segments)
    if backend != "sdpa":
        builder = PrefillMaskBuilder(num_blocks=NUM_BLOCKS, block_size=BS, num_slots=cache.num_slots, q_block=32,
                                     max_tokens=256, max_seqs=8, max_table=16, device=torch.device("cpu"),
                                     pad_width=True)
        meta.prefill_mask, meta.prefill_rows = builder.build(segments)
    out = Attention(backend, cache)(q, torch.stack((new_k, new_v), 1), 0, meta, SCALE)
    row = 0
    for (_, k, v), (start, n) in zip(world.seqs, plan):
        expected = reference(q[row:row + n], k[:start + n], v[:start + n], start)
        torch.testing.assert_close(out[row:row + n], expected, atol=2e-5, rtol=1e-4)
        row += n


def test_a_step_with_decodes_and_prefills_writes_every_new_key_once(cache):
    plan = [(10, 1), (20, 1), (0, 25)]  # two decodes, one fresh prefill
    world = World(cache, [s + n for s, n in plan], seed=5)
    world.store([s for s, _ in plan])
    total = sum(n for _, n in plan)
    gen = torch.Generator().manual_seed(6)
    q = torch.randn(total, HQ, D, generator=gen)
    new_k = torch.cat([k[s:s + n] for (_, k, _), (s, n) in zip(world.seqs, plan)])
    new_v = torch.cat([v[s:s + n] for (_, _, v), (s, n) in zip(world.seqs, plan)])
    decodes = World.__new__(World)  # the two decoding sequences alone
    decodes.cache, decodes.seqs = cache, world.seqs[:2]
    meta = decode_meta(decodes, [11, 21], "inductor")
    meta.slot_mapping = torch.cat([world.slots(t, range(s, s + n)) for (t, _, _), (s, n) in zip(world.seqs, plan)])
    builder = PrefillMaskBuilder(num_blocks=NUM_BLOCKS, block_size=BS, num_slots=cache.num_slots, q_block=32,
                                 max_tokens=256, max_seqs=8, max_table=16, device=torch.device("cpu"), pad_width=True)
    meta.prefills = [PrefillSegment(table=world.seqs[2][0], start=0, num=25)]
    meta.prefill_mask, meta.prefill_rows = builder.build(meta.prefills)
    out = Attention("inductor", cache)(q, torch.stack((new_k, new_v), 1), 0, meta, SCALE)
    row = 0
    for (table, k, v), (start, n) in zip(world.seqs, plan):
        torch.testing.assert_close(out[row:row + n], reference(q[row:row + n], k[:start + n], v[:start + n], start),
                                   atol=2e-5, rtol=1e-4)
        stored = cache.k[0][:, world.slots(table, range(start + n))].transpose(0, 1)
        torch.testing.assert_close(stored, k[:start + n])
        row += n
