"""Weight-only int8 and int4 linear layers: what they compute, and when they hand over to a dense matmul."""
import pytest
import torch
import torch.nn.functional as F

from inference.engine.linear import INT4_GROUP, DenseLinear, Int4Linear, Int8Linear, make_linear


def q4_grid_weights(n, k, seed=0):
    """Weights that lie on a Q4_1 grid (16 levels, a scale and a minimum per group of 32), as a GGUF holds them."""
    gen = torch.Generator().manual_seed(seed)
    groups = k // INT4_GROUP
    low = torch.randn(n, groups, 1, generator=gen) * 0.1
    step = torch.rand(n, groups, 1, generator=gen) * 0.02 + 0.001
    levels = torch.randint(0, 16, (n, groups, INT4_GROUP), generator=gen).float()
    levels[..., 0], levels[..., 1] = 0, 15  # every group spans its whole grid, as quantizing it would
    return (low + levels * step).view(n, k)


def test_int4_gives_back_weights_that_lie_on_a_q4_grid():
    w = q4_grid_weights(64, 128)
    layer = Int4Linear(w, dense_above=0)
    torch.testing.assert_close(layer.dense, w, atol=1e-6, rtol=0)
    x = torch.randn(3, 128)
    torch.testing.assert_close(layer(x[:0]), F.linear(x[:0], w))  # zero rows: still well-formed
    torch.testing.assert_close(Int4Linear(w)(x), F.linear(x, w), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", [Int8Linear, Int4Linear])
def test_quantized_layers_stay_close_to_the_dense_layer_in_bfloat16(kind):
    gen = torch.Generator().manual_seed(1)
    w = (torch.randn(96, 256, generator=gen) * 0.05).to(torch.bfloat16)
    bias = torch.randn(96, generator=gen).to(torch.bfloat16)
    x = torch.randn(4, 256, generator=gen).to(torch.bfloat16)
    expected = F.linear(x.float(), w.float(), bias.float())
    got = kind(w, bias)(x).float()
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.parametrize("kind", [Int8Linear, Int4Linear])
def test_many_rows_go_through_a_dense_copy_of_the_same_quantized_weights(kind):
    w = torch.randn(64, 128)
    layer = kind(w, dense_above=4)
    few, many = torch.randn(4, 128), torch.randn(9, 128)
    torch.testing.assert_close(layer(many), F.linear(many, layer.dense), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(few), F.linear(few, layer.dense), atol=1e-4, rtol=1e-4)


def test_a_layer_the_int4_kernel_cannot_take_falls_back_to_int8():
    assert isinstance(make_linear(torch.randn(16, 48), None, "int4"), Int8Linear)  # 48: not whole groups of 32
    assert isinstance(make_linear(torch.randn(20, 64), None, "int4"), Int8Linear)  # packs outputs by 16s
    assert isinstance(make_linear(torch.randn(16, 64), None, "int4"), Int4Linear)
    assert isinstance(make_linear(torch.randn(16, 64), None, "none"), DenseLinear)
