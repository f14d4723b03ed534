"""
Tests of the two model types on tiny random models, CPU only (the bf16 test needs a CUDA GPU):
Llama: causality, KV-cache generation equal to re-running the full sequence, generation past block_size and stop
tokens, GQA equal to multi-head attention with repeated K/V heads, the vocabulary limit and sampling filters,
overfitting one batch (and the masked loss). RWKV-7: chunked WKV equal to the per-step recurrence in fp64 (outputs,
final state and the gradients of every input, with an initial state, for several T), state carried across pieces
equal to one pass, greedy generation, the official checkpoint layout, and (with ../shared) the official reference
outputs.

    python -m pytest test_models.py -q
"""

import json
import os

import numpy as np
import pytest
import torch

from conftest import SHARED
from model_llama import Llama, LlamaConfig, sample_next
from model_rwkv7 import RWKV7, RWKV7Config, wkv_chunked, wkv_naive


# ---------------------------------------------------------------------------- Llama
def tiny_config(**kw):
    return LlamaConfig(**{**dict(block_size=32, vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32), **kw})


def test_causality():
    torch.manual_seed(0)
    model = Llama(tiny_config()).eval()
    x = torch.randint(0, 64, (2, 32))
    y = x.clone()
    y[:, 20:] = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        a, b = model(x)[0], model(y)[0]
    assert torch.allclose(a[:, :20], b[:, :20], atol=1e-6) and not torch.allclose(a[:, 20:], b[:, 20:])


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    model = Llama(tiny_config()).eval()
    prompt = torch.randint(0, 64, (3, 5))
    out = model.generate(prompt, 20, temperature=0)
    assert out.shape == (3, 25)
    seq = prompt
    with torch.no_grad():
        for _ in range(20):  # greedy without a cache: re-run the whole sequence each step
            seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    # a prefill in two chunks through the cache (the second one masked) equals one full forward
    x = torch.randint(0, 64, (2, 30))
    model._reset_cache(2, 'cpu', torch.float32)
    with torch.no_grad():
        a = model(x[:, :17])[0]
        b = model(x[:, 17:], pos=17)[0]
    model._drop_cache()
    full = model(x)[0]
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5)


def test_generate_past_block_size_and_stop_tokens():
    torch.manual_seed(0)
    model = Llama(tiny_config(block_size=16)).eval()
    out = model.generate(torch.randint(0, 64, (1, 10)), 30, temperature=0)
    assert out.shape == (1, 40)
    first = 0  # a naive loop: a context over 16 tokens is cut to its last 12, then grows again
    for t in range(10, 40):
        first = t - 12 if t - first > 16 else first
        assert out[0, t] == model(out[:, first:t])[0][0, -1].argmax(), t
    first = int(out[0, 10])
    stopped = model.generate(out[:, :10], 30, temperature=0, stop_tokens=[first])
    assert stopped.shape == (1, 11) and stopped[0, -1] == first


def test_gqa_equals_mha_with_repeated_heads():
    torch.manual_seed(0)
    gqa = Llama(tiny_config(n_head=4, n_kv_head=2)).eval()
    mha = Llama(tiny_config(n_head=4, n_kv_head=4)).eval()
    sd = gqa.state_dict()
    for k in list(sd):
        if k.endswith(('k_proj.weight', 'v_proj.weight')):  # kv head j serves query heads 2j and 2j+1
            sd[k] = sd[k].view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32)
    mha.load_state_dict(sd)
    x = torch.randint(0, 64, (2, 32))
    with torch.no_grad():
        assert torch.allclose(gqa(x)[0], mha(x)[0], atol=1e-5)
        # SDPA's enable_gqa on the other paths: a padding mask, and one token at a time through the KV cache
        mask = torch.ones(2, 32, dtype=torch.bool)
        mask[0, :5] = False
        assert torch.allclose(gqa(x, attention_mask=mask)[0], mha(x, attention_mask=mask)[0], atol=1e-5)
    g1, g2 = (m.generate(x[:, :8], 20, temperature=0, attention_mask=mask[:, :8]) for m in (gqa, mha))
    assert torch.equal(g1, g2)


def test_generate_vocab_limit():
    torch.manual_seed(0)
    model = Llama(tiny_config()).eval()
    out = model.generate(torch.randint(0, 10, (4, 3)), 30, temperature=2.0, vocab_limit=10)
    assert out.max() < 10


def test_sampling_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [0.0, 0.0, 5.0, 4.9]])
    assert sample_next(logits, 0).tolist() == [1, 2]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert sample_next(logits, 1.0, top_k=1, generator=g).tolist() == [1, 2]
        assert sample_next(logits, 1.0, top_p=0.01, generator=g).tolist() == [1, 2]
        assert set(sample_next(logits, 1.0, top_k=2, generator=g).tolist()[1:]) <= {2, 3}


def test_sampling_draws_the_softmax_distribution():
    p = torch.tensor([0.5, 0.0, 0.2, 0.25, 0.05, 0.0])
    g = torch.Generator().manual_seed(0)
    draws = sample_next(p.log().expand(40000, -1), 1.0, generator=g)
    freq = torch.bincount(draws, minlength=6).double() / len(draws)
    assert freq[1] == 0 and freq[5] == 0  # zero probability (a filtered token, the last one too): never drawn
    assert (freq - p).abs().max() < 4 * (0.25 / len(draws)) ** 0.5  # 4 standard deviations at most
    assert torch.equal(sample_next(p.log().expand(8, -1), 1.0, generator=torch.Generator().manual_seed(3)),
                       sample_next(p.log().expand(8, -1), 1.0, generator=torch.Generator().manual_seed(3)))


def test_overfit_one_batch():
    torch.manual_seed(0)
    model = Llama(tiny_config())
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), 'cpu')
    x = torch.randint(0, 64, (4, 32))
    y = torch.randint(0, 64, (4, 32))
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    mask = torch.zeros_like(y)
    mask[:, -4:] = 1
    _, masked = model(x, y, loss_mask=mask)
    full = torch.nn.functional.cross_entropy(model(x)[0][:, -4:].reshape(-1, 64), y[:, -4:].reshape(-1))
    assert torch.allclose(masked, full, atol=1e-6)



@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_bf16_matches_fp32():
    torch.manual_seed(0)
    model = Llama(tiny_config()).cuda().eval()
    x = torch.randint(0, 64, (2, 32), device='cuda')
    with torch.no_grad():
        ref = model(x)[0]
        with torch.autocast('cuda', dtype=torch.bfloat16):
            low = model(x)[0]
    assert (low - ref).abs().max() < 0.1
    out = model.generate(x[:, :5], 20, temperature=0)
    assert out.shape == (2, 25)


# ---------------------------------------------------------------------------- RWKV-7
RWKV_REF = os.path.join(SHARED, 'reference', 'rwkv7_r1')


def rwkv_config(**kw):
    return RWKV7Config(**{**dict(vocab_size=64, n_layer=2, n_embd=32, head_size=8, d_decay=8, d_aaa=8, d_mv=8,
                                 d_gate=8, chunk_len=8), **kw})


def random_rwkv(seed=0, **kw):
    """A model whose every parameter is perturbed, so that no term of the maths is silently zero."""
    torch.manual_seed(seed)
    model = RWKV7(rwkv_config(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def wkv_inputs(B, T, H, N, dtype=torch.float64):
    r, k, v = (torch.randn(B, T, H, N, dtype=dtype) for _ in range(3))
    w = -0.6065306597 * torch.sigmoid(torch.randn(B, T, H, N, dtype=dtype) * 3)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, dtype=dtype), dim=-1)
    a = torch.sigmoid(torch.randn(B, T, H, N, dtype=dtype))
    return [t.requires_grad_() for t in (r, w, k, v, -kk, kk * a)]


@pytest.mark.parametrize('T', [1, 5, 16, 23, 40])
def test_wkv_chunked_equals_naive(T):
    xs = wkv_inputs(2, T, 2, 8)
    s0 = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    y1, s1 = wkv_naive(*xs, state=s0)
    y2, s2 = wkv_chunked(*xs, state=s0, chunk_len=8)
    assert torch.allclose(y1, y2, atol=1e-9) and torch.allclose(s1, s2, atol=1e-9)
    dy, ds = torch.randn_like(y1), torch.randn_like(s1)
    g1 = torch.autograd.grad((y1 * dy).sum() + (s1 * ds).sum(), xs + [s0])
    g2 = torch.autograd.grad((y2 * dy).sum() + (s2 * ds).sum(), xs + [s0])
    for name, a, b in zip(['r', 'w', 'k', 'v', 'a', 'b', 'state'], g1, g2):
        assert torch.allclose(a, b, atol=1e-8), name


def test_rwkv_state_carry_and_generate():
    model = random_rwkv()
    x = torch.randint(0, 64, (2, 29))
    with torch.no_grad():
        full = model(x)[0]
        state, pieces = None, []
        for a, b in ((0, 5), (5, 6), (6, 29)):  # pieces of 5, 1 and 23 tokens, the state carried across
            logits, state = model.step(x[:, a:b], state)
            pieces.append(logits)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    out = model.generate(x[:, :4], 12, temperature=0)
    seq = x[:, :4]
    with torch.no_grad():
        for _ in range(12):
            seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_rwkv_compiled_decode_step():
    # compile_step: greedy generation through the torch.compile'd one-token step equals the eager one, token for
    # token, and its logits and state agree to float32 rounding
    model = random_rwkv()
    x = torch.randint(0, 64, (2, 7))
    eager = model.generate(x, 6, temperature=0)
    with torch.no_grad():
        _, state = model.step(x)
        ref, ref_state = model.step_one(x[:, -1], state)
        model.compile_step()
        out, out_state = model.step_one(x[:, -1], state)
    assert hasattr(vars(model)['step_one'], '_torchdynamo_orig_callable') and torch.allclose(out, ref, atol=1e-5)
    assert all(torch.allclose(out_state[k], ref_state[k], atol=1e-5) for k in ref_state)
    assert torch.equal(model.generate(x, 6, temperature=0), eager)


def test_rwkv_from_pretrained_official_layout(tmp_path):
    model = random_rwkv(1, n_layer=3)
    sd = {'_forward_module.' + k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}  # a DeepSpeed save
    sd['_forward_module.blocks.0.att.v0'] = torch.zeros(1, 1, 32)  # the unused block-0 value-residual weights
    torch.save(sd, tmp_path / 'rwkv.pth')
    loaded = RWKV7.from_pretrained(str(tmp_path / 'rwkv.pth'), chunk_len=8)
    cfg = loaded.config
    assert (cfg.n_layer, cfg.n_embd, cfg.head_size, cfg.d_decay, cfg.d_gate, cfg.dim_ffn) == (3, 32, 8, 8, 8, 128)
    x = torch.randint(0, 64, (1, 20))
    with torch.no_grad():
        for p, q in zip(model.parameters(), loaded.parameters()):
            p.copy_(q)
        assert torch.allclose(model(x)[0], loaded(x)[0])
    torch.save({'emb.weight': torch.zeros(3, 3)}, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='not an RWKV-7'):
        RWKV7.from_pretrained(str(tmp_path / 'bad.pth'))


@pytest.mark.skipif(not os.path.isdir(RWKV_REF), reason='needs ../shared/reference/rwkv7_r1 (CI has it)')
@pytest.mark.parametrize('impl', ['naive', 'chunked'])
def test_rwkv_matches_official_reference(impl):
    model = RWKV7.from_pretrained(os.path.join(RWKV_REF, 'model.pth'), wkv_impl=impl).eval()
    tokens = torch.tensor([json.load(open(os.path.join(RWKV_REF, 'tokens.json')))])
    with torch.no_grad():
        logits, _, state = model(tokens, return_state=True)
    assert np.abs(logits[0].numpy() - np.load(os.path.join(RWKV_REF, 'logits.npy'))).max() < 1e-4
    ref = np.load(os.path.join(RWKV_REF, 'final_state.npz'))
    for key in ('att_x_prev', 'att_kv', 'ffn_x_prev'):
        assert np.abs(state[key][:, 0].numpy() - ref[key]).max() < 1e-4, key
    state, steps = None, []
    for t in range(tokens.size(1)):
        logits, state = model.step(tokens[:, t:t + 1], state)
        steps.append(logits[0, 0])
    assert np.abs(torch.stack(steps).numpy() - np.load(os.path.join(RWKV_REF, 'step_logits.npy'))).max() < 1e-4
