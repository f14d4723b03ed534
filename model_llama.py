"""
A TinyLlama-style decoder-only transformer in one file, nanoGPT style:
RMSNorm (pre-norm), rotary position embeddings (RoPE), grouped-query attention through
F.scaled_dot_product_attention (flash attention on GPU), SwiGLU MLP, optional tied embeddings and qkv bias.

References: Llama (Touvron et al. 2023, arXiv:2302.13971), Llama 2 (arXiv:2307.09288), RoFormer (Su et al. 2021,
arXiv:2104.09864, eq. 34; Hugging Face's "rotate half" layout), GQA (Ainslie et al. 2023, arXiv:2305.13245),
SwiGLU (Shazeer 2020, arXiv:2002.05202). The layer structure and names follow Hugging Face's LlamaForCausalLM
(q_proj/k_proj/v_proj/o_proj, gate_proj/up_proj/down_proj), so its weights map one to one.

No import of other project files: copy this file out and it works.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class LlamaConfig:
    block_size: int = 256          # longest sequence the model is trained on (RoPE tables are this long)
    vocab_size: int = 50304        # model vocabulary (>= tokenizer vocabulary; padded for speed)
    n_layer: int = 6
    n_head: int = 6                # query heads
    n_kv_head: int = 2             # key/value heads (GQA); n_head must be a multiple of it
    n_embd: int = 384
    intermediate_size: int = 0     # SwiGLU hidden width; 0 = Llama's rule: 2/3 * 4 * n_embd rounded up to 32
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qkv_bias: bool = False         # Qwen2 has biases on q/k/v
    dropout: float = 0.0

    def __post_init__(self):
        for k in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd'):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")
        if self.intermediate_size == 0:
            self.intermediate_size = 32 * math.ceil(int(8 * self.n_embd / 3) / 32)
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}), and n_head a "
                             f"multiple of n_kv_head ({self.n_kv_head})")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"head size n_embd/n_head = {self.n_embd // self.n_head} must be even for RoPE")


# presets of the README's configs table (block_size and vocab_size come from the run's config)
PRESETS = {
    'micro': dict(n_layer=6, n_head=6, n_kv_head=2, n_embd=384),
    'tiny': dict(n_layer=8, n_head=8, n_kv_head=4, n_embd=512),
    'small': dict(n_layer=12, n_head=12, n_kv_head=4, n_embd=768),
}


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in fp32 (Zhang & Sennrich 2019)."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x.float(), (x.size(-1),), self.weight.float(), self.eps).type_as(x)


def rope_tables(head_dim, max_len, theta):
    """cos, sin of shape (max_len, head_dim) for the rotate-half layout: freq i = theta^(-2i/head_dim). The first
    half of sin is negated, so that rotate_half(x) * sin == roll(x, head_dim/2) * sin_signed (see apply_rope)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    return torch.cat([angles, angles], dim=-1).cos(), torch.cat([-angles.sin(), angles.sin()], dim=-1)


def apply_rope(x, cos, sin):
    """Rotate x (B, H, T, D) by the tables (T, D) of rope_tables, or by per-row rows of them (B, 1, T, D):
    x*cos + rotate_half(x)*sin, where rotate_half(x) = cat(-x2, x1) for the halves x1, x2 of the last dim (Hugging
    Face's layout)."""
    return torch.addcmul(x * cos, x.roll(x.size(-1) // 2, dims=-1), sin)


class Attention(nn.Module):
    """Grouped-query causal self-attention with RoPE and an optional KV cache."""

    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.n_embd // cfg.n_head
        kv_dim = self.n_kv_head * self.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.n_embd, kv_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.n_embd, kv_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout
        self.cache = None  # (k, v) each (B, n_kv_head, max_len, head_dim) while generating

    def forward(self, x, cos, sin, pos, keep=None):
        """keep: (B, >= pos + T) bool, False on the left padding of a batched generation (see Llama.forward)."""
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask, causal = None, True
        if self.cache is not None:
            ck, cv = self.cache
            ck[:B, :, pos:pos + T] = k
            cv[:B, :, pos:pos + T] = v
            k, v = ck[:B, :, :pos + T], cv[:B, :, :pos + T]
            if pos > 0:  # new queries see every cached key and, causally, each other
                causal = False
                if T > 1:
                    mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(diagonal=pos)
        if keep is not None:  # causal, and never a pad key; a pad query sees itself so that no row is empty (NaN)
            i = torch.arange(pos, pos + T, device=x.device)[:, None]
            j = torch.arange(k.size(2), device=x.device)
            mask, causal = (j <= i) & (keep[:, None, None, :k.size(2)] | (j == i)), False  # (B, 1, T, S)
        if self.n_kv_head != self.n_head:  # each K/V head serves n_head // n_kv_head query heads
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, pos, keep=None):
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, pos, keep))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class Llama(nn.Module):
    """The model. `Llama(LlamaConfig(...))`; see forward / generate for shapes."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_theta)
        self.register_buffer('rope_cos', cos, persistent=False)
        self.register_buffer('rope_sin', sin, persistent=False)
        self.grad_checkpoint = False
        # GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith('o_proj.weight') or name.endswith('down_proj.weight'):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
            elif p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=0.02)
            elif name.endswith('bias'):
                nn.init.zeros_(p)

    def get_num_params(self, non_embedding=False):
        """Number of parameters (tied weights counted once); non_embedding drops the token embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed_tokens.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, loss_mask=None, pos=0, last_only=False, attention_mask=None):
        """idx: (B, T) int64 token ids, T <= block_size - pos.
        targets: (B, T) int64 next-token ids, -1 = ignored; loss_mask: (B, T) 0/1, 0 = ignored.
        pos: position of idx[:, 0] (> 0 only with a KV cache, see generate); last_only: logits of the last position.
        attention_mask: (B, pos + T) 0/1 or bool over every slot so far, 0 on left padding (batched generation): pad
        slots are never attended and each row's RoPE positions start at its first real token.
        Returns (logits, loss): logits (B, T, vocab_size) float (B, 1, vocab_size with last_only), loss the mean
        cross-entropy over the counted targets (a 0-dim tensor) or None without targets."""
        B, T = idx.shape
        if pos + T > self.config.block_size:
            raise ValueError(f"sequence of {pos + T} tokens is longer than block_size {self.config.block_size}")
        if pos and self.layers[0].self_attn.cache is None:
            raise ValueError("pos > 0 needs the KV cache of the tokens before it (see generate_stream)")
        keep = None if attention_mask is None else attention_mask.bool()
        if keep is None:
            cos, sin = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        else:  # per-row positions: the number of real tokens before each slot
            p = (keep.long().cumsum(dim=1) - 1).clamp(min=0)[:, pos:pos + T]
            cos, sin = self.rope_cos[p][:, None], self.rope_sin[p][:, None]  # (B, 1, T, head_dim)
        x = self.drop(self.embed_tokens(idx))
        for block in self.layers:
            if self.grad_checkpoint and self.training:
                x = checkpoint(block, x, cos, sin, pos, keep, use_reentrant=False)
            else:
                x = block(x, cos, sin, pos, keep)
        x = self.norm(x)
        if targets is None:
            return self.lm_head(x[:, -1:] if last_only else x).float(), None
        logits = self.lm_head(x).float()
        if loss_mask is not None:
            targets = targets.masked_fill(loss_mask == 0, -1)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on matrices (dim >= 2) only; the fused implementation on CUDA and CPU."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
        fused = device_type in ('cuda', 'cpu') and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))

    def estimate_mfu(self, tokens_per_iter, dt, device):
        """Model FLOPs utilisation of one iteration of `tokens_per_iter` tokens taking `dt` seconds, as a fraction
        of the device's bf16 dense peak (PaLM appendix B: 6N + 12*L*H*Q*T FLOPs per token). None if unknown peak."""
        peak = device_peak_flops(device)
        if peak is None:
            return None
        cfg = self.config
        flops_per_token = 6 * self.get_num_params() + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * cfg.block_size
        return flops_per_token * tokens_per_iter / dt / peak

    # ---------------------------------------------------------------- generation with a KV cache
    def _reset_cache(self, batch_size, device, dtype):
        hd, nkv, L = self.config.n_embd // self.config.n_head, self.config.n_kv_head, self.config.block_size
        for block in self.layers:
            block.self_attn.cache = (torch.zeros(batch_size, nkv, L, hd, device=device, dtype=dtype),
                                     torch.zeros(batch_size, nkv, L, hd, device=device, dtype=dtype))

    def _drop_cache(self):
        for block in self.layers:
            block.self_attn.cache = None

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_tokens=None,
                        generator=None, vocab_limit=None, attention_mask=None):
        """Yield the next tokens, a (B,) int64 tensor per step, for prompts idx (B, T). Prefills a KV cache once,
        then runs one token per step. Stops after max_new_tokens, or once every row has produced a stop token
        (rows that stopped keep yielding that stop token). Past block_size the context is cropped to the last
        block_size tokens and re-encoded each step, as nanoGPT does. vocab_limit: never sample ids >= it (the
        tokenizer's vocabulary, when the model's is padded). attention_mask: (B, T) 0/1, 0 on the left padding of
        prompts of different lengths batched together; each row then generates what it would alone."""
        was_training = self.training
        self.eval()
        stop = torch.tensor(sorted(stop_tokens or []), dtype=torch.long, device=idx.device)
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        dtype, L = self.embed_tokens.weight.dtype, self.config.block_size
        keep = None if attention_mask is None or attention_mask.all() else attention_mask.bool()[:, -L:]
        try:
            self._reset_cache(idx.size(0), idx.device, dtype)
            seq, pos, new = idx[:, -L:], 0, None
            for _ in range(max_new_tokens):
                if new is None:                              # prefill the whole (cropped) context
                    logits, _ = self(seq, pos=0, last_only=True, attention_mask=keep)
                    pos = seq.size(1)
                elif pos < L:                                # one token through the cache
                    logits, _ = self(new[:, None], pos=pos, last_only=True, attention_mask=keep)
                    pos += 1
                else:                                        # cache full: crop and re-encode
                    seq, keep = seq[:, -L:], None if keep is None else keep[:, -L:]
                    logits, _ = self(seq, pos=0, last_only=True, attention_mask=keep)
                logits = logits[:, -1, :vocab_limit]
                nxt = sample_next(logits, temperature, top_k, top_p, generator)
                if len(stop):
                    nxt = torch.where(done, seq[:, -1] if new is not None else nxt, nxt)
                    done |= torch.isin(nxt, stop)
                seq, new = torch.cat([seq, nxt[:, None]], dim=1), nxt
                if keep is not None:
                    keep = torch.cat([keep, keep.new_ones(keep.size(0), 1)], dim=1)
                yield nxt
                if len(stop) and done.all():
                    break
        finally:
            self._drop_cache()
            self.train(was_training)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_tokens=None,
                 generator=None, vocab_limit=None, attention_mask=None):
        """idx (B, T) int64 -> (B, T + n) int64 with n <= max_new_tokens new tokens; see generate_stream.
        temperature 0 is greedy decoding."""
        out = [idx] + [t[:, None] for t in self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p,
                                                                 stop_tokens, generator, vocab_limit, attention_mask)]
        return torch.cat(out, dim=1)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token per row from logits (B, V): temperature 0 = argmax; top_k keeps the k largest logits;
    top_p keeps the smallest set of tokens whose probability reaches top_p (nucleus sampling). Returns (B,) int64."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k > 0:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float('-inf'))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # keep tokens until the mass before them reaches top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float('-inf'))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]


# bf16 dense tensor-core peak FLOP/s by device name (vendor data sheets, without sparsity)
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
