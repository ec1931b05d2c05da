"""The Ablate language model in plain PyTorch, for racing only (docs/performance.md).

Covers the configurations bench/race.py runs: pre-norm RMSNorm, softmax attention through
F.scaled_dot_product_attention (causal), RoPE (rotate-half), SwiGLU, untied LM head, and the
attention output gate `conditional` (headwise or elementwise). Parameter names, shapes and
formulas are Ablate's (docs/model.md), so an Ablate state dict loads as is; the initial weights
come from `ablate bench --dump`, not from this file's initialisation.

Written the way a PyTorch user would write it: RoPE tables cached per sequence length.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Rope:
    """Rotate-half RoPE: the pair (x_i, x_{i+E/2}) turns by s * base^(-2i/E)."""

    def __init__(self, base):
        self.base = base
        self.cache = {}

    def tables(self, S, E, like):
        key = (S, E, like.dtype, like.device)
        if key not in self.cache:
            inv = self.base ** (-torch.arange(0, E, 2, dtype=torch.float64, device=like.device) / E)
            angles = torch.outer(torch.arange(S, dtype=torch.float64, device=like.device), inv)
            cos = torch.cat([angles.cos(), angles.cos()], -1).to(like.dtype)
            sin = torch.cat([angles.sin(), angles.sin()], -1).to(like.dtype)
            self.cache[key] = (cos, sin)
        return self.cache[key]

    def rotate(self, x):  # (B, H, S, E)
        S, E = x.shape[-2], x.shape[-1]
        cos, sin = self.tables(S, E, x)
        x1, x2 = x[..., : E // 2], x[..., E // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(nn.Module):
    def __init__(self, C, H, E, gate, gate_per_head):
        super().__init__()
        self.H, self.E, self.gate_per_head = H, E, gate_per_head
        self.wq = nn.Linear(C, H * E, bias=False)
        self.wk = nn.Linear(C, H * E, bias=False)
        self.wv = nn.Linear(C, H * E, bias=False)
        self.wo = nn.Linear(H * E, C, bias=False)
        self.w_gate = nn.Linear(C, H * gate_per_head, bias=False) if gate == "conditional" else None

    def forward(self, x, rope):
        B, S, _ = x.shape
        H, E = self.H, self.E
        q = self.wq(x).view(B, S, H, E).transpose(1, 2)
        k = self.wk(x).view(B, S, H, E).transpose(1, 2)
        v = self.wv(x).view(B, S, H, E).transpose(1, 2)
        q, k = rope.rotate(q), rope.rotate(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)  # (B, S, H, E)
        if self.w_gate is not None:
            g = torch.sigmoid(self.w_gate(x))
            out = out * g.view(B, S, H, self.gate_per_head)
        return self.wo(out.reshape(B, S, H * E))


class SwiGlu(nn.Module):
    def __init__(self, C, F_):
        super().__init__()
        self.w_gate = nn.Linear(C, F_, bias=False)
        self.w_up = nn.Linear(C, F_, bias=False)
        self.w_down = nn.Linear(F_, C, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, m):
        super().__init__()
        C, E = m["d_model"], m["head_dim"]
        gate = m["attention"]["gate"]
        self.attn_norm = RMSNorm(C, m["norm"]["eps"])
        self.attn = Attention(C, m["n_heads"], E, gate["kind"], E if gate["granularity"] == "elementwise" else 1)
        self.ffn_norm = RMSNorm(C, m["norm"]["eps"])
        self.ffn = SwiGlu(C, m["ffn"]["hidden"])

    def forward(self, x, rope):
        x = x + self.attn(self.attn_norm(x), rope)
        return x + self.ffn(self.ffn_norm(x))


class LanguageModel(nn.Module):
    def __init__(self, m):
        super().__init__()
        check(m)
        self.embed = nn.Embedding(m["vocab"], m["d_model"])
        self.layers = nn.ModuleList(Block(m) for _ in range(m["n_layers"]))
        self.final_norm = RMSNorm(m["d_model"], m["norm"]["eps"])
        self.lm_head = nn.Linear(m["d_model"], m["vocab"], bias=False)
        self.rope = Rope(m["position"]["base"])

    def forward(self, tokens):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, self.rope)
        return self.lm_head(self.final_norm(x))


def check(m):
    """Refuses configurations this reference does not implement."""
    want = {
        ("norm", "type"): "rmsnorm", ("norm", "placement"): "pre", ("norm", "qk_norm"): False,
        ("attention", "variant"): "softmax", ("ffn", "type"): "swiglu", ("position", "type"): "rope",
    }
    for (a, b), v in want.items():
        if m[a][b] != v:
            raise SystemExit(f"reference: model.{a}.{b} = {m[a][b]!r} is not implemented (only {v!r})")
    if m["attention"]["gate"]["kind"] not in ("none", "conditional"):
        raise SystemExit("reference: only gate kinds none and conditional are implemented")
    if m["tie_embeddings"] or m["n_kv_heads"] not in (0, m["n_heads"]):
        raise SystemExit("reference: tied embeddings and grouped queries are not implemented")


def decays(name, p):
    """Ablate's weight-decay split (LanguageModelImpl::decays)."""
    return p.dim() >= 2 and not name.endswith("_bias")
