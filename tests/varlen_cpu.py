"""A CPU kernel for torch's `varlen_attn`, whose FlashAttention-2 kernels exist only in the CUDA build, so that the
packed attention's varlen code path runs on CPU in tests: the same public call with the collator's cu_seqlens and
max_seqlen, torch's custom op, its fake (meta) implementation and its registered autograd, down to the kernel,
which here is a plain per-sequence softmax attention (forward) and its gradient (backward). What a CPU run cannot
show: the FlashAttention kernels' own numerics and layout rules (bf16/fp16 only, head size, strides); the GPU check
(benchmarks/gpu_step.py) compares the real kernels with the padded model on a GPU.

The kernel checks the contract the CUDA kernels rely on and do not check: cu_seqlens int32, non-decreasing, ending
at the packed row's length, and max_seqlen at least the longest sequence."""

from __future__ import annotations

import math

import torch

from ner_accel.modeling import unpadding

CALLS = {"forward": 0, "backward": 0}  # kernel calls since import: a test asserts that the varlen path ran


def _sequences(cu_seqlens: torch.Tensor, tokens: int, longest: int) -> list[tuple[int, int]]:
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.dim() == 1, cu_seqlens
    bounds = cu_seqlens.tolist()
    assert bounds[0] == 0 and bounds[-1] == tokens, (bounds, tokens)
    assert all(b >= a for a, b in zip(bounds, bounds[1:])), bounds
    assert max(b - a for a, b in zip(bounds, bounds[1:])) <= longest, (bounds, longest)
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _heads(x: torch.Tensor, start: int, end: int) -> torch.Tensor:
    return x[start:end].transpose(0, 1).float()  # (tokens, heads, dim) -> (heads, tokens, dim), in fp32


def varlen_forward(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, scale=None, *rest):
    assert not is_causal and cu_seq_k is not None and torch.equal(cu_seq_q, cu_seq_k) and max_q == max_k
    assert query.stride(-1) == 1 and query.shape == key.shape == value.shape
    CALLS["forward"] += 1
    scale = scale if scale is not None else 1 / math.sqrt(query.shape[-1])
    out = torch.zeros_like(query)
    lse = torch.full((query.shape[1], query.shape[0]), -math.inf, dtype=torch.float32)
    for start, end in _sequences(cu_seq_q, query.shape[0], max_q):
        q, k, v = (_heads(x, start, end) for x in (query, key, value))
        scores = q @ k.transpose(-1, -2) * scale
        lse[:, start:end] = scores.logsumexp(dim=-1)
        out[start:end] = (scores.softmax(dim=-1) @ v).transpose(0, 1).to(query.dtype)
    return out, lse, torch.zeros(2, dtype=torch.uint64)


def varlen_backward(grad, query, key, value, out, lse, cu_seq_q, cu_seq_k, max_q, max_k, is_causal, rng, scale=None,
                    window_size=None):  # fmt: skip
    CALLS["backward"] += 1
    scale = scale if scale is not None else 1 / math.sqrt(query.shape[-1])
    dq, dk, dv = (torch.zeros_like(x) for x in (query, key, value))
    for start, end in _sequences(cu_seq_q, query.shape[0], max_q):
        q, k, v, g = (_heads(x, start, end) for x in (query, key, value, grad))
        p = (q @ k.transpose(-1, -2) * scale).softmax(dim=-1)
        o = p @ v
        ds = p * (g @ v.transpose(-1, -2) - (g * o).sum(dim=-1, keepdim=True))
        dq[start:end] = (ds @ k * scale).transpose(0, 1).to(query.dtype)
        dk[start:end] = (ds.transpose(-1, -2) @ q * scale).transpose(0, 1).to(key.dtype)
        dv[start:end] = (p.transpose(-1, -2) @ g).transpose(0, 1).to(value.dtype)
    return dq, dk, dv


def enable(monkeypatch) -> dict:
    """varlen_attn runs on CPU (fp32 and bf16) for this test: the kernels registered, the gate opened; returns CALLS.
    The registration stays for the process (torch has no unregister), harmless: without it varlen_attn fails on CPU."""
    assert unpadding.varlen_attn is not None, "this torch has no torch.nn.attention.varlen"
    torch.library.register_kernel("torch_attn::_varlen_attn", "cpu", varlen_forward)
    torch.library.register_kernel("torch_attn::_varlen_attn_backward", "cpu", varlen_backward)
    monkeypatch.setitem(unpadding.VARLEN_KERNELS, "cpu", (torch.float32, torch.bfloat16))
    return CALLS
