"""
The test suite: python -m pytest test_all.py  (CPU, a few minutes; GPU tests skip without a GPU).
Tests make their own small data; none needs ../shared or the network. The gpt2 tokenizer tests skip when tiktoken's
GPT-2 files are neither cached nor downloadable.
"""

import json
import math
import os
import random
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from model_llama import Llama, LlamaConfig, sample_next
from shards import load_split
from tokenizer import EOT, SPECIAL_TOKENS, get_tokenizer, tokenizer_from_state, train_sentencepiece

ROOT = os.path.dirname(os.path.abspath(__file__))
TEXT = ''.join(f"Line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times. Ünïcödé ✓ 😀\n"
               for i in range(400))


def run(script, *args, cwd, check=True, timeout=300):
    p = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


# ---------------------------------------------------------------------------- tokenizers
def gpt2_or_skip():
    try:
        return get_tokenizer('gpt2')
    except Exception as e:  # offline with no tiktoken cache
        pytest.skip(f"GPT-2 BPE files unavailable (set TIKTOKEN_CACHE_DIR): {e}")


@pytest.fixture(scope='module')
def sp_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('sp') / 'tokenizer.model')
    return train_sentencepiece([TEXT], 400, path)


@pytest.mark.parametrize('kind', ['gpt2', 'byte', 'sp', 'sp_file'])
def test_tokenizer_round_trip(kind, sp_model):
    tok = {'gpt2': gpt2_or_skip, 'byte': lambda: get_tokenizer('byte'),
           'sp': lambda: get_tokenizer('sp:400', os.path.dirname(sp_model)),
           'sp_file': lambda: get_tokenizer(sp_model)}[kind]()
    text = "<|im_start|>user\nWhat is 2+2? Ünï 😀<|im_end|>\n<|im_start|>assistant\n<think>\n2+2=4\n</think>\n4" \
           "<|im_end|><|pad|><|endoftext|>  two  spaces\tand tab\n\nend"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    for t in SPECIAL_TOKENS + [EOT]:
        assert tok.special[t] in ids and tok.encode(t) == [tok.special[t]]
        assert tok.special[t] < tok.vocab_size
    assert len(set(tok.special.values())) == len(SPECIAL_TOKENS) + 1
    assert tok.special[EOT] == tok.eot_id
    assert max(tok.encode(TEXT)) < tok.vocab_size and tok.decode(tok.encode(TEXT)) == TEXT
    tok2 = tokenizer_from_state(tok.state())
    assert tok2.encode(text) == ids and tok2.vocab_size == tok.vocab_size


def test_tokenizer_ids():
    tok = get_tokenizer('byte')
    assert tok.vocab_size == 262 and tok.eot_id == 256 and tok.encode('A<think>') == [65, 259]
    assert tok.encode('<think>', special=False) == list(b'<think>')
    gpt2 = gpt2_or_skip()
    assert gpt2.eot_id == 50256 and gpt2.special['<|im_start|>'] == 50257 and gpt2.vocab_size == 50262
    assert gpt2.encode('hello world') == [31373, 995]
    with pytest.raises(ValueError, match='unknown tokenizer'):
        get_tokenizer('gpt3')
    with pytest.raises(FileNotFoundError, match='run prepare.py'):
        get_tokenizer('sp:512', '/nonexistent')


# ---------------------------------------------------------------------------- shards and prepare.py
def test_prepare_local_sources(tmp_path):
    (tmp_path / 'docs').mkdir()
    recs = [{'text': f"document {i}: " + 'abc ' * (i % 7)} for i in range(40)]
    (tmp_path / 'docs' / 'a.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs[:20]))
    (tmp_path / 'docs' / 'b.json').write_text(json.dumps(recs[20:30]))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({'text': [r['text'] for r in recs[30:]]}), str(tmp_path / 'docs' / 'c.parquet'))
    p = run('prepare.py', '--dataset=docs', '--tokenizer=byte', '--data_dir=d', cwd=tmp_path)
    meta = json.load(open(tmp_path / 'd' / 'meta.json'))
    assert meta['train_docs'] + meta['val_docs'] == 40 and meta['val_docs'] == 4 and meta['vocab_size'] == 262
    tok = get_tokenizer('byte')
    train = np.concatenate(load_split(str(tmp_path / 'd'), 'train'))
    assert train[0] == tok.eot_id and (train == tok.eot_id).sum() == 36
    docs = tok.decode(train.tolist()).split(EOT)[1:]
    assert docs == [r['text'] for i, r in enumerate(recs) if i % 10 != 9]
    assert len(train) == meta['train_tokens']
    p = run('prepare.py', '--dataset=docs', '--tokenizer=byte', '--data_dir=d', cwd=tmp_path)
    assert 'nothing to do' in p.stdout


def test_prepare_shards_and_recipe_source(tmp_path):
    recs = [{'story': f"story {i} " + 'la ' * i} for i in range(30)]
    (tmp_path / 'stories.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    run('prepare.py', '--dataset=tinystories', '--source=stories.jsonl', '--text_field=story', '--tokenizer=byte',
        '--shard_size=500', '--val_fraction=0.2', cwd=tmp_path)
    d = str(tmp_path / 'data' / 'tinystories_byte')
    meta = json.load(open(os.path.join(d, 'meta.json')))
    assert meta['val_docs'] == 6 and len(meta['files']) >= 4  # a local copy of a recipe carves out val_fraction
    for sp, n in (('train', 24), ('val', 6)):
        shards = load_split(d, sp)
        assert all(len(s) == 500 for s in shards[:-1])  # documents span shard boundaries, as in llm.c
        text = get_tokenizer('byte').decode(np.concatenate(shards).tolist())
        assert text.count(EOT) == n and sum(len(s) for s in shards) == meta[f'{sp}_tokens']


def test_special_tokens_stay_text_in_raw_corpora(sp_model):
    for tok in (get_tokenizer(sp_model), get_tokenizer('byte')):
        ids = tok.encode('a <think> b <|endoftext|>', special=False)
        assert not set(ids) & set(tok.special.values()) and tok.decode(ids) == 'a <think> b <|endoftext|>'
        assert tok.decode(ids + [tok.vocab_size + 5]) == tok.decode(ids)  # the model's padding ids decode to nothing


def test_prepare_single_text_split_and_sentencepiece(tmp_path):
    (tmp_path / 'input.txt').write_text(TEXT)
    run('prepare.py', '--dataset=shakespeare', '--source=input.txt', '--tokenizer=sp:400', cwd=tmp_path)
    d = tmp_path / 'data' / 'shakespeare_sp400'
    tok = get_tokenizer('sp:400', str(d))
    train, val = (np.concatenate(load_split(str(d), s)).tolist() for s in ('train', 'val'))
    n = int(len(TEXT) * 0.9)  # the last 10% of the characters is val, as nanoGPT splits Tiny Shakespeare
    assert tok.decode(train) == EOT + TEXT[:n] and tok.decode(val) == EOT + TEXT[n:]


SHARED = os.path.join(ROOT, '..', 'shared', 'data')


@pytest.mark.skipif(not os.path.isdir(SHARED), reason='real-data check: needs ../shared (CI has it)')
def test_prepare_real_shakespeare(tmp_path):
    src = os.path.join(SHARED, 'shakespeare', 'input.txt')
    run('prepare.py', '--dataset=shakespeare', f'--source={src}', '--tokenizer=byte', cwd=tmp_path)
    meta = json.load(open(tmp_path / 'data' / 'shakespeare_byte' / 'meta.json'))
    text = open(src, encoding='utf-8').read()  # ASCII: one byte per character, plus one end-of-text per split
    assert (meta['train_tokens'], meta['val_tokens']) == (int(len(text) * 0.9) + 1, len(text) - int(len(text) * 0.9) + 1)


# ---------------------------------------------------------------------------- the model
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


# ---------------------------------------------------------------------------- train.py and sample.py end to end
TRAIN_ARGS = ['--data_dir=d', '--block_size=32', '--batch_size=4', '--n_layer=2', '--n_head=4', '--n_kv_head=2',
              '--n_embd=32', '--eval_interval=5', '--eval_iters=2', '--log_interval=1', '--warmup_iters=3',
              '--lr_decay_iters=12', '--learning_rate=3e-3', '--gradient_accumulation_steps=2', '--dropout=0.1',
              '--device=cpu']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('train')
    (tmp / 'input.txt').write_text(TEXT)
    run('prepare.py', '--dataset=input.txt', '--tokenizer=byte', '--data_dir=d', cwd=tmp)
    return tmp


def test_exact_resume(data_dir):
    # stopped at 7, inside a log window of 3 and between evals: the resumed run logs the same numbers
    run('train.py', *TRAIN_ARGS, '--out_dir=full', '--max_iters=12', '--log_interval=3', cwd=data_dir)
    run('train.py', *TRAIN_ARGS, '--out_dir=part', '--max_iters=7', '--log_interval=3', cwd=data_dir)
    run('train.py', *TRAIN_ARGS, '--out_dir=part', '--max_iters=12', '--log_interval=3', '--init_from=resume',
        cwd=data_dir)
    a = torch.load(data_dir / 'full' / 'ckpt.pt', weights_only=False)
    b = torch.load(data_dir / 'part' / 'ckpt.pt', weights_only=False)
    assert a['iter_num'] == b['iter_num'] == 12
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    logs = [[json.loads(line) for line in open(data_dir / d / 'log.jsonl')] for d in ('full', 'part')]
    losses = [{r['iter']: r['loss'] for r in log if 'loss' in r} for log in logs]
    assert losses[0] == losses[1] and sorted(losses[0]) == [3, 6, 9, 12]
    assert json.load(open(data_dir / 'full' / 'config.json'))['max_iters'] == 12
    assert a['tokenizer']['spec'] == 'byte' and a['config']['n_embd'] == 32
    # --eval_only: the loss estimate, then bench.py's perplexity and bits per byte of the val split; writes nothing
    before = sorted(os.listdir(data_dir / 'full'))
    p = run('train.py', *TRAIN_ARGS, '--out_dir=full', '--init_from=resume', '--eval_only', cwd=data_dir)
    m = re.search(r'\| d \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \|', p.stdout)
    assert m, p.stdout
    loss, nbytes, bpb = float(m.group(2)), int(m.group(4).replace(',', '')), float(m.group(5))
    assert 0 < loss < 6 and abs(bpb - loss * int(m.group(1).replace(',', '')) / math.log(2) / nbytes) < 1e-3
    assert sorted(os.listdir(data_dir / 'full')) == before


def test_sigint_saves_and_resumes(data_dir):
    args = [sys.executable, os.path.join(ROOT, 'train.py'), *TRAIN_ARGS, '--out_dir=sig', '--max_iters=100000',
            '--eval_interval=100000', '--lr_decay_iters=100000']
    proc = subprocess.Popen(args, cwd=data_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith('iter 3:'):
            proc.send_signal(signal.SIGINT)
            break
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and 'resume with --init_from=resume' in out
    it = torch.load(data_dir / 'sig' / 'ckpt.pt', weights_only=False)['iter_num']
    assert it >= 3
    p = run('train.py', *TRAIN_ARGS, '--out_dir=sig', f'--max_iters={it + 2}', '--init_from=resume', cwd=data_dir)
    assert f'resuming from sig/ckpt.pt at iteration {it}' in p.stdout


def test_sample_streams(data_dir):
    run('train.py', *TRAIN_ARGS, '--out_dir=s', '--max_iters=5', cwd=data_dir)
    p = run('sample.py', '--out_dir=s', '--start=Line', '--num_samples=2', '--max_new_tokens=20', '--device=cpu',
            cwd=data_dir)
    assert p.stdout.count('Line') >= 2 and p.stdout.count('---------------') == 2
    p = run('sample.py', '--out_dir=s', '--start=Line', '--max_new_tokens=20', '--temperature=0', '--device=cpu',
            '--num_samples=1', cwd=data_dir)
    q = run('sample.py', '--out_dir=s', '--start=Line', '--max_new_tokens=20', '--temperature=0', '--device=cpu',
            '--num_samples=1', '--stream=False', cwd=data_dir)
    assert p.stdout == q.stdout


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
from model_rwkv7 import RWKV7, RWKV7Config, wkv_chunked, wkv_naive  # noqa: E402

RWKV_REF = os.path.join(ROOT, '..', 'shared', 'reference', 'rwkv7_r1')


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


def test_rwkv_world_tokenizer(tmp_path):
    vocab = [b'a', b'b', b'c', 'é'.encode(), b'ab', b'abc', b'\n\n']
    lines = [f"{i + 1} {repr(t.decode()) if i % 2 else repr(t)} {len(t)}" for i, t in enumerate(vocab)]
    (tmp_path / 'vocab.txt').write_text('\n'.join(lines) + '\n')
    tok = get_tokenizer(f"rwkv:{tmp_path / 'vocab.txt'}")
    assert tok.encode('abcab\n\nc') == [6, 5, 7, 3]  # greedy longest match
    assert tok.encode('é<think>a') == [4, tok.special['<think>'], 1] and tok.eot_id == 0
    assert tok.decode(tok.encode('cabé<|endoftext|>')) == 'cabé<|endoftext|>'
    assert tokenizer_from_state(tok.state()).encode('abc') == [6]


def test_rwkv_train_resume_and_sample(data_dir):
    args = [*TRAIN_ARGS, '--model_type=rwkv7', '--n_layer=2', '--n_embd=32', '--head_size=8', '--chunk_len=8',
            '--log_interval=3']
    run('train.py', *args, '--out_dir=rwkv_full', '--max_iters=8', cwd=data_dir)
    run('train.py', *args, '--out_dir=rwkv_part', '--max_iters=4', cwd=data_dir)
    run('train.py', *args, '--out_dir=rwkv_part', '--max_iters=8', '--init_from=resume', cwd=data_dir)
    a, b = (torch.load(data_dir / d / 'ckpt.pt', weights_only=False)['model'] for d in ('rwkv_full', 'rwkv_part'))
    assert all(torch.equal(a[k], b[k]) for k in a)
    p = run('sample.py', '--out_dir=rwkv_full', '--start=Line', '--max_new_tokens=20', '--num_samples=1',
            '--device=cpu', cwd=data_dir)
    assert p.stdout.startswith('Line')


# ---------------------------------------------------------------------------- reasoning format and gsm_synth
import chat  # noqa: E402
import gsm_synth  # noqa: E402


@pytest.mark.parametrize('kind', ['byte', 'sp_file', 'gpt2'])
def test_chat_render_mask(kind, sp_model):
    tok = {'byte': lambda: get_tokenizer('byte'), 'sp_file': lambda: get_tokenizer(sp_model), 'gpt2': gpt2_or_skip}[kind]()
    reply = chat.assistant_reply('2 + 2 = 4', '4')
    msgs = [{'role': 'user', 'content': 'What is 2+2?'}, {'role': 'assistant', 'content': reply},
            {'role': 'user', 'content': 'And 3+3?'}, {'role': 'assistant', 'content': 'Six.'}]
    ids, mask = chat.render(tok, msgs)
    assert len(ids) == len(mask)
    text = tok.decode(ids)
    assert text == (f"<|im_start|>system\n{chat.SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                    f"<|im_start|>assistant\n<think>\n2 + 2 = 4\n</think>\n\n**Final Answer:** 4<|im_end|>\n"
                    f"<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\nSix.<|im_end|>\n")
    learned = [i for i, m in zip(ids, mask) if m]  # exactly the two replies, each with its <|im_end|>
    assert tok.decode(learned) == reply + '<|im_end|>' + 'Six.<|im_end|>'
    p = chat.prompt(tok, 'What is 2+2?')
    assert tok.decode(p).endswith('What is 2+2?<|im_end|>\n<|im_start|>assistant\n') and p == ids[:len(p)]


def test_answer_parsing():
    assert chat.final_answer('<think>\nx\n</think>\n\n**Final Answer:** 1,234.<|im_end|>') == '1234'
    assert chat.final_answer('**Final Answer:** 1\n**Final Answer:** $-7.50') == '-7.5'
    assert chat.final_answer('**Final Answer:** 18.00') == '18' and chat.final_answer('no answer') is None
    assert chat.final_answer('**Final Answer:** Paris') == 'Paris'
    assert chat.gsm8k_parts('She has 48/2 = <<48/2=24>>24.\n#### 1,024') == ('She has 48/2 = 24.', '1024')
    assert chat.gsm8k_parts('x <<3-5=-2>>-2\n#### -2', keep_calc=True) == ('x <<3-5=-2>>-2', '-2')
    with pytest.raises(ValueError, match='####'):
        chat.gsm8k_parts('no final line')


def test_gsm_synth_determinism_splits_and_arithmetic():
    a, b = gsm_synth.generate('train', 300, seed=3), gsm_synth.generate('train', 300, seed=3)
    assert a == b and a != gsm_synth.generate('train', 300, seed=4)
    test = gsm_synth.generate('test', 100, seed=3)
    assert not {p['question'] for p in a} & {p['question'] for p in test}
    assert all(gsm_synth.split_of(p['question']) == 'test' for p in test)
    for p in a + test:
        assert 2 <= p['steps'] <= 4 and len(p['answer'].split('\n')) >= p['steps'] + 1
        values = []
        for expr, res in re.findall(r'<<([^=]+)=([^>]+)>>', p['answer']):
            x, op, y = re.fullmatch(r'(\d+)([-+*/])(\d+)', expr).groups()
            exact = {'+': int(x) + int(y), '-': int(x) - int(y), '*': int(x) * int(y), '/': int(x) / int(y)}[op]
            assert exact == int(res) and 0 <= int(res) <= 1000 and (op not in '*/' or min(int(x), int(y)) <= 12)
            values.append(int(res))
        reasoning, answer = chat.gsm8k_parts(p['answer'])
        assert answer == str(values[-1]) and '<<' not in reasoning
        assert all(int(n) <= 100 for n in re.findall(r'\d+', p['question']))


def test_gsm_synth_train_ops_weight_train_only(tmp_path):
    plain, heavy = ([p['answer'].count('/') for p in gsm_synth.generate('train', 300, seed=3, ops=o)]
                    for o in ('+-*/', '+-*///'))  # an operation written three times is drawn three times as often
    assert sum(heavy) > 1.5 * sum(plain)
    for d, ops in (('a', '+-*/'), ('b', '+-*///')):  # prepare.py: the train split only; val and test stay the same
        run('prepare.py', '--tokenizer=byte', f'--data_dir={d}', '--synth_train=200', '--synth_val=20',
            '--synth_test=30', f'--synth_train_ops={ops}', cwd=tmp_path)
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert (a / 'test.jsonl').read_text() == (b / 'test.jsonl').read_text()
    assert (a / 'val_000.bin').read_bytes() == (b / 'val_000.bin').read_bytes()
    assert (a / 'train_000.bin').read_bytes() != (b / 'train_000.bin').read_bytes()


def test_gsm_synth_scratch_columns_give_the_result():
    """The working is true arithmetic, one operation per `=` (`4*9=36+4=40`, `6-8=-2+10=8`, `29/6=4 r29-24=5`), and holds
    the result: + - x the last column's value, then the others' last digits right to left; / the quotient digits."""
    def check(step, op):
        if op == '/':  # `29/6=4 r29-24=5`: the digit, then the remainder as cur - digit * k; `2/6=0 r2` for a 0
            cur, k, q, c2, p, r, r0 = re.fullmatch(r'(\d+)/(\d+)=(\d+)(?: r(\d+)-(\d+)=(\d+)| r(\d+))?', step).groups()
            if q == '0':
                assert p is None and int(r0 or 0) == int(cur) < int(k)
            else:
                assert c2 == cur and int(p) == int(q) * int(k) and int(r) == int(cur) - int(p) < int(k)
            return q
        parts = step.split('=')
        for left, right in zip(parts, parts[1:]):  # each link: one operation on the previous value
            assert re.fullmatch(r'-?\d+[-+*]\d+', left) and eval(left) == int(re.match(r'-?\d+', right).group())
        assert 0 <= int(parts[-1]) < (10 if op == '-' else 10 ** 3)
        return parts[-1]

    def result(line, op):
        vals = [check(st, op) for st in line.split(': ', 1)[1].rstrip('.').split(', ')]
        return int(''.join(vals) if op == '/' else vals[-1] + ''.join(v[-1] for v in vals[-2::-1]))
    rng = random.Random(0)
    for _ in range(3000):
        a, k = rng.randint(0, 999), rng.randint(2, 12)
        b = rng.randint(0, a)
        for x, op, y, want in ((a, '+', b, a + b), (b, '+', a, a + b), (a, '-', b, a - b), (a, '*', k, a * k),
                               (k, '*', a, a * k), (a * k, '/', k, a)):
            assert result(gsm_synth.columns(x, op, y), op) == want
    assert gsm_synth.columns(105, '-', 98) == '105-98: 5-8=-3+10=7, 0-9=-9-1=-10+10=0, 1-0=1-1=0.'
    assert gsm_synth.columns(405, '+', 75) == '405+75: 5+5=10, 0+7=7+1=8, 4+0=4.'
    assert gsm_synth.columns(8, '*', 38) == '38*8: 8*8=64, 3*8=24+6=30.'  # the factor <= 12 is the multiplier
    assert gsm_synth.columns(294, '/', 6) == '294/6: 2/6=0 r2, 29/6=4 r29-24=5, 54/6=9 r54-54=0.'
    plain, scratch = gsm_synth.generate('val', 50, seed=1), gsm_synth.generate('val', 50, seed=1, scratch=True)
    assert [p['question'] for p in plain] == [p['question'] for p in scratch]
    for p, q in zip(plain, scratch):  # the same solution lines, each after its working, each step after its sentence
        lines = q['answer'].split('\n')
        work = [i for i, line in enumerate(lines) if re.match(r'\d+[-+*/]\d+: ', line)]
        assert [lines[i + 1] for i in work] + lines[-1:] == p['answer'].split('\n')
        quoted = [line for i, line in enumerate(lines[:-1]) if i not in work and i - 1 not in work]
        assert quoted == re.split(r'(?<=[.?]) ', p['question'])[1:-1] and len(quoted) == p['steps']


def test_pack_examples_never_splits():
    from shards import pack_examples
    lengths = [5, 3, 9, 4, 12, 2]
    starts = np.cumsum([0] + lengths[:-1])
    tokens = [np.concatenate([np.full(n, k + 1) for k, n in enumerate(lengths)])]
    masks = [np.ones_like(tokens[0])]
    ex = np.column_stack([np.zeros(6, dtype=int), starts, lengths])
    ids, learn, cut = pack_examples(tokens, masks, ex, [0, 2, 4, 5], 10, 0, lookahead=2)
    assert ids[0].tolist() == [1] * 5 + [2] * 3 + [0] * 2          # 5 + 3 fit, the 9 would not: padded
    assert ids[1].tolist() == [3] * 9 + [0]
    assert ids[2].tolist() == [5] * 10 and cut == 1                  # longer than a row: truncated, counted
    assert ids[3].tolist() == [6] * 2 + [1] * 5 + [2] * 3           # wraps around to example 0
    assert (learn == (ids != 0)).all()
    ids, learn, cut = pack_examples(tokens, masks, ex, [1, 3], 10, 0, lookahead=2)  # first fit
    assert ids[0].tolist() == [2] * 3 + [4] * 4 + [0] * 3          # 3, the 9 skipped, the 4 taken
    assert ids[1].tolist() == [4] * 4 + [6] * 2 + [0] * 4 and cut == 0  # the 12 skipped, the 2 taken; window ends
    assert (learn == (ids != 0)).all()


def test_group_by_length_draws_one_band_and_every_example_alike():
    from shards import draw_by_length, length_bands
    lengths = np.array([10, 40, 33, 34, 90, 64, 65, 200, 20, 97])  # inputs of length - 1 tokens
    band_len, members = length_bands(lengths, block_size=96)
    assert band_len == [32, 64, 96] and [m.tolist() for m in members] == [[0, 2, 8], [1, 3, 5, 6], [4, 7, 9]]
    gen, seen = torch.Generator().manual_seed(0), np.zeros(len(lengths))
    for _ in range(3000):
        picks = draw_by_length(band_len, members, 8, 192, gen)  # only the first 8 (a curriculum's share)
        band = [k for k, m in enumerate(members) if np.isin(picks.numpy(), m).all()]
        assert len(band) == 1 and len(picks) == 192 // band_len[band[0]] and picks.max() < 8
        np.add.at(seen, picks.numpy(), 1)
    share = seen[:8] / seen.sum()  # each of the 8 drawn 1/8 of the time, whatever its band
    assert np.abs(share - 1 / 8).max() < 0.01 and seen[8:].sum() == 0, share


def test_prepare_chat_and_sft_accumulation(tmp_path):
    recs = [{'question': f"What is {i} + {i}?", 'answer': f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
            for i in range(60)]
    (tmp_path / 'gsm').mkdir()
    (tmp_path / 'gsm' / 'train.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs[:50]) + 'not json\n')
    (tmp_path / 'gsm' / 'test.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs[50:]))
    p = run('prepare.py', '--dataset=gsm8k', '--source=gsm', '--tokenizer=byte', '--data_dir=d', cwd=tmp_path,
            check=False)
    assert p.returncode == 1 and 'train.jsonl:51: malformed JSON' in p.stderr and 'Traceback' not in p.stderr
    run('prepare.py', '--dataset=gsm8k', '--source=gsm', '--tokenizer=byte', '--data_dir=d', '--skip_bad', cwd=tmp_path)
    meta = json.load(open(tmp_path / 'd' / 'meta.json'))
    assert (meta['train_examples'], meta['val_examples'], meta['test_examples'], meta['skipped_bad']) == (45, 5, 10, 1)
    assert len(open(tmp_path / 'd' / 'test.jsonl').readlines()) == 10
    run('prepare.py', '--dataset=gsm8k', '--source=gsm', '--tokenizer=byte', '--data_dir=d20', '--skip_bad',
        '--max_examples=20', cwd=tmp_path)  # the first 20 training records, 10% of them val; all of test
    meta = json.load(open(tmp_path / 'd20' / 'meta.json'))
    assert (meta['train_examples'], meta['val_examples'], meta['test_examples']) == (18, 2, 10)
    # one step of 2 x 4 accumulated micro-batches equals one step of a batch of 8 (same rows, same sampler draws)
    common = ['--data_dir=d', '--block_size=128', '--n_layer=1', '--n_head=2', '--n_kv_head=1', '--n_embd=16',
              '--max_iters=1', '--eval_iters=1', '--device=cpu', '--warmup_iters=0', '--decay_lr=False']
    run('train.py', *common, '--out_dir=a', '--batch_size=4', '--gradient_accumulation_steps=2', cwd=tmp_path)
    run('train.py', *common, '--out_dir=b', '--batch_size=8', '--gradient_accumulation_steps=1', cwd=tmp_path)
    a, b = (torch.load(tmp_path / d / 'ckpt.pt', weights_only=False)['model'] for d in 'ab')
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    run('train.py', *common, '--out_dir=c', '--init_from=a', '--curriculum', cwd=tmp_path)  # fine-tune a run
    p = run('sample.py', '--out_dir=c', '--mode=reasoning', '--start=What is 2 + 2?', '--max_new_tokens=8',
            '--num_samples=1', '--device=cpu', cwd=tmp_path)
    assert 'Final answer: ' in p.stdout
    p = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), '--out_dir=c', '--mode=chat', '--device=cpu',
                        '--max_new_tokens=4'], cwd=tmp_path, input='hello\nexit\n', capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stdout.startswith('> ')
    p = run('bench.py', '--task=accuracy', '--out_dir=c', '--data=d/test.jsonl', '--limit=3', '--max_new_tokens=8',
            '--device=cpu', cwd=tmp_path)
    assert re.search(r'\| c \| 3 \| [01]\.\d{3} \| \[', p.stdout)
