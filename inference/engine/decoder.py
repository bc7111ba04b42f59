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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [T, H, D]; cos, sin [T, 1, D]
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class _Layer:
    __slots__ = ("in_norm", "post_norm", "qkv", "q_norm", "k_norm", "o", "gate_up", "down")


class LeanDecoder:
    def __init__(self, model, attention: Attention, *, quantization: str = "none", max_positions: int,
                 dense_above: int | None = None):
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

        def linear(*modules):
            weight = torch.cat([m.weight for m in modules]) if len(modules) > 1 else modules[0].weight
            biases = [m.bias for m in modules]
            bias = None if biases[0] is None else torch.cat(biases) if len(biases) > 1 else biases[0]
            return make_linear(weight.detach(), None if bias is None else bias.detach(), quantization, dense_above)

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
        self.lm_head = linear(head)
        self.vocab_size = int(head.weight.shape[0])

        # Rotary tables for every position, from transformers' own rotary module.
        positions = torch.arange(max_positions, device=self.embed.device).unsqueeze(0)
        cos, sin = decoder.rotary_emb(self.embed[:1].unsqueeze(0), positions)  # [1, P, D] each
        self.cos, self.sin = cos[0], sin[0]

        # The transformers modules' own copies of the weights are no longer needed.
        decoder.layers = torch.nn.ModuleList()

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: StepMetadata) -> torch.Tensor:
        """input_ids, positions [T] -> hidden states [T, H] after the final norm."""
        hq, hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        tokens = input_ids.shape[0]
        cos = self.cos.index_select(0, positions).unsqueeze(1)  # [T, 1, D]
        sin = self.sin.index_select(0, positions).unsqueeze(1)
        h = F.embedding(input_ids, self.embed)  # [T, H]
        for i, layer in enumerate(self.layers):
            x = rms_norm(h, layer.in_norm, self.eps)
            qkv = layer.qkv(x)  # [T, (Hq + 2 Hkv) D]
            q = qkv[:, :hq * d].view(tokens, hq, d)
            k = qkv[:, hq * d:(hq + hkv) * d].view(tokens, hkv, d)
            v = qkv[:, (hq + hkv) * d:].view(tokens, hkv, d)
            if layer.q_norm is not None:
                q = rms_norm(q, layer.q_norm, self.eps)
                k = rms_norm(k, layer.k_norm, self.eps)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            out = self.attention(q, k, v, i, meta, self.scale)  # [T, Hq, D]
            h = h + layer.o(out.reshape(tokens, hq * d))
            x = rms_norm(h, layer.post_norm, self.eps)
            gate_up = layer.gate_up(x)  # [T, 2I]
            h = h + layer.down(F.silu(gate_up[:, :self.intermediate]) * gate_up[:, self.intermediate:])
        return rms_norm(h, self.norm, self.eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)  # [S, V]
