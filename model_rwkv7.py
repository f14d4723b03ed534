"""
RWKV-7 "Goose" (x070) in one file: time mixing with the generalized-delta-rule WKV, channel mixing, the value
residual (v_first), recurrent O(1)-per-token inference, the official training initialisation and official `.pth`
checkpoint loading. Parameter names and shapes are BlinkDL's (RWKV-LM/RWKV-v7), so official state dicts load with no
renaming.

References: Peng et al. 2025, "RWKV-7 Goose with Expressive Dynamic State Evolution" (arXiv:2503.14456); the
official code BlinkDL/RWKV-LM RWKV-v7 (rwkv_v7_demo.py, rwkv_v7_demo_rnn.py, train_temp/src/model.py); the chunked
WKV form of flash-linear-attention (fla/ops/generalized_delta_rule/dplr). Equations are numbered as in this project's
spec (shared/design/rwkv7.md, sections 4-7).

WKV implementations, one interface (`wkv(r, w, k, v, a, b, state, impl)`):
    naive    the per-timestep recurrence (spec 4.3): the readable reference
    chunked  the exact chunked (WY) form (spec 6) in plain PyTorch matmuls, fp32 state; torch.compile friendly

No import of other project files: copy this file out and it works.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from model_llama import sample_next  # the token sampler: the same for both models

DECAY_SCALE = math.exp(-0.5)  # log decay lambda = -e^{-1/2} * sigmoid(d), so the decay w = exp(lambda) is in (0.545, 1)


@dataclass
class RWKV7Config:
    block_size: int = 512      # training context length (the model itself has no position limit)
    vocab_size: int = 65536
    n_layer: int = 12
    n_embd: int = 512          # C
    head_size: int = 64        # N; n_head = n_embd // head_size
    dim_ffn: int = 0           # channel-mix width F; 0 = 4 * n_embd
    d_decay: int = 0           # LoRA ranks of decay / in-context learning rate / value residual / gate;
    d_aaa: int = 0             # 0 = the official suggestion (train_temp, July 2025): max(32, round(c*sqrt(C)/32)*32)
    d_mv: int = 0              # with c = 2.5, 2.5, 1.7, 5
    d_gate: int = 0
    dropout: float = 0.0
    wkv_impl: str = 'chunked'  # 'naive' | 'chunked'
    chunk_len: int = 32        # chunk length of the chunked WKV (<= 64 keeps its fp32 factors finite, spec 6)

    def __post_init__(self):
        for k in ('block_size', 'vocab_size', 'n_layer', 'n_embd', 'head_size'):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")
        if self.n_embd % self.head_size:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of head_size ({self.head_size})")
        if self.wkv_impl not in ('naive', 'chunked'):
            raise ValueError(f"wkv_impl must be 'naive' or 'chunked', not '{self.wkv_impl}'")
        if not 1 <= self.chunk_len <= 64:
            raise ValueError(f"chunk_len must be in [1, 64], got {self.chunk_len}")
        rank = lambda c: max(32, round(c * math.sqrt(self.n_embd) / 32) * 32)  # noqa: E731
        self.dim_ffn = self.dim_ffn or 4 * self.n_embd
        self.d_decay, self.d_aaa = self.d_decay or rank(2.5), self.d_aaa or rank(2.5)
        self.d_mv, self.d_gate = self.d_mv or rank(1.7), self.d_gate or rank(5)


# ---------------------------------------------------------------------------- WKV7
# Shapes: r, w, k, v, a, b are (B, T, H, N); w is the log decay lambda (< 0); a = alpha = -kk, b = beta = kk * a.
# The state S is (B, H, N, N) fp32 with rows = value channel i, columns = key channel j (the official layout).
# Per step (spec 4.3): sa = S a;  S = S diag(exp(w)) + sa b^T + v k^T;  y = S r.

def wkv_naive(r, w, k, v, a, b, state=None):
    """The per-timestep WKV7 recurrence, fp32 state and arithmetic (matches rwkv_v7_demo.py's loop).
    Returns y (B, T, H, N) in r's dtype and the final state (B, H, N, N) fp32."""
    B, T, H, N = r.shape
    dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
    S = torch.zeros(B, H, N, N, dtype=dtype, device=r.device) if state is None else state.to(dtype)
    r, w, k, v, a, b = (t.to(dtype) for t in (r, w, k, v, a, b))
    decay = torch.exp(w)
    ys = []
    for t in range(T):
        sa = S @ a[:, t, :, :, None]                                          # (B, H, N, 1)
        S = S * decay[:, t, :, None, :] + sa * b[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append((S @ r[:, t, :, :, None])[..., 0])
    return torch.stack(ys, dim=1).to(r.dtype), S


def wkv_chunked(r, w, k, v, a, b, state=None, chunk_len=32):
    """The exact chunked WKV7 (spec section 6, fla's DPLR chunk algorithm in the official [value, key] layout).
    Inside a chunk of L tokens everything is batched matmuls; only the state is carried from chunk to chunk.
    Any T (padded internally with zero inputs and zero log decay, which leave the state unchanged); fp32 (or fp64
    when the inputs are fp64) prefix sums, masked matrices, triangular solve and state. Returns like wkv_naive."""
    B, T, H, N = r.shape
    L = chunk_len
    dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
    pad = (-T) % L
    nc = (T + pad) // L

    def chunks(t):  # (B, T, H, N) -> (B, H, nc, L, N) in the compute dtype
        return F.pad(t.to(dtype), (0, 0, 0, 0, 0, pad)).view(B, nc, L, H, N).permute(0, 3, 1, 2, 4)
    r_, w_, k_, v_, a_, b_ = (chunks(t) for t in (r, w, k, v, a, b))
    cum = w_.cumsum(dim=-2)                      # Lambda_t, inclusive prefix sum of the log decay
    excl = cum - w_                              # E_t, exclusive
    total = cum[..., -1:, :]                     # Lambda_L
    r_dec, a_dec = r_ * cum.exp(), a_ * excl.exp()      # decayed to each step (inclusive / exclusive)
    inv, to_end = (-cum).exp(), (total - cum).exp()     # e^-Lambda_s, and the decay from s to the chunk's end
    # the four masked L x L matrices from one product: [r e^Lambda; a e^E] [k e^-Lambda; b e^-Lambda]^T
    A = torch.cat([r_dec, a_dec], dim=-2) @ torch.cat([k_ * inv, b_ * inv], dim=-2).transpose(-1, -2)
    incl = torch.ones(L, L, dtype=torch.bool, device=r.device).tril()
    A_rk, A_rb = A[..., :L, :L] * incl, A[..., :L, L:] * incl
    A_ak, A_ab = A[..., L:, :L] * incl.tril(-1), A[..., L:, L:] * incl.tril(-1)
    # WY form, all chunks at once: U = (I - A_ab)^-1 [a e^E S0^T + A_ak V] = W S0^T + U~
    eye = torch.eye(L, dtype=dtype, device=r.device)
    W_U = torch.linalg.solve_triangular(eye - A_ab, torch.cat([a_dec, A_ak @ v_], dim=-1), upper=False,
                                        unitriangular=True)
    Wm, Ut = W_U[..., :N], W_U[..., N:]
    b_end = b_ * to_end
    VK = v_.transpose(-1, -2) @ (k_ * to_end)   # each chunk's own v k^T contribution to its end state
    chunk_decay = total.exp()
    S = torch.zeros(B, H, N, N, dtype=dtype, device=r.device) if state is None else state.to(dtype)
    starts, us = [], []
    for c in range(nc):  # the only sequential part: two (L x N) @ (N x N) products per chunk
        starts.append(S)
        U = Wm[:, :, c] @ S.transpose(-1, -2) + Ut[:, :, c]
        us.append(U)
        S = S * chunk_decay[:, :, c] + VK[:, :, c] + U.transpose(-1, -2) @ b_end[:, :, c]
    S0, U = torch.stack(starts, dim=2), torch.stack(us, dim=2)
    y = r_dec @ S0.transpose(-1, -2) + A_rk @ v_ + A_rb @ U
    y = y.permute(0, 2, 3, 1, 4).reshape(B, nc * L, H, N)[:, :T]
    return y.to(r.dtype), S


def wkv(r, w, k, v, a, b, state=None, impl='chunked', chunk_len=32):
    """WKV7 through the implementation `impl` ('naive' | 'chunked'); see wkv_naive for shapes. A single token always
    takes the recurrence (one step, O(1))."""
    if impl == 'naive' or r.size(1) == 1:
        return wkv_naive(r, w, k, v, a, b, state)
    return wkv_chunked(r, w, k, v, a, b, state, chunk_len)


# ---------------------------------------------------------------------------- the model
def token_shift(x, prev):
    """x (B, T, C) -> the previous token's x, with prev (B, C) (or zeros) before the first token."""
    first = torch.zeros_like(x[:, :1]) if prev is None else prev[:, None].to(x.dtype)
    return torch.cat([first, x[:, :-1]], dim=1)


class TimeMix(nn.Module):
    """RWKV-7 time mixing (spec 4.1-4.4)."""

    def __init__(self, cfg, layer_id):
        super().__init__()
        C, N = cfg.n_embd, cfg.head_size
        self.layer_id, self.n_head, self.head_size = layer_id, C // N, N
        self.wkv_impl, self.chunk_len = cfg.wkv_impl, cfg.chunk_len
        for name in ('x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0', 'a0', 'k_k', 'k_a'):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, C)))
        self.w1, self.w2 = nn.Parameter(torch.zeros(C, cfg.d_decay)), nn.Parameter(torch.zeros(cfg.d_decay, C))
        self.a1, self.a2 = nn.Parameter(torch.zeros(C, cfg.d_aaa)), nn.Parameter(torch.zeros(cfg.d_aaa, C))
        if layer_id > 0:  # block 0 makes v_first and has no value residual (official checkpoints may still carry
            self.v0 = nn.Parameter(torch.zeros(1, 1, C))  # unused blocks.0.att.v0/v1/v2: from_pretrained drops them)
            self.v1, self.v2 = nn.Parameter(torch.zeros(C, cfg.d_mv)), nn.Parameter(torch.zeros(cfg.d_mv, C))
        self.g1, self.g2 = nn.Parameter(torch.zeros(C, cfg.d_gate)), nn.Parameter(torch.zeros(cfg.d_gate, C))
        self.r_k = nn.Parameter(torch.zeros(self.n_head, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, C, eps=64e-5)  # 64e-5 for every head size, as the official code

    def forward(self, x, v_first, shift, kv_state):
        """x (B, T, C): ln1 output. v_first (B, T, C) from block 0 (None in block 0). shift (B, C) / kv_state
        (B, H, N, N): carried state or None. Returns (out, v_first, new shift, new kv_state)."""
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = token_shift(x, shift) - x
        xr, xw, xk, xv, xa, xg = (x + xx * m for m in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r = self.receptance(xr)
        d = self.w0 + torch.tanh(xw @ self.w1) @ self.w2
        k = self.key(xk)
        v = self.value(xv)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)               # in-context learning rate
        g = torch.sigmoid(xg @ self.g1) @ self.g2                           # output gate
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, eps=1e-12).view(B, T, C)  # removal key
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:                                                               # value residual
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        w = -DECAY_SCALE * torch.sigmoid(d.float())                         # log decay, fp32
        heads = lambda t: t.view(B, T, H, N)  # noqa: E731
        y, kv_state = wkv(heads(r), heads(w), heads(k), heads(v), heads(-kk), heads(kk * a), kv_state,
                          self.wkv_impl, self.chunk_len)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        y = y + ((heads(r) * heads(k) * self.r_k).sum(-1, keepdim=True) * heads(v)).view(B, T, C)  # bonus
        return self.output(y * g), v_first, x[:, -1], kv_state


class ChannelMix(nn.Module):
    """RWKV-7 channel mixing (spec 4.5): value(relu(key(lerp(x, x_prev, x_k)))^2)."""

    def __init__(self, cfg):
        super().__init__()
        self.x_k = nn.Parameter(torch.zeros(1, 1, cfg.n_embd))
        self.key = nn.Linear(cfg.n_embd, cfg.dim_ffn, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, cfg.n_embd, bias=False)

    def forward(self, x, shift):
        xk = x + (token_shift(x, shift) - x) * self.x_k
        return self.value(torch.relu(self.key(xk)) ** 2), x[:, -1]


class Block(nn.Module):
    def __init__(self, cfg, layer_id):
        super().__init__()
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(cfg.n_embd)
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.att = TimeMix(cfg, layer_id)
        self.ffn = ChannelMix(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, v_first, state):
        """state: (att_x_prev (B, C), att_kv (B, H, N, N), ffn_x_prev (B, C)) or Nones. Returns x, v_first, state."""
        if self.layer_id == 0:
            x = self.ln0(x)
        att, v_first, att_shift, kv = self.att(self.ln1(x), v_first, state[0], state[1])
        x = x + self.drop(att)
        ffn, ffn_shift = self.ffn(self.ln2(x), state[2])
        return x + self.drop(ffn), v_first, (att_shift, kv, ffn_shift)


class RWKV7(nn.Module):
    """The model: `RWKV7(RWKV7Config(...))` or `RWKV7.from_pretrained('x.pth')`.
    A recurrent state is a dict of per-layer stacks: att_x_prev (L, B, C), att_kv (L, B, H, N, N) fp32,
    ffn_x_prev (L, B, C), in the official order and layout (spec 5)."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
        self.ln_out = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.grad_checkpoint = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """The official training initialisation (train_temp generate_init_weight, May 2025; spec section 7)."""
        cfg = self.config
        C, N, L, V = cfg.n_embd, cfg.head_size, cfg.n_layer, cfg.vocab_size
        n = torch.arange(C, dtype=torch.float64)
        lin = n / (C - 1) - 0.5
        zeta = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
        zig = zeta * zeta.abs()

        def ortho(p, gain):
            nn.init.orthogonal_(p, gain=gain * (math.sqrt(p.shape[0] / p.shape[1]) if p.shape[0] > p.shape[1] else 1))

        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        ortho(self.head.weight, 0.5 * math.sqrt(V / C) if V > C else 0.5)
        for l, blk in enumerate(self.blocks):
            att, ffn = blk.att, blk.ffn
            r0, r1 = l / max(L - 1, 1), 1 - l / L
            ramp = lambda p: (1 - (n / C) ** p).view(1, 1, C)  # noqa: E731
            for name, p in (('x_r', 0.2), ('x_w', 0.9), ('x_k', 0.7), ('x_v', 0.7), ('x_a', 0.9), ('x_g', 0.2)):
                getattr(att, name).copy_(ramp(p * r1))
            att.w0.copy_((-6 + 6 * (n / (C - 1)) ** (1 + r0 ** 0.3) + 0.5 + 2.5 * zig).view(1, 1, C))
            att.a0.copy_((-0.19 + 0.3 * zig + 0.4 * lin).view(1, 1, C))
            att.k_k.copy_((0.71 - 0.1 * lin).view(1, 1, C))
            att.k_a.fill_(1.02)
            att.r_k.fill_(-0.04)
            for lora in ('w', 'a', 'v', 'g'):
                if hasattr(att, lora + '1'):
                    getattr(att, lora + '1').zero_()
                    ortho(getattr(att, lora + '2'), 0.1)
            if l > 0:
                att.v0.copy_((0.73 - 0.4 * lin).view(1, 1, C))
            ortho(att.receptance.weight, 1.0)
            ortho(att.key.weight, 0.1)
            ortho(att.value.weight, 1.0)
            att.output.weight.zero_()
            att.ln_x.weight.fill_(((l + 1) / L) ** 0.7)
            att.ln_x.bias.zero_()
            ffn.x_k.copy_(ramp(r1 ** 4))
            ortho(ffn.key.weight, 1.0)
            ffn.value.weight.zero_()

    def get_num_params(self, non_embedding=False):
        """Number of parameters; non_embedding drops the token embedding (the head is a real matmul: kept)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.emb.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, loss_mask=None, state=None, return_state=False):
        """idx (B, T) int64. targets (B, T) int64 (-1 = ignored), loss_mask (B, T) 0/1 (0 = ignored).
        state: a recurrent state to start from (see class docstring) or None (zeros).
        Returns (logits (B, T, vocab_size) float, loss or None), plus the final state with return_state=True."""
        x = self.emb(idx)
        v_first, new = None, []
        for i, blk in enumerate(self.blocks):
            st = (None, None, None) if state is None else \
                (state['att_x_prev'][i], state['att_kv'][i], state['ffn_x_prev'][i])
            if self.grad_checkpoint and self.training:
                x, v_first, st = checkpoint(blk, x, v_first, st, use_reentrant=False)
            else:
                x, v_first, st = blk(x, v_first, st)
            new.append(st)
        logits = self.head(self.ln_out(x)).float()
        loss = None
        if targets is not None:
            if loss_mask is not None:
                targets = targets.masked_fill(loss_mask == 0, -1)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        if not return_state:
            return logits, loss
        state = {key: torch.stack([s[j] for s in new]) for j, key in enumerate(('att_x_prev', 'att_kv', 'ffn_x_prev'))}
        return logits, loss, state

    @torch.no_grad()
    def step(self, idx, state=None):
        """Recurrent inference: consume idx (B, T) (T >= 1) after `state` (None = start of a sequence) and return
        (logits (B, T, vocab_size), new state). A prompt goes through the parallel path once; then one token per
        call costs O(1) time and memory whatever the context length."""
        if idx.size(1) == 1 and state is not None and not self.training:
            logits, state = self.step_one(idx[:, 0], state)
            return logits[:, None], state
        logits, _, state = self(idx, state=state, return_state=True)
        return logits, state

    def step_one(self, idx, state):
        """forward's math for one token per row after `state`, on (B, C) rows with as few PyTorch calls as it takes
        (decoding on a CPU is bound by the per-call overhead, not by arithmetic), as the official package's
        forward_one (rwkv/model.py RWKV_x070). idx (B,) int64. Returns (logits (B, V) float, the new state). The
        Linear layers are called as modules, so LoRA layers on them (lora.py) take part."""
        B, C, N = idx.size(0), self.config.n_embd, self.config.head_size
        H = C // N
        x = self.emb(idx)
        v_first, new = None, ([], [], [])
        for i, blk in enumerate(self.blocks):
            att, ffn = blk.att, blk.ffn
            if i == 0:
                x = F.layer_norm(x, (C,), blk.ln0.weight, blk.ln0.bias)
            xa = F.layer_norm(x, (C,), blk.ln1.weight, blk.ln1.bias)
            xx = state['att_x_prev'][i] - xa
            mix = torch.cat([att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g])  # (6, 1, C): one op, not 12
            xr, xw, xk, xv, xa_, xg = torch.addcmul(xa, xx, mix).unbind(0)
            r, k, v = att.receptance(xr), att.key(xk), att.value(xv)
            d = att.w0[0] + torch.tanh(xw @ att.w1) @ att.w2
            a = torch.sigmoid(att.a0[0] + (xa_ @ att.a1) @ att.a2)
            g = torch.sigmoid(xg @ att.g1) @ att.g2
            kk = F.normalize((k * att.k_k[0]).view(B, H, N), dim=-1, eps=1e-12)
            k = k * (1 + (a - 1) * att.k_a[0])
            if i == 0:
                v_first = v
            else:
                v = v + (v_first - v) * torch.sigmoid(att.v0[0] + (xv @ att.v1) @ att.v2)
            S = state['att_kv'][i]  # (B, H, N, N) fp32 (fp64 in an fp64 model); spec 4.3, as wkv_naive
            f = S.dtype
            w = torch.exp((-DECAY_SCALE * torch.sigmoid(d.float())).to(f)).view(B, H, 1, N)
            vf, kf = v.to(f).view(B, H, N, 1), k.to(f).view(B, H, 1, N)
            S = S * w + (S @ -kk.to(f)[..., None]) * (kk * a.view(B, H, N)).to(f)[:, :, None] + vf * kf
            y = (S @ r.to(f).view(B, H, N, 1)).view(B, C).to(x.dtype)
            y = F.group_norm(y, H, att.ln_x.weight, att.ln_x.bias, eps=64e-5)
            y = y + ((r * k * att.r_k.view(C)).view(B, H, N).sum(-1, keepdim=True) * v.view(B, H, N)).view(B, C)
            x = x + att.output(y * g)
            xf = F.layer_norm(x, (C,), blk.ln2.weight, blk.ln2.bias)
            kx = torch.addcmul(xf, state['ffn_x_prev'][i] - xf, ffn.x_k[0])
            x = x + ffn.value(torch.relu(ffn.key(kx)) ** 2)
            for lst, t in zip(new, (xa, S, xf)):
                lst.append(t)
        state = {key: torch.stack(t) for key, t in zip(('att_x_prev', 'att_kv', 'ffn_x_prev'), new)}
        return self.head(F.layer_norm(x, (C,), self.ln_out.weight, self.ln_out.bias)).float(), state

    def compile_step(self):
        """Decode through a torch.compile'd step_one from here on (step() calls it): a token then runs as a few fused
        kernels instead of ~45 PyTorch calls per layer, which is what bounds a CPU's decoding of a small model (2.7x
        at 4 x 192, 1.1x at 12 x 768 on a Zen 4). The compile takes 13-45 s on a 2-core CPU, again once for a second
        batch size (then shape-generic): opt-in (sample.py and bench.py --compile=True) for long generations. A second
        call changes nothing; a copy.deepcopy of the model keeps calling the original's step. Returns the model."""
        if 'step_one' not in vars(self):
            self.step_one = torch.compile(self.step_one)
        return self

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW as train_temp: weight decay only on 2-D `.weight` matrices (projections, emb, head); att.w0 at twice
        the learning rate (its group has lr_scale=2, which train.py applies); fused on CUDA and CPU."""
        decay, no_decay, w0 = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (w0 if name.endswith('att.w0') else decay if p.dim() == 2 and name.endswith('.weight') else no_decay).append(p)
        groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0},
                  {'params': w0, 'weight_decay': 0.0, 'lr_scale': 2.0}]
        fused = device_type in ('cuda', 'cpu') and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))

    def estimate_mfu(self, tokens_per_iter, dt, device):
        """Model FLOPs utilisation against the device's 16-bit peak (None when unknown, e.g. CPU). FLOPs per token:
        6 per weight for the matmuls, plus the WKV (about 6 N^2 per head forward, x3 with backward)."""
        peak = device_peak_flops(device)
        if peak is None:
            return None
        cfg = self.config
        flops = 6 * self.get_num_params(non_embedding=True) + 18 * cfg.n_layer * cfg.n_embd * cfg.head_size
        return flops * tokens_per_iter / dt / peak

    @torch.no_grad()
    def prefill_padded(self, idx, attention_mask):
        """step() for left-padded prompts idx (B, T) with attention_mask (B, T) 0/1 (0 = padding): the rows of each
        prompt length go through step() together on their real tokens only, so padding never touches a state (exact).
        Returns (logits of each row's last token (B, 1, vocab_size), the batch's state). Raises ValueError if the
        mask is not a left padding."""
        keep = attention_mask.bool()
        B, T = idx.shape
        lens = keep.sum(dim=1)
        if not torch.equal(keep, torch.arange(T, device=keep.device) >= T - lens[:, None]) or lens.min() < 1:
            raise ValueError("attention_mask must be a left padding (0s then 1s) with at least one token per row")
        logits, state = None, None
        for n in lens.unique().tolist():
            rows = (lens == n).nonzero()[:, 0]
            lg, st = self.step(idx[rows, T - n:])
            if state is None:
                logits = lg.new_zeros(B, 1, lg.size(-1))
                state = {k: v.new_zeros(v.size(0), B, *v.shape[2:]) for k, v in st.items()}
            logits[rows] = lg[:, -1:]
            for k in state:
                state[k][:, rows] = st[k]
        return logits, state

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_tokens=None,
                        generator=None, vocab_limit=None, attention_mask=None):
        """Yield the next tokens, (B,) int64 per step, for prompts idx (B, T): the prompt goes through step() once,
        then one token per step with the recurrent state (constant time and memory per token). Stops after
        max_new_tokens or once every row produced a stop token (finished rows repeat it). attention_mask: (B, T) 0/1,
        0 on the left padding of prompts of different lengths batched together (see prefill_padded)."""
        was_training = self.training
        self.eval()
        stop = torch.tensor(sorted(stop_tokens or []), dtype=torch.long, device=idx.device)
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        try:
            if attention_mask is None or attention_mask.all():
                logits, state = self.step(idx)
            else:
                logits, state = self.prefill_padded(idx, attention_mask)
            for _ in range(max_new_tokens):
                nxt = sample_next(logits[:, -1, :vocab_limit], temperature, top_k, top_p, generator)
                if len(stop):
                    nxt = torch.where(done, stop[0], nxt) if done.any() else nxt
                    done |= torch.isin(nxt, stop)
                yield nxt
                if len(stop) and done.all():
                    break
                logits, state = self.step(nxt[:, None], state)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_tokens=None,
                 generator=None, vocab_limit=None, attention_mask=None):
        """idx (B, T) -> (B, T + n), n <= max_new_tokens; temperature 0 = greedy. See generate_stream."""
        out = [idx] + [t[:, None] for t in self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p,
                                                                 stop_tokens, generator, vocab_limit, attention_mask)]
        return torch.cat(out, dim=1)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """Load an official RWKV-7 `.pth` (a flat state dict, 16-bit or fp32, optionally with DeepSpeed's
        '_forward_module.' prefix). Every dimension, the four LoRA ranks included, is read from tensor shapes
        (spec 9). The weights are upcast to fp32. overrides: other RWKV7Config fields (block_size, wkv_impl, ...).
        Raises ValueError if the file is not an RWKV-7 state dict."""
        try:
            sd = torch.load(path, map_location='cpu', weights_only=True)
        except OSError:
            raise
        except Exception as e:  # not a torch.save file, or one holding other objects
            raise ValueError(f"{path} is not a readable .pth file ({type(e).__name__})") from None
        if not isinstance(sd, dict):
            raise ValueError(f"{path} is not an RWKV-7 (x070) checkpoint: it holds a {type(sd).__name__}")
        sd = {k.removeprefix('_forward_module.'): v for k, v in sd.items()}
        needed = ('emb.weight', 'head.weight', 'blocks.0.att.r_k', 'blocks.0.att.w1', 'blocks.0.ffn.key.weight')
        if not all(k in sd for k in needed):
            raise ValueError(f"{path} is not an RWKV-7 (x070) checkpoint: missing {[k for k in needed if k not in sd]}")
        for k in ('v0', 'v1', 'v2'):  # stored by the official trainer in block 0, never used
            sd.pop(f'blocks.0.att.{k}', None)
        V, C = sd['emb.weight'].shape
        H, N = sd['blocks.0.att.r_k'].shape
        n_layer = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
        lora = lambda name: sd[f'blocks.{min(1, n_layer - 1)}.att.{name}'].shape[1]  # noqa: E731
        cfg = RWKV7Config(**{'block_size': 4096, **overrides, 'vocab_size': V, 'n_layer': n_layer, 'n_embd': C,
                             'head_size': N, 'dim_ffn': sd['blocks.0.ffn.key.weight'].shape[0],
                             'd_decay': lora('w1'), 'd_aaa': lora('a1'),
                             'd_mv': lora('v1') if n_layer > 1 else 32, 'd_gate': lora('g1')})
        model = cls(cfg)
        model.load_state_dict({k: v.float() for k, v in sd.items()})
        return model

    def official_state_dict(self, dtype=torch.float32):
        """The weights as the official trainer saves them (RWKV-LM RWKV-v7/train_temp, the `.pth` files BlinkDL
        releases in bfloat16): its names, shapes and key order, with block 0's v0/v1/v2 (stored there, never read:
        zeros here), every tensor `dtype` on the CPU. from_pretrained reads it back; the `rwkv` pip package runs it.
        Raises ValueError for a model with LoRA layers (merge them first: lora.merge_lora)."""
        sd, C, d_mv = self.state_dict(), self.config.n_embd, self.config.d_mv
        sd.update({'blocks.0.att.v0': torch.zeros(1, 1, C), 'blocks.0.att.v1': torch.zeros(C, d_mv),
                   'blocks.0.att.v2': torch.zeros(d_mv, C)})
        att = ('x_r x_w x_k x_v x_a x_g w1 w2 w0 a1 a2 a0 v1 v2 v0 g1 g2 k_k k_a r_k receptance.weight key.weight '
               'value.weight output.weight ln_x.weight ln_x.bias').split()
        keys = ['emb.weight']
        for i in range(self.config.n_layer):
            keys += [f'blocks.{i}.{k}' for k in ['ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias']
                     + ['ln0.weight', 'ln0.bias'] * (i == 0) + [f'att.{k}' for k in att]
                     + ['ffn.x_k', 'ffn.key.weight', 'ffn.value.weight']]
        keys += ['ln_out.weight', 'ln_out.bias', 'head.weight']
        if set(keys) != set(sd):
            raise ValueError(f"not a plain RWKV-7: unexpected weights {sorted(set(sd) - set(keys))[:3]} (LoRA "
                             f"layers? merge them first)")
        return {k: sd[k].detach().to('cpu', dtype).contiguous() for k in keys}


# (the first name contained in the device's name wins, so longer names come first; V100 and T4 have no bf16: fp16)
PEAK_BF16 = {'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'A6000': 155e12, 'L40S': 362e12, 'L40': 181e12,
             'L4': 121e12, 'A10': 125e12, '4090': 165e12, '3090': 71e12, 'V100': 125e12, 'T4': 65e12}


def device_peak_flops(device):
    """Peak 16-bit FLOP/s of a CUDA device from PEAK_BF16 (H100 PCIe: 756 TFLOP/s), or None (CPU, MPS, unknown)."""
    if not str(device).startswith('cuda') or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    if 'H100' in name and 'PCIe' in name:
        return 756e12
    return next((v for k, v in PEAK_BF16.items() if k in name), None)
