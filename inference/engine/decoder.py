"""A lean forward for Llama-family decoders (Llama, Mistral, Qwen2, Qwen3) over transformers' weights.

The same arithmetic as transformers' modules, in the same order and dtypes
(RMSNorm in float32, rotary as `x * cos + rotate_half(x) * sin`), but for a
packed step `[T]` and with less per-op overhead: q/k/v and gate/up run as one
matmul each, rotary tables are computed once for every position, and there is
no module dispatch, mask building or output bookkeeping per layer. On the CPU
that overhead was most of a one-sequence decode step.

Other architectures run transformers' own modules (see model_runner.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import Attention, StepMetadata
from .linear import make_linear

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# Rotary variants whose table depends on the position only (not on the sequence's length).
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def unsupported_reason(model) -> str | None:
    """Why the lean decoder cannot run this model (None: it can)."""
    config = model.config.get_text_config()
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {config.model_type!r}"
    rope = getattr(getattr(model.get_decoder(), "rotary_emb", None), "rope_type", None)
    if rope not in STATIC_ROPE_TYPES:
        return f"rotary type {rope!r}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # transformers' LlamaRMSNorm, step for step.
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _rotate_(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> None:
    """Rotary embedding in place: x * cos + rotate_half(x) * sin, transformers' products exactly.

    rotate_half(x) * sin == roll(x, D/2) * signed_sin, where signed_sin is sin with its first half
    negated: the same products (negation is exact), in four ops instead of seven.
    x [T, H, D] (a view into the step's q/k/v output); cos, signed_sin [T, 1, D].
    """
    rotated = x.roll(x.shape[-1] // 2, dims=-1).mul_(signed_sin)
    x.mul_(cos).add_(rotated)


def fused_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, weight.shape, weight, eps)


class _OneRowRMSNorm:
    """RMSNorm of one row through layer_norm, for bf16 on the CPU, where F.rms_norm is a composite of five ops and
    layer_norm one kernel (8 against 14 us for a row of 576, 61 times a step): the layer norm of [x, -x] has
    mean 0 and variance mean(x^2), so its first half is x's RMS norm (the same bf16 values as F.rms_norm but
    for a last-bit difference in about one in 100,000). Other shapes go to F.rms_norm."""

    def __init__(self, weights: list[torch.Tensor]):
        self._doubled = {id(w): torch.cat([w, w]) for w in weights}

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        doubled = self._doubled.get(id(weight))
        if doubled is None or x.dim() != 2 or x.shape[0] != 1:
            return F.rms_norm(x, weight.shape, weight, eps)
        return F.layer_norm(torch.cat([x, x.neg()], -1), doubled.shape, doubled, None, eps)[:, :x.shape[1]]


class _Layer:
    __slots__ = ("in_norm", "post_norm", "qkv", "q_norm", "k_norm", "o", "gate_up", "down")


class LeanDecoder:
    def __init__(self, model, attention: Attention, *, quantization: str = "none", max_positions: int,
                 dense_above: int | None = None, wide_dtype: torch.dtype | None = None,
                 head_dtype: torch.dtype | None = None):
        """dense_above: quantized layers multiply steps of more rows by a dense copy of their weights;
        wide_dtype: that copy's dtype when it is not the model's (float32 where the CPU's float32 matmuls beat
        its bf16 ones, wide_steps.py): such steps then run in it from the embedding to the final norm;
        head_dtype: that of an int4 output layer's dense copy (linear.RefinedHead; precision.dense_copy_dtype)."""
        config = model.config.get_text_config()
        decoder = model.get_decoder()
        self.attention = attention
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        first = decoder.layers[0].self_attn
        self.head_dim = first.head_dim
        self.scale = first.scaling
        self.eps = decoder.layers[0].input_layernorm.variance_epsilon
        self.intermediate = config.intermediate_size
        self.embed = decoder.embed_tokens.weight  # [V, H]
        self.norm = decoder.norm.weight
        self.dtype = self.embed.dtype

        def linear(*modules, output=False):
            weight = torch.cat([m.weight for m in modules]) if len(modules) > 1 else modules[0].weight
            biases = [m.bias for m in modules]
            bias = None if biases[0] is None else torch.cat(biases) if len(biases) > 1 else biases[0]
            return make_linear(weight.detach(), None if bias is None else bias.detach(), quantization, dense_above,
                               output=output, dense_dtype=wide_dtype, head_dtype=head_dtype)

        self.layers = []
        for hf in decoder.layers:
            attn, mlp = hf.self_attn, hf.mlp
            layer = _Layer()
            layer.in_norm = hf.input_layernorm.weight
            layer.post_norm = hf.post_attention_layernorm.weight
            layer.qkv = linear(attn.q_proj, attn.k_proj, attn.v_proj)
            layer.q_norm = attn.q_norm.weight if hasattr(attn, "q_norm") else None
            layer.k_norm = attn.k_norm.weight if hasattr(attn, "k_norm") else None
            layer.o = linear(attn.o_proj)
            layer.gate_up = linear(mlp.gate_proj, mlp.up_proj)
            layer.down = linear(mlp.down_proj)
            self.layers.append(layer)
        head = model.get_output_embeddings()
        self.lm_head = linear(head, output=True)  # int4: a RefinedHead (see linear.py)
        self.vocab_size = int(head.weight.shape[0])

        # Rotary tables for every position, from transformers' own rotary module.
        positions = torch.arange(max_positions, device=self.embed.device).unsqueeze(0)
        cos, sin = decoder.rotary_emb(self.embed[:1].unsqueeze(0), positions)  # [1, P, D] each
        half = self.head_dim // 2
        self.cos, self.signed_sin = cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
        self.wide_above = None  # steps of more tokens run in wide_dtype
        if wide_dtype is not None and wide_dtype != self.dtype and dense_above is not None and quantization != "none":
            self.wide_above, self.wide_dtype = dense_above, wide_dtype
            # The rotary tables as transformers computes them before casting them to the model's dtype.
            cos, sin = decoder.rotary_emb(self.embed[:1].unsqueeze(0).to(wide_dtype), positions)
            self.wide_cos = cos[0].to(wide_dtype)
            self.wide_signed_sin = torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1).to(wide_dtype)
            norms = [w for layer in self.layers for w in (layer.in_norm, layer.post_norm, layer.q_norm, layer.k_norm)
                     if w is not None] + [self.norm]
            self.wide_norms = {id(w): w.to(wide_dtype) for w in norms}
        # transformers' RMSNorm step for step where its bits matter (GPU runs are compared with it in
        # bf16); on the CPU one fused op, which is the same in float32 and rounds once less in bf16 (where
        # single rows, every decode step's, go through layer_norm's kernel: _OneRowRMSNorm).
        cpu = self.embed.device.type == "cpu"
        if cpu and self.dtype == torch.bfloat16:
            self.norm_fn = _OneRowRMSNorm([w for layer in self.layers for w in (layer.in_norm, layer.post_norm)]
                                          + [self.norm])
        else:
            self.norm_fn = fused_rms_norm if cpu or self.dtype == torch.float32 else rms_norm

        # The transformers modules' own copies of the weights are no longer needed.
        decoder.layers = torch.nn.ModuleList()

    @property
    def dense_above(self) -> int | None:
        """Steps of more rows multiply by the quantized layers' dense copies (None: no such copies)."""
        return self.layers[0].qkv.dense_above if hasattr(self.layers[0].qkv, "dense_above") else None

    def set_dense_above(self, rows: int) -> None:
        """Move where steps switch from the quantized kernels to the dense copies (wide steps start there too)."""
        for layer in self.layers:
            for linear in (layer.qkv, layer.o, layer.gate_up, layer.down):
                if getattr(linear, "dense_above", None) is not None:
                    linear.dense_above = rows
        if self.wide_above is not None:
            self.wide_above = rows

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: StepMetadata, *,
                attention=None, norm=None) -> torch.Tensor:
        """input_ids, positions [T] -> hidden states [T, H] after the final norm.

        attention, norm: other kernels for the same arithmetic (compiled_decode.py traces the forward with its own).
        """
        hq, hkv, d, eps = self.num_heads, self.num_kv_heads, self.head_dim, self.eps
        attention, norm = attention or self.attention, norm or self.norm_fn
        tokens = input_ids.shape[0]
        h = F.embedding(input_ids, self.embed)  # [T, H]
        wide = self.wide_above is not None and tokens > self.wide_above
        if wide:
            h, cos, sin, norm = h.to(self.wide_dtype), self.wide_cos, self.wide_signed_sin, self._wide_norm
        else:
            cos, sin = self.cos, self.signed_sin
        cos = cos.index_select(0, positions).unsqueeze(1)  # [T, 1, D]
        sin = sin.index_select(0, positions).unsqueeze(1)
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(norm(h, layer.in_norm, eps)).view(tokens, hq + 2 * hkv, d)  # [T, Hq + 2 Hkv, D]
            if layer.q_norm is not None:  # Qwen3: per-head norms before the rotary embedding
                qkv[:, :hq] = norm(qkv[:, :hq], layer.q_norm, eps)
                qkv[:, hq:hq + hkv] = norm(qkv[:, hq:hq + hkv], layer.k_norm, eps)
            _rotate_(qkv[:, :hq + hkv], cos, sin)  # q and k together
            out = attention(qkv[:, :hq], qkv[:, hq:].view(tokens, 2, hkv, d), i, meta, self.scale)
            h = h + layer.o(out.reshape(tokens, hq * d))
            gate_up = layer.gate_up(norm(h, layer.post_norm, eps))  # [T, 2I]
            h = h + layer.down(F.silu(gate_up[:, :self.intermediate]) * gate_up[:, self.intermediate:])
        out = norm(h, self.norm, eps)
        return out.to(self.dtype) if wide else out

    def _wide_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        weight = self.wide_norms[id(weight)]
        return F.rms_norm(x, weight.shape, weight, eps)

    def logits(self, hidden: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """[S, V]; exact: every token's logit from the dense weights (an int4 RefinedHead refines only its most
        likely ones, enough to sample, not to score a given token)."""
        if exact and hasattr(self.lm_head, "exact"):
            return self.lm_head.exact(hidden)
        if exact and hasattr(self.lm_head, "weight"):
            return F.linear(hidden, self.lm_head.weight, getattr(self.lm_head, "bias", None))
        return self.lm_head(hidden)
