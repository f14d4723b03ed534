"""
GGUF export (export.py <source> x.gguf), read back with the ggml project's `gguf` reader: every tensor equal to the
model's (q/k in llama.cpp's interleaved RoPE layout; Q8_0 within its rounding), the hyperparameters, and a tokenizer
whose pieces, scores and types are SentencePiece's or GPT-2's; with ../shared, our export of llama2.c's
stories260K against llama.cpp's own conversion of it; with llama-cpp-python installed, llama.cpp's greedy tokens
from our file equal sample.py's. RWKV-7 in llama.cpp's rwkv7 layout, read back, and in llama.cpp (logits and greedy
tokens). The export's bad input.

    python -m pytest test_gguf.py -q
"""

import dataclasses
import os

import numpy as np
import pytest
import torch

from conftest import ROOT, SHARED, TEXT, gpt2_or_skip, run
from model_llama import Llama, LlamaConfig
from model_rwkv7 import RWKV7, RWKV7Config
from tokenizer import get_tokenizer, train_sentencepiece

import gguf  # noqa: E402  (requirements.txt)
STORIES = os.path.join(SHARED, 'data', 'llama2c', 'stories260K')
try:
    import llama_cpp
except ImportError:
    llama_cpp = None


def read(path):
    """(metadata {key: value}, {tensor name: fp32 numpy array in numpy's (out, in) order}) of a GGUF file."""
    r = gguf.GGUFReader(path)
    meta = {}
    for k, f in r.fields.items():
        if not f.types or k.startswith('GGUF.'):
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            vals = [f.parts[i] for i in f.data]
            meta[k] = [bytes(v).decode() for v in vals] if f.types[-1] == gguf.GGUFValueType.STRING else \
                [v.tolist()[0] for v in vals]
        elif f.types[0] == gguf.GGUFValueType.STRING:
            meta[k] = bytes(f.parts[f.data[0]]).decode()
        else:
            meta[k] = f.parts[f.data[0]].tolist()[0]
    tensors = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(t.shape.tolist()[::-1])
               for t in r.tensors}
    return meta, tensors


def checkpoint(tmp_path, tok, seed=0, **kw):
    torch.manual_seed(seed)
    model = Llama(LlamaConfig(**{**dict(block_size=64, vocab_size=(tok.vocab_size + 63) // 64 * 64, n_layer=2,
                                        n_head=4, n_kv_head=2, n_embd=64), **kw})).eval()
    torch.save({'model_type': 'llama', 'model_args': dataclasses.asdict(model.config), 'model': model.state_dict(),
                'tokenizer': tok.state(), 'iter_num': 5}, tmp_path / 'best.pt')
    return model


def interleave(w, heads):
    """Rows of a q/k projection from rotate-half to Meta's interleaved pairs (what llama.cpp's 'llama' expects)."""
    return w.view(heads, 2, w.shape[0] // heads // 2, -1).transpose(1, 2).reshape(w.shape)


@pytest.mark.parametrize('dtype', ['float32', 'float16', 'bfloat16', 'q8_0'])
def test_tensors_and_hyperparameters_round_trip(tmp_path, dtype):
    train_sentencepiece([TEXT], 340, str(tmp_path / 'tokenizer.model'))
    tok = get_tokenizer('sp:340', str(tmp_path))
    model = checkpoint(tmp_path, tok, rope_scaling={'rope_type': 'linear', 'factor': 2})  # an int factor: f32 still
    p = run('export.py', str(tmp_path), 'm.gguf', f'--dtype={dtype}', cwd=tmp_path, timeout=120)
    assert p.stdout.strip() == 'wrote m.gguf' and not os.path.exists(tmp_path / 'm.gguf.tmp')
    meta, t = read(str(tmp_path / 'm.gguf'))
    cfg, sd = model.config, model.state_dict()
    assert meta['general.architecture'] == 'llama' and meta['llama.block_count'] == 2
    assert (meta['llama.embedding_length'], meta['llama.feed_forward_length'], meta['llama.attention.head_count'],
            meta['llama.attention.head_count_kv'], meta['llama.rope.dimension_count'], meta['llama.context_length']) \
        == (64, cfg.intermediate_size, 4, 2, 16, 64)
    assert meta['general.file_type'] == {'float32': 0, 'float16': 1, 'bfloat16': 32, 'q8_0': 7}[dtype]
    assert meta['llama.rope.scaling.factor'] == 2.0 and meta['llama.rope.scaling.type'] == 'linear'
    r = gguf.GGUFReader(str(tmp_path / 'm.gguf'))  # llama.cpp reads these keys as float32 only
    assert all(r.fields[k].types[0] == gguf.GGUFValueType.FLOAT32 for k in (
        'llama.rope.scaling.factor', 'llama.rope.freq_base', 'llama.attention.layer_norm_rms_epsilon'))
    want = {'token_embd.weight': sd['embed_tokens.weight'], 'output.weight': sd['lm_head.weight'],
            'output_norm.weight': sd['norm.weight'], 'blk.1.attn_q.weight': interleave(sd['layers.1.self_attn.q_proj.weight'], 4),
            'blk.1.attn_k.weight': interleave(sd['layers.1.self_attn.k_proj.weight'], 2),
            'blk.0.attn_v.weight': sd['layers.0.self_attn.v_proj.weight'],
            'blk.0.ffn_down.weight': sd['layers.0.mlp.down_proj.weight'],
            'blk.0.ffn_norm.weight': sd['layers.0.post_attention_layernorm.weight']}
    assert len(t) == 3 + 2 * 9
    tol = {'float32': 0, 'float16': 1e-3, 'bfloat16': 8e-3, 'q8_0': 1e-2}[dtype]
    for name, w in want.items():
        got = torch.from_numpy(np.array(t[name], dtype=np.float32))
        assert got.shape == w.shape, name
        assert (got - w).abs().max() <= tol * w.abs().max(), name
    assert torch.equal(torch.from_numpy(t['output_norm.weight'].astype(np.float32)), sd['norm.weight'])  # 1-D: f32


@pytest.mark.parametrize('kind', ['gpt2', 'sp'])
def test_tokenizer_is_embedded(tmp_path, kind):
    if kind == 'gpt2':
        gpt2_or_skip()
    if kind == 'sp':
        train_sentencepiece([TEXT], 340, str(tmp_path / 'tokenizer.model'))
    tok = get_tokenizer('sp:340' if kind == 'sp' else kind, str(tmp_path))
    model = checkpoint(tmp_path, tok)
    run('export.py', 'best.pt', 'm.gguf', cwd=tmp_path, timeout=180)
    meta, _ = read(str(tmp_path / 'm.gguf'))
    tokens, types = meta['tokenizer.ggml.tokens'], meta['tokenizer.ggml.token_type']
    assert len(tokens) == len(types) == model.config.vocab_size
    for t in ('<|im_start|>', '<|im_end|>', '<think>', '</think>', '<|pad|>'):
        assert tokens[tok.special[t]] == t and types[tok.special[t]] == 3  # control: llama.cpp parses them
    assert meta['tokenizer.ggml.eos_token_id'] == tok.eot_id
    assert meta['tokenizer.ggml.eot_token_id'] == tok.special['<|im_end|>']
    assert tokens[-1] == f'[PAD{len(tokens) - 1}]' and types[-1] == 5
    assert meta['tokenizer.chat_template'].startswith('{')
    if kind == 'sp':
        sp = tok.sp
        assert meta['tokenizer.ggml.model'] == 'llama' and meta['tokenizer.ggml.add_space_prefix'] is False
        assert tokens[:sp.get_piece_size()] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        assert meta['tokenizer.ggml.scores'][300] == pytest.approx(sp.get_score(300)) != 0
        assert types[sp.piece_to_id('<0x41>')] == 6 and types[sp.unk_id()] == 2
    else:
        assert meta['tokenizer.ggml.model'] == 'gpt2' and meta['tokenizer.ggml.pre'] == 'gpt-2'
        assert tokens[tok.encode('A')[0]] == 'A' and tokens[tok.encode(' the')[0]] == '\u0120the'  # GPT-2's characters
        assert meta['tokenizer.ggml.merges'][0] == '\u0120 t' and len(meta['tokenizer.ggml.merges']) == 50000


@pytest.mark.skipif(not os.path.isfile(os.path.join(STORIES, 'stories260K.gguf')),
                    reason='needs ../shared/data/llama2c (CI has it)')
def test_stories260k_equals_llama_cpps_own_conversion(tmp_path):
    from export import export
    export(f"llama2c:{os.path.join(STORIES, 'stories260K.bin')}", str(tmp_path / 's.gguf'))
    ours, ot = read(str(tmp_path / 's.gguf'))
    ref, rt = read(os.path.join(STORIES, 'stories260K.gguf'))
    assert sorted(ot) == sorted(rt)
    for name in rt:
        assert ot[name].shape == rt[name].shape and np.abs(ot[name] - rt[name]).max() <= 1e-6, name
    for key in ('tokenizer.ggml.model', 'tokenizer.ggml.tokens', 'tokenizer.ggml.token_type', 'general.architecture',
                'tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.unknown_token_id',
                'llama.embedding_length', 'llama.feed_forward_length', 'llama.attention.head_count',
                'llama.attention.head_count_kv', 'llama.block_count', 'llama.rope.dimension_count'):
        assert ours[key] == ref[key], key
    assert np.allclose(ours['tokenizer.ggml.scores'], ref['tokenizer.ggml.scores'])
    assert ours['llama.attention.layer_norm_rms_epsilon'] == pytest.approx(ref['llama.attention.layer_norm_rms_epsilon'])


def rwkv_checkpoint(tmp_path, tok, head_size=64, noise=0.1):
    """A 2-layer RWKV-7 (C = 128) with noise on every weight (its zero-initialised ones too), saved as best.pt."""
    torch.manual_seed(0)
    model = RWKV7(RWKV7Config(vocab_size=(tok.vocab_size + 63) // 64 * 64, n_layer=2, n_embd=128,
                              head_size=head_size)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    torch.save({'model_type': 'rwkv7', 'model_args': dataclasses.asdict(model.config), 'model': model.state_dict(),
                'tokenizer': tok.state(), 'iter_num': 5}, tmp_path / 'best.pt')
    return model


@pytest.mark.parametrize('dtype', ['float32', 'q8_0'])
def test_rwkv7_layout_round_trip(tmp_path, dtype):
    train_sentencepiece([TEXT], 340, str(tmp_path / 'tokenizer.model'))
    tok = get_tokenizer('sp:340', str(tmp_path))
    model = rwkv_checkpoint(tmp_path, tok)
    p = run('export.py', str(tmp_path), 'm.gguf', f'--dtype={dtype}', cwd=tmp_path, timeout=120)
    assert p.stdout.strip() == 'wrote m.gguf' and 'warning' not in p.stderr
    meta, t = read(str(tmp_path / 'm.gguf'))
    cfg, sd = model.config, model.state_dict()
    assert meta['general.architecture'] == 'rwkv7' and meta['rwkv7.wkv.head_size'] == 64
    assert (meta['rwkv7.embedding_length'], meta['rwkv7.block_count'], meta['rwkv7.feed_forward_length'],
            meta['rwkv7.attention.decay_lora_rank'], meta['rwkv7.attention.iclr_lora_rank'],
            meta['rwkv7.attention.value_residual_mix_lora_rank'], meta['rwkv7.attention.gate_lora_rank']) == \
        (128, 2, cfg.dim_ffn, cfg.d_decay, cfg.d_aaa, cfg.d_mv, cfg.d_gate)
    assert len(t) == 6 + 2 * 28
    want = {'token_embd.weight': sd['emb.weight'], 'token_embd_norm.bias': sd['blocks.0.ln0.bias'],
            'blk.1.time_mix_lerp_fused.weight': torch.stack([sd[f'blocks.1.att.x_{c}'] for c in 'rwkvag']),
            'blk.1.time_mix_w1.weight': sd['blocks.1.att.w1'].t(), 'blk.1.time_mix_a2.weight': sd['blocks.1.att.a2'].t(),
            'blk.1.time_mix_v0.weight': sd['blocks.1.att.v0'].flatten(),
            'blk.0.time_mix_v1.weight': sd['blocks.0.att.a1'].t(),  # block 0: copies of a (llama.cpp's shapes)
            'blk.1.time_mix_r_k.weight': sd['blocks.1.att.r_k'].flatten(),
            'blk.0.time_mix_ln.weight': sd['blocks.0.att.ln_x.weight'],
            'blk.0.time_mix_key.weight': sd['blocks.0.att.key.weight'],
            'blk.1.channel_mix_value.weight': sd['blocks.1.ffn.value.weight'],
            'blk.1.channel_mix_lerp_k.weight': sd['blocks.1.ffn.x_k'].flatten(),
            'blk.0.attn_norm_2.weight': sd['blocks.0.ln2.weight'], 'output.weight': sd['head.weight']}
    for name, w in want.items():
        got = torch.from_numpy(np.array(t[name], dtype=np.float32))
        exact = dtype == 'float32' or w.dim() == 1 or 'w1' in name or 'lerp' in name  # kept float32
        assert got.shape == w.shape and (got - w).abs().max() <= (0 if exact else 1e-2 * w.abs().max()), name


def test_gguf_export_errors_are_one_line_and_write_nothing(tmp_path):
    import lora
    checkpoint(tmp_path, get_tokenizer('byte'))  # llama.cpp has no byte tokenizer (its gpt2 vocabularies need merges)
    os.replace(tmp_path / 'best.pt', tmp_path / 'byte.pt')
    train_sentencepiece([TEXT], 340, str(tmp_path / 'tokenizer.model'))
    tok = get_tokenizer('sp:340', str(tmp_path))
    model = checkpoint(tmp_path, tok)
    lora.apply_lora(model, ['q_proj'], r=2, alpha=4.0)
    torch.save({'model_type': 'llama', 'model_args': dataclasses.asdict(model.config), 'model': {},
                'lora': {'r': 2}, 'tokenizer': tok.state(), 'iter_num': 0}, tmp_path / 'lora.pt')
    (tmp_path / 'dir.gguf').mkdir()
    for args, msg in [(['byte.pt', 'x.gguf'], "the 'byte' tokenizer has no GGUF form"),
                      (['best.pt', 'x.gguf', '--dtype=q4_0'], "unknown --dtype 'q4_0' for GGUF"),
                      (['best.pt', 'dir.gguf'], 'is a folder'), (['rwkv:x.pth', 'x.gguf'], 'an official RWKV-7'),
                      (['lora.pt', 'x.gguf'], 'holds only LoRA adapters'), (['best.pt', 'x.gguf', '--peft'], '--peft'),
                      (['missing.pt', 'x.gguf'], 'no checkpoint'), (['best.pt', 'no/such/dir/x.gguf'], 'No such file')]:
        p = run('export.py', *args, cwd=tmp_path, check=False, timeout=60)
        assert p.returncode == 1 and p.stderr.count('\n') == 1 and msg in p.stderr, (args, p.stderr)
    assert sorted(os.listdir(tmp_path)) == ['best.pt', 'byte.pt', 'dir.gguf', 'lora.pt', 'tokenizer.model']


@pytest.mark.skipif(llama_cpp is None, reason='needs llama-cpp-python (builds llama.cpp; see docs/guide.md)')
def test_llama_cpp_greedy_tokens_equal_ours(tmp_path):
    train_sentencepiece([TEXT], 340, str(tmp_path / 'tokenizer.model'))
    tok = get_tokenizer('sp:340', str(tmp_path))
    model = checkpoint(tmp_path, tok, seed=1, block_size=128)
    with torch.no_grad():  # weights that make confident, varied predictions
        for p in model.parameters():
            p.mul_(3.0) if p.dim() == 2 else None
    torch.save({'model_type': 'llama', 'model_args': dataclasses.asdict(model.config), 'model': model.state_dict(),
                'tokenizer': tok.state(), 'iter_num': 5}, tmp_path / 'best.pt')
    run('export.py', 'best.pt', 'm.gguf', cwd=tmp_path, timeout=180)
    prompt = tok.encode('<|im_start|>user\nLine 3 of the text<|im_end|>\n<|im_start|>assistant\n')
    ours = model.generate(torch.tensor([prompt]), 40, temperature=0)[0, len(prompt):].tolist()
    llm = llama_cpp.Llama(str(tmp_path / 'm.gguf'), n_ctx=128, n_threads=1, verbose=False)
    theirs = []
    for t in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        theirs.append(t)
        if len(theirs) == len(ours):
            break
    assert theirs == ours
    assert llm.tokenize('<|im_start|>user\nLine 3'.encode(), add_bos=False, special=True) == \
        tok.encode('<|im_start|>user\nLine 3')


@pytest.mark.skipif(llama_cpp is None, reason='needs llama-cpp-python (builds llama.cpp; see docs/guide.md)')
def test_llama_cpp_runs_our_rwkv7(tmp_path):
    # llama.cpp's rwkv7 on our export: the logits of every prompt position, then greedy tokens. Head size 64 (the
    # official models'); with 32 llama.cpp's AVX-512 WKV7 kernel is wrong, and export.py says so
    train_sentencepiece([TEXT], 340, str(tmp_path / 'tokenizer.model'))
    tok = get_tokenizer('sp:340', str(tmp_path))
    model = rwkv_checkpoint(tmp_path, tok)
    run('export.py', 'best.pt', 'm.gguf', cwd=tmp_path, timeout=180)
    prompt = tok.encode('<|im_start|>user\nLine 3 of the text<|im_end|>\n<|im_start|>assistant\n')
    llm = llama_cpp.Llama(str(tmp_path / 'm.gguf'), n_ctx=256, n_threads=1, verbose=False, logits_all=True)
    llm.eval(prompt)
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0][0]
    assert torch.allclose(torch.tensor(np.array(llm.scores[:len(prompt)])), ours, atol=1e-4)
    llm.close()
    greedy = model.generate(torch.tensor([prompt]), 30, temperature=0)[0, len(prompt):].tolist()
    llm = llama_cpp.Llama(str(tmp_path / 'm.gguf'), n_ctx=256, n_threads=1, verbose=False)  # a fresh state
    theirs = []
    for t in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        theirs.append(t)
        if len(theirs) == len(greedy):
            break
    assert theirs == greedy and len(set(greedy)) > 3
    rwkv_checkpoint(tmp_path, tok, head_size=32)
    assert 'warning: head_size 32' in run('export.py', 'best.pt', 'm32.gguf', cwd=tmp_path, timeout=180).stderr


def hf_bpe(path, pre):
    """A byte-level BPE tokenizer.json trained on TEXT (and digits, contractions, newlines) with one of the
    pre-tokenizers of GPT-2, Llama 3, Qwen2 or SmolLM, and <|endoftext|> as a special added token."""
    import tokenizer as T
    tokenizers = pytest.importorskip('tokenizers')
    from tokenizers import Regex, pre_tokenizers as P
    byte = P.ByteLevel(add_prefix_space=False, use_regex=False)
    regex = {v: k for k, v in T.GGUF_PRE.items()}
    tk = tokenizers.Tokenizer(tokenizers.models.BPE())
    tk.pre_tokenizer = {'gpt-2': P.ByteLevel(add_prefix_space=False),
                        'smollm': P.Sequence([P.Digits(individual_digits=True), P.ByteLevel(add_prefix_space=False)]),
                        }.get(pre) or P.Sequence([P.Split(Regex(regex[pre]), 'isolated'), byte])
    tk.decoder = tokenizers.decoders.ByteLevel()
    extra = "I'm 12345 years old; he'll pay $3.50!\n\n  Done.  \n" * 20
    tk.train_from_iterator([TEXT, extra], tokenizers.trainers.BpeTrainer(
        vocab_size=400, special_tokens=['<|endoftext|>'], show_progress=False,
        initial_alphabet=P.ByteLevel.alphabet()))
    tk.save(str(path))
    return get_tokenizer(f'hf:{path}')


@pytest.mark.parametrize('pre', ['gpt-2', 'llama-bpe', 'qwen2', 'smollm'])
def test_hf_byte_level_bpe_tokenizer_is_embedded(tmp_path, pre):
    tok = hf_bpe(tmp_path / 'tokenizer.json', pre)
    checkpoint(tmp_path, tok)
    run('export.py', 'best.pt', 'm.gguf', cwd=tmp_path, timeout=120)
    meta, _ = read(str(tmp_path / 'm.gguf'))
    js = __import__('json').load(open(tmp_path / 'tokenizer.json'))
    assert meta['tokenizer.ggml.model'] == 'gpt2' and meta['tokenizer.ggml.pre'] == pre
    assert meta['tokenizer.ggml.merges'] == [' '.join(m) if isinstance(m, list) else m for m in js['model']['merges']]
    tokens, types = meta['tokenizer.ggml.tokens'], meta['tokenizer.ggml.token_type']
    assert all(tokens[i] == t for t, i in js['model']['vocab'].items())
    assert types[tok.eot_id] == 3 and tokens[tok.special['<|im_end|>']] == '<|im_end|>'
    if llama_cpp is not None:  # llama.cpp's tokenizer for that pre-tokenizer gives ours
        llm = llama_cpp.Llama(str(tmp_path / 'm.gguf'), n_ctx=64, n_threads=1, verbose=False, vocab_only=True)
        for text in ("I'm 12345 years old; he'll pay $3.50!\n\n  Done.  \n", "Line 7: the quick brown fox 1999.",
                     "<|im_start|>user\nHi 42<|im_end|>\n"):
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text), (pre, text)
        llm.close()
    with pytest.raises(ValueError, match='no GGUF form'):  # a byte-level BPE whose pre-tokenizer llama.cpp lacks
        from tokenizer import gguf_vocab
        js['pre_tokenizer'] = {'type': 'Whitespace'}
        gguf_vocab({**tok.state(), 'blob': __import__('json').dumps(js).encode()}, 512)


def test_gpt2_tokenizer_json_reads_back_as_gpt2():
    # our gpt2 run's tokenizer.json (HF export) imported again as hf: gets llama.cpp's 'gpt-2' pre-tokenizer; a
    # prefix space llama.cpp would not add is no known pre-tokenizer
    from tokenizer import gguf_pre, tokenizers_json
    assert gguf_pre({'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': True}}) is None
    assert gguf_pre({'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': False}}) == 'gpt-2'
    assert gguf_pre(tokenizers_json(gpt2_or_skip())) == 'gpt-2'


LLAMA3 = {'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
          'original_max_position_embeddings': 16}  # a short original context: most frequencies are scaled


def test_llama3_rope_scaling_as_rope_freqs(tmp_path):
    from model_llama import rope_frequencies
    train_sentencepiece([TEXT], 340, str(tmp_path / 'tokenizer.model'))
    tok = get_tokenizer('sp:340', str(tmp_path))
    checkpoint(tmp_path, tok, rope_scaling=LLAMA3)
    run('export.py', 'best.pt', 'm.gguf', cwd=tmp_path, timeout=120)
    meta, t = read(str(tmp_path / 'm.gguf'))
    want = rope_frequencies(16, 10000.0) / rope_frequencies(16, 10000.0, LLAMA3)  # the divisor of each frequency
    assert 'llama.rope.scaling.type' not in meta and torch.allclose(torch.tensor(np.array(t['rope_freqs.weight'])), want)
    assert want[-1] == 8 and want.min() >= 1 and ((want > 1) & (want < 8)).any()  # divided by factor, in between
    if llama_cpp is not None:  # llama.cpp's logits with an f32 KV cache (its default f16 cache costs ~3e-3)
        model = checkpoint(tmp_path, tok, seed=1, block_size=128, rope_scaling=LLAMA3)
        run('export.py', 'best.pt', 'm.gguf', cwd=tmp_path, timeout=120)
        ids = tok.encode(TEXT[:300])[:80]
        llm = llama_cpp.Llama(str(tmp_path / 'm.gguf'), n_ctx=128, n_threads=1, verbose=False, logits_all=True,
                              type_k=0, type_v=0)
        llm.eval(ids)
        with torch.no_grad():
            ours = model(torch.tensor([ids]))[0][0]
        assert torch.allclose(torch.tensor(np.array(llm.scores[:len(ids)])), ours, atol=1e-4)
        llm.close()
