"""
A TinyLlama-style decoder-only transformer in one file, nanoGPT style:
RMSNorm (pre-norm), rotary position embeddings (RoPE), grouped-query attention through
F.scaled_dot_product_attention (flash attention on GPU), SwiGLU MLP, optional tied embeddings and qkv bias.

References: Llama (Touvron et al. 2023, arXiv:2302.13971), Llama 2 (arXiv:2307.09288), RoFormer (Su et al. 2021,
arXiv:2104.09864, eq. 34; Hugging Face's "rotate half" layout), GQA (Ainslie et al. 2023, arXiv:2305.13245),
SwiGLU (Shazeer 2020, arXiv:2002.05202). The layer structure and names follow Hugging Face's LlamaForCausalLM
(q_proj/k_proj/v_proj/o_proj, gate_proj/up_proj/down_proj), so its weights map one to one.

No import of other project files: copy this file out and it works (export.py writes a run as a Hugging Face folder).
"""

import inspect
import json
import math
import os
import struct
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
    rope_scaling: dict = None      # None, {'rope_type': 'linear', 'factor'} or {'rope_type': 'llama3', 'factor',
                                   # 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'}

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
        if self.rope_scaling is not None:
            need = ROPE_SCALING.get(self.rope_scaling.get('rope_type'))
            if need is None or set(self.rope_scaling) != need | {'rope_type'}:
                raise ValueError(f"rope_scaling must be None or a dict: rope_type 'linear' with factor, or 'llama3' "
                                 f"with {', '.join(sorted(ROPE_SCALING['llama3']))}; got {self.rope_scaling}")


# the RoPE scalings rope_tables implements, with their fields (Hugging Face's rope_scaling names)
ROPE_SCALING = {'linear': {'factor'},
                'llama3': {'factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'}}


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


def rope_frequencies(head_dim, theta, scaling=None):
    """The head_dim / 2 RoPE frequencies (radians per position, float32): freq i = theta^(-2i/head_dim), then
    scaling (LlamaConfig.rope_scaling): 'linear' divides every frequency by factor (Chen et al. 2023,
    arXiv:2306.15595); 'llama3' (Llama 3.1) divides the low frequencies by factor, keeps the high ones and
    interpolates in between (Hugging Face's _compute_llama3_parameters)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if scaling and scaling['rope_type'] == 'linear':
        inv_freq = inv_freq / scaling['factor']
    elif scaling:  # llama3
        factor, lo, hi = scaling['factor'], scaling['low_freq_factor'], scaling['high_freq_factor']
        old_len = scaling['original_max_position_embeddings']
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > old_len / lo, inv_freq / factor,
                               torch.where(wavelen < old_len / hi, inv_freq, mid))
    return inv_freq


def rope_tables(head_dim, max_len, theta, scaling=None):
    """cos, sin of shape (max_len, head_dim) for the rotate-half layout, at rope_frequencies(head_dim, theta,
    scaling). The first half of sin is negated, so that rotate_half(x) * sin == roll(x, head_dim/2) * sin_signed
    (see apply_rope)."""
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), rope_frequencies(head_dim, theta, scaling))
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
        self.qkv = None    # while generating: (weight, bias) of q, k and v as one matrix (fuse_linears)

    def forward(self, x, cos, sin, pos, mask=None):
        """x (B, T, C); mask: None (causal) or (B, 1, T, pos + T) bool, True where a query may see a key (Llama.forward
        builds it once for the left padding of a batched generation)."""
        B, T, C = x.shape
        if self.qkv is not None:
            q, k, v = F.linear(x, *self.qkv).split([C, self.k_proj.out_features, self.v_proj.out_features], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        causal = mask is None
        if self.cache is not None:
            ck, cv = self.cache
            ck[:B, :, pos:pos + T] = k
            cv[:B, :, pos:pos + T] = v
            k, v = ck[:B, :, :pos + T], cv[:B, :, :pos + T]
            if pos > 0 and mask is None:  # new queries see every cached key and, causally, each other
                causal = False
                if T > 1:
                    mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(diagonal=pos)
        # Each K/V head serves n_head // n_kv_head query heads: SDPA's enable_gqa reads them in place (no copy of the
        # whole cache per token). CUDA's kernel for masked attention has no GQA, so there the heads are copied.
        gqa = self.n_kv_head != self.n_head
        if gqa and mask is not None and x.is_cuda:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            gqa = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=False)
        self.gate_up = None  # while generating: gate and up as one matrix (fuse_linears)

    def forward(self, x):
        if self.gate_up is not None:
            gate, up = F.linear(x, *self.gate_up).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, pos, mask=None):
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, pos, mask))
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
        cos, sin = rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_theta, cfg.rope_scaling)
        self.register_buffer('rope_cos', cos, persistent=False)
        self.register_buffer('rope_sin', sin, persistent=False)
        self.grad_checkpoint = False
        # N(0, 1/sqrt(n_embd)) (0.088 at 128, 0.022 at 2048: GPT-2's fixed 0.02 made the 6 x 128 quickstart take ~2x
        # the iterations to learn to copy), residual output projections scaled by 1/sqrt(2 * n_layer) as in GPT-2
        std = cfg.n_embd ** -0.5
        for name, p in self.named_parameters():
            if name.endswith('o_proj.weight') or name.endswith('down_proj.weight'):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * cfg.n_layer))
            elif p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith('bias'):
                nn.init.zeros_(p)

    @classmethod
    def from_pretrained(cls, path_or_id, block_size=None, dropout=0.0, dtype=None, vocab_size=None):
        """A pretrained model: a Hugging Face folder (config.json and model.safetensors, or shards with an index;
        LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM), a hub id (resolve_pretrained) or a llama2.c legacy
        .bin file. block_size: default the model's max_position_embeddings / max_seq_len; dtype: of the parameters
        (default float32, what train.py's autocast expects); vocab_size: pad the vocabulary to at least this (new rows
        the mean of the others). Built on the meta device and filled tensor by tensor: peak memory one copy of the
        weights. Raises FileNotFoundError, or ValueError for anything this model would compute differently."""
        path = resolve_pretrained(path_or_id)
        args, tensors = (read_hf if os.path.isdir(path) else read_llama2c)(path, block_size)
        n_vocab = args['vocab_size']
        cfg = LlamaConfig(**{**args, 'vocab_size': max(n_vocab, vocab_size or 0), 'dropout': dropout})
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype or torch.float32
        with torch.device('meta'):  # shapes only: no memory, no initialisation
            model = cls(cfg).to(dtype)
        model.to_empty(device='cpu')
        if cfg.tie_embeddings:  # to_empty makes a new tensor per module
            model.lm_head.weight = model.embed_tokens.weight
        cos, sin = rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_theta, cfg.rope_scaling)
        model.rope_cos, model.rope_sin = cos.to(dtype), sin.to(dtype)  # to_empty left them uninitialised
        params, loaded = dict(model.named_parameters()), set()  # tied: lm_head.weight is not listed
        shapes = {k: (n_vocab, *p.shape[1:]) if k in ('embed_tokens.weight', 'lm_head.weight') else tuple(p.shape)
                  for k, p in params.items()}
        with torch.no_grad():
            for name, t in tensors:
                if name == 'lm_head.weight' and cfg.tie_embeddings:
                    continue  # some tied checkpoints store the head too; Hugging Face ties it to the embedding
                if tuple(t.shape) != shapes.get(name):
                    raise ValueError(f"{path}: tensor '{name}' of shape {tuple(t.shape)} does not fit this model "
                                     f"(expected {shapes.get(name, 'no such parameter')})")
                p = params[name]
                p[:len(t)].copy_(t)
                if len(t) < len(p):  # a padded vocabulary
                    p[len(t):].copy_(p[:len(t)].mean(dim=0))
                loaded.add(name)
        if set(params) - loaded:
            raise ValueError(f"{path}: no weights for {sorted(set(params) - loaded)[:5]}")
        return model

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
        mask = None
        if attention_mask is None:
            cos, sin = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        else:  # per-row positions: the number of real tokens before each slot
            keep = attention_mask.bool()
            p = (keep.long().cumsum(dim=1) - 1).clamp(min=0)[:, pos:pos + T]
            cos, sin = self.rope_cos[p][:, None], self.rope_sin[p][:, None]  # (B, 1, T, head_dim)
            # causal, and never a pad key; a pad query sees itself so that no row is empty (NaN); (B, 1, T, pos + T)
            i = torch.arange(pos, pos + T, device=idx.device)[:, None]
            j = torch.arange(pos + T, device=idx.device)
            mask = (j <= i) & (keep[:, None, None, :pos + T] | (j == i))
        x = self.drop(self.embed_tokens(idx))
        for block in self.layers:
            if self.grad_checkpoint and self.training:
                x = checkpoint(block, x, cos, sin, pos, mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, pos, mask)
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
    def _reset_cache(self, batch_size, device, dtype, length=None):
        """Empty KV caches of (batch_size, length) slots, and the fused q/k/v and gate/up matrices of generation: a
        decode step is a few small matmuls whose cost is mostly per call (-2 of 7 per layer: ~15% at batch 8)."""
        hd, nkv, L = self.config.n_embd // self.config.n_head, self.config.n_kv_head, length or self.config.block_size
        for block in self.layers:
            att, mlp = block.self_attn, block.mlp
            att.cache = (torch.zeros(batch_size, nkv, L, hd, device=device, dtype=dtype),
                         torch.zeros(batch_size, nkv, L, hd, device=device, dtype=dtype))
            att.qkv = fuse_linears(att.q_proj, att.k_proj, att.v_proj)
            mlp.gate_up = fuse_linears(mlp.gate_proj, mlp.up_proj)

    def _drop_cache(self):
        for block in self.layers:
            block.self_attn.cache = block.self_attn.qkv = block.mlp.gate_up = None

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_tokens=None,
                        generator=None, vocab_limit=None, attention_mask=None):
        """Yield the next tokens, a (B,) int64 tensor per step, for prompts idx (B, T): a KV cache prefilled once, then
        one token per step, until max_new_tokens or every row has produced a stop token (a stopped row repeats it). When
        a row in the cache outgrows block_size, the cache is filled again with the rows still running, a row past
        block_size from its last 3/4 block_size tokens (llama.cpp's context shift; nanoGPT re-encodes at every token);
        finished rows leave the batch then, so they neither cost steps nor cause more refills. vocab_limit: never sample
        ids >= it (a padded vocabulary). attention_mask: (B, T) 0/1, 0 on the left padding of batched prompts; each row
        generates what it would alone."""
        was_training = self.training
        self.eval()
        stop = torch.tensor(sorted(stop_tokens or []), dtype=torch.long, device=idx.device)
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        dtype, L = self.embed_tokens.weight.dtype, self.config.block_size
        first = idx.size(1) - (torch.ones_like(idx) if attention_mask is None else attention_mask.long()).sum(dim=1)
        try:
            self._reset_cache(idx.size(0), idx.device, dtype, min(L, idx.size(1) + max_new_tokens))  # not a 128k cache
            seq, pos, rows = idx, None, None
            for _ in range(max_new_tokens):
                if pos is None or pos >= L:  # (re)fill the cache: the rows still running, each from its first token
                    rows = (~done).nonzero()[:, 0]                  # finished rows leave the batch here
                    first = torch.where(seq.size(1) - first > L, seq.size(1) - (L - L // 4), first)
                    pos = int((seq.size(1) - first[rows]).max())
                    keep = torch.arange(seq.size(1) - pos, seq.size(1), device=idx.device) >= first[rows, None]
                    keep = None if keep.all() else keep
                    logits, _ = self(seq[rows, -pos:], pos=0, last_only=True, attention_mask=keep)
                else:                        # one token through the cache
                    logits, _ = self(seq[rows, -1:], pos=pos, last_only=True, attention_mask=keep)
                    pos += 1
                nxt = seq[:, -1].clone()
                nxt[rows] = sample_next(logits[:, -1, :vocab_limit], temperature, top_k, top_p, generator)
                if len(stop):
                    nxt = torch.where(done, seq[:, -1], nxt)
                    done |= torch.isin(nxt, stop)
                seq = torch.cat([seq, nxt[:, None]], dim=1)
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
        """idx (B, T) int64 -> (B, T + n) int64, n <= max_new_tokens (see generate_stream); temperature 0: greedy."""
        out = [idx] + [t[:, None] for t in self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p,
                                                                 stop_tokens, generator, vocab_limit, attention_mask)]
        return torch.cat(out, dim=1)


def fuse_linears(*linears):
    """(weight, bias) of nn.Linear layers that read the same input, stacked: F.linear(x, *fused) is the layers'
    outputs side by side. None when one of them is not a plain nn.Linear (LoRA, 4-bit) or only some have a bias."""
    if any(type(m) is not nn.Linear for m in linears) or len({m.bias is None for m in linears}) > 1:
        return None
    bias = None if linears[0].bias is None else torch.cat([m.bias for m in linears])
    return torch.cat([m.weight for m in linears]), bias


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token per row from logits (B, V): temperature 0 = argmax; top_k keeps the k largest logits;
    top_p keeps the smallest set of tokens whose probability reaches top_p (nucleus sampling). Returns (B,) int64.
    logits (B, V) float; generator: a torch.Generator on logits' device, or None (the global one)."""
    logits = logits.float()
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
    # Inverse-CDF draw, one uniform per row (torch.multinomial draws an exponential per vocabulary entry: ~8x slower
    # on a CPU at batch 8). u < total, so a token of zero probability is never drawn; the min guards the rounding.
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    total = cdf[:, -1:].contiguous()
    u = torch.rand(total.shape, generator=generator, device=cdf.device, dtype=cdf.dtype) * total
    return torch.minimum(torch.searchsorted(cdf, u, right=True), torch.searchsorted(cdf, total))[:, 0]


# bf16 dense peak FLOP/s (data sheets, no sparsity; the first name in the device's name wins; V100 and T4: fp16)
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


# ---------------------------------------------------------------------------- Hugging Face and llama2.c checkpoints
HF_ARCHITECTURES = {'LlamaForCausalLM': 'llama', 'MistralForCausalLM': 'mistral', 'Qwen2ForCausalLM': 'qwen2'}


def resolve_pretrained(path_or_id):
    """The local path of a model: path_or_id when it exists (a folder, a llama2.c .bin), else a Hugging Face hub id
    (owner/name) downloaded into huggingface_hub's cache (config, safetensors, tokenizer). Raises FileNotFoundError."""
    if os.path.exists(path_or_id):
        return path_or_id
    if path_or_id.count('/') != 1 or path_or_id.startswith(('.', '/')) or path_or_id.endswith('.bin'):
        raise FileNotFoundError(f"'{path_or_id}' is neither a local path nor a Hugging Face hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(path_or_id, allow_patterns=['*.json', '*.safetensors', 'tokenizer.model'])
    except Exception as e:  # huggingface_hub not installed, offline, no such repository, a gated model, ...
        raise FileNotFoundError(f"'{path_or_id}' is not a local folder, and downloading it from the Hugging Face hub "
                                f"failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})") from None


def config_from_hf(c, block_size=None):
    """LlamaConfig fields from a Hugging Face config.json dict (transformers 4's rope_theta/rope_scaling or 5's
    rope_parameters). Raises ValueError naming the field for an unknown architecture or any setting this model would
    compute differently (activation, head_dim, biases, a sliding window < block_size, RoPE type, quantization)."""
    archs = c.get('architectures') or [{v: k for k, v in HF_ARCHITECTURES.items()}.get(c.get('model_type'))]
    kind = HF_ARCHITECTURES.get(archs[0]) if len(archs) == 1 else None
    need = ['hidden_size', 'num_attention_heads', 'num_hidden_layers', 'intermediate_size', 'vocab_size']
    if kind is None or any(k not in c for k in need) or not (block_size or c.get('max_position_embeddings')):
        raise ValueError(f"architectures {c.get('architectures')} (model_type '{c.get('model_type')}'): only "
                         f"{', '.join(HF_ARCHITECTURES)} with {', '.join(need)} and max_position_embeddings are "
                         f"supported")
    n_embd, n_head, L = c['hidden_size'], c['num_attention_heads'], block_size or c['max_position_embeddings']
    rope = {**(c.get('rope_scaling') or {}), **(c.get('rope_parameters') or {})}
    theta = rope.pop('rope_theta', None) or c.get('rope_theta', 10000.0)
    rope_type = rope.pop('rope_type', None) or rope.pop('type', None) or 'default'
    rope.pop('type', None)
    if rope_type == 'llama3':
        rope.setdefault('original_max_position_embeddings', c.get('max_position_embeddings'))
    window = c.get('sliding_window') if kind == 'mistral' or c.get('use_sliding_window') else None
    partial = rope.pop('partial_rotary_factor', c.get('partial_rotary_factor', 1.0))
    problems = [msg for bad, msg in [
        (c.get('hidden_act', 'silu') != 'silu', f"hidden_act '{c.get('hidden_act')}' (the MLP here is SwiGLU: silu)"),
        (c.get('head_dim') not in (None, n_embd // n_head),
         f"head_dim {c.get('head_dim')} (here hidden_size / num_attention_heads = {n_embd // n_head})"),
        (c.get('attention_bias') or c.get('mlp_bias'), "attention_bias / mlp_bias (no o_proj or MLP biases here)"),
        (c.get('quantization_config'), "quantization_config (quantized weights)"),
        (window is not None and window < L, f"sliding_window {window} < block_size {L} (attention here is over the "
                                            f"whole context: use block_size <= {window})"),
        (partial != 1.0, "partial_rotary_factor (RoPE here rotates the whole head)"),
        (set(rope) != ROPE_SCALING.get(rope_type, set()) or rope_type not in ('default', *ROPE_SCALING),
         f"rope_scaling {dict(rope, rope_type=rope_type)} (supported: none, 'linear' with factor, 'llama3' with "
         f"{', '.join(sorted(ROPE_SCALING['llama3']))})")] if bad]
    if problems:
        raise ValueError(f"unsupported {archs[0]} config: " + '; '.join(problems))
    return dict(block_size=L, vocab_size=c['vocab_size'], n_layer=c['num_hidden_layers'], n_head=n_head,
                n_kv_head=c.get('num_key_value_heads') or n_head, n_embd=n_embd,
                intermediate_size=c['intermediate_size'], rope_theta=float(theta),
                norm_eps=c.get('rms_norm_eps', 1e-6), tie_embeddings=bool(c.get('tie_word_embeddings', False)),
                qkv_bias=kind == 'qwen2', rope_scaling=dict(rope, rope_type=rope_type) if rope else None)


def read_hf(path, block_size=None):
    """(LlamaConfig fields, (name, tensor) pairs) of a Hugging Face folder: safetensors weights (one file or the
    shards of an index) read one tensor at a time, 'model.' stripped (the module names are ours). Raises
    FileNotFoundError, ValueError."""
    from safetensors import safe_open
    if not os.path.isfile(os.path.join(path, 'config.json')):
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model folder")
    with open(os.path.join(path, 'config.json')) as f:
        args = config_from_hf(json.load(f), block_size)
    index = os.path.join(path, 'model.safetensors.index.json')
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)['weight_map'].values()))
    elif os.path.isfile(os.path.join(path, 'model.safetensors')):
        files = ['model.safetensors']
    else:
        raise FileNotFoundError(f"{path} has neither model.safetensors nor model.safetensors.index.json (pickled "
                                f"pytorch_model.bin weights are not read: save them as safetensors)")

    def tensors():
        for name in files:
            with safe_open(os.path.join(path, name), framework='pt') as f:
                for key in f.keys():
                    if not key.endswith('rotary_emb.inv_freq'):  # older checkpoints store the RoPE frequencies
                        yield key.removeprefix('model.'), f.get_tensor(key)
    return args, tensors()


def hf_permute(w, n_heads):
    """Rows of a q/k projection w (n_heads * head_dim, in), per head, from the interleaved RoPE layout (Meta's,
    llama2.c's) to rotate-half; the permute of Hugging Face's convert_llama_weights_to_hf.py."""
    out, inp = w.shape
    return w.view(n_heads, out // n_heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def read_llama2c(path, block_size=None):
    """(LlamaConfig fields, (name, tensor) pairs) of a llama2.c legacy checkpoint: 7 int32 (dim, hidden_dim, n_layers,
    n_heads, n_kv_heads, vocab_size (< 0: untied classifier), max_seq_len), then fp32 token_embedding, rms_att, wq, wk,
    wv, wo, rms_ffn, w1, w2, w3 (all layers each), rms_final, freq_cis_real/imag (checked: theta 10000), wcls. q/k
    permuted to rotate-half (hf_permute); eps 1e-5 as llama2.c's. Raises ValueError: another format, wrong length."""
    with open(path, 'rb') as f:
        D, F_, L, H, KV, V, S = struct.unpack('<7i', f.read(28).ljust(28, b'\0'))
    if D == 0x616b3432:
        raise ValueError(f"{path} is a llama2.c version 1/2 export (magic 'ak42'): export it with --version=0")
    if min(D, F_, L, H, KV, S) < 1 or V == 0 or D % H or H % KV:
        raise ValueError(f"{path} is not a llama2.c checkpoint (header {[D, F_, L, H, KV, V, S]})")
    tied, V, hs = V > 0, abs(V), D // H
    kv = KV * hs
    n = V * D + L * (2 * D + 2 * D * D + 2 * kv * D + 3 * F_ * D) + D + S * hs + (0 if tied else V * D)
    if os.path.getsize(path) != 28 + 4 * n:
        raise ValueError(f"{path}: {os.path.getsize(path)} bytes, but a llama2.c checkpoint with header "
                         f"{[D, F_, L, H, KV, V if tied else -V, S]} has {28 + 4 * n}")
    args = dict(block_size=block_size or S, vocab_size=V, n_layer=L, n_head=H, n_kv_head=KV, n_embd=D,
                intermediate_size=F_, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=tied, qkv_bias=False)

    def tensors():
        with open(path, 'rb') as f:
            f.seek(28)
            read = lambda *shape: torch.frombuffer(bytearray(f.read(4 * math.prod(shape))),  # noqa: E731
                                                   dtype=torch.float32).view(shape)
            yield 'embed_tokens.weight', read(V, D)
            for key, shape in [('input_layernorm', (D,)), ('self_attn.q_proj', (D, D)), ('self_attn.k_proj', (kv, D)),
                               ('self_attn.v_proj', (kv, D)), ('self_attn.o_proj', (D, D)),
                               ('post_attention_layernorm', (D,)), ('mlp.gate_proj', (F_, D)),
                               ('mlp.down_proj', (D, F_)), ('mlp.up_proj', (F_, D))]:
                for i in range(L):
                    w = read(*shape)
                    if key in ('self_attn.q_proj', 'self_attn.k_proj'):
                        w = hf_permute(w, H if key == 'self_attn.q_proj' else KV)
                    yield f'layers.{i}.{key}.weight', w
            yield 'norm.weight', read(D)
            cos, sin = rope_tables(hs, S, 10000.0)
            if not (torch.allclose(read(S, hs // 2), cos[:, :hs // 2], atol=1e-4)  # freq_cis_real, then _imag
                    & torch.allclose(read(S, hs // 2), sin[:, hs // 2:], atol=1e-4)):
                raise ValueError(f"{path}: its RoPE tables are not theta = 10000's")
            if not tied:
                yield 'lm_head.weight', read(V, D)
    return args, tensors()


if __name__ == '__main__':  # the export that lived here moved to export.py: say so instead of exiting silently
    import sys
    sys.exit("model_llama.py: error: this file is a library; a run as a Hugging Face folder: python export.py <run or checkpoint.pt> <folder>")
