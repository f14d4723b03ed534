"""
Tests of the Hugging Face / llama2.c import of model_llama.py, the export (export.py) and the tokenizer.json tokenizer:

    OMP_NUM_THREADS=1 python -m pytest test_hf.py -x -q

CPU, no network. Tiny random models written by the tests; the independent references are a naive llama2.c forward
(interleaved RoPE, written here) and, when it is installed, transformers itself (those tests skip without it; it is a
test-only dependency, not in requirements.txt). The stories260K checks skip without ../shared.
"""

import json
import math
import os
import struct
import sys

import pytest
import torch

import chat
from conftest import ROOT, SHARED, gpt2_or_skip, run
from lora import DEFAULT_TARGETS, LoRAError, apply_lora, lora_modules, save_peft
from export import export_checkpoint, export_hf
from model_llama import Llama, LlamaConfig, config_from_hf, rope_tables
from tokenizer import EOT, get_tokenizer, hf_files, pretrained_tokenizer, tokenizer_from_state, train_sentencepiece

STORIES = os.path.join(SHARED, 'data', 'llama2c', 'stories260K')
needs_stories = pytest.mark.skipif(not os.path.isfile(os.path.join(STORIES, 'stories260K.bin')),
                                   reason='real-model check: needs ../shared/data/llama2c/stories260K (CI has it)')
try:
    import transformers
except ImportError:
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason='cross-check: needs transformers (pip install)')
try:
    import peft
except ImportError:
    peft = None
needs_peft = pytest.mark.skipif(transformers is None or peft is None, reason='cross-check: needs transformers and peft')


def o1(model, seed=0):
    """Give a model O(1) weights (not the near-zero training init), so any wrong layout shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:  # norm weights around 1, biases around 0
                p.copy_(float('norm' in name) + 0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny(seed=0, **kw):
    cfg = dict(block_size=32, vocab_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=48)
    torch.manual_seed(seed)
    return o1(Llama(LlamaConfig(**{**cfg, **kw})), seed)


def logits(model, x):
    with torch.no_grad():
        return model(x)[0]


X = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(1))
LLAMA3 = {'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
          'original_max_position_embeddings': 16}


# ---------------------------------------------------------------------------- llama2.c
def write_llama2c(path, D=32, F_=48, L=2, H=4, KV=2, V=40, S=16, tied=True, theta=10000.0, seed=0):
    """A llama2.c legacy checkpoint of random weights; returns them by llama2.c's names."""
    g = torch.Generator().manual_seed(seed)
    hs, kv = D // H, KV * D // H
    r = lambda *s: torch.randn(*s, generator=g) / math.sqrt(s[-1])  # noqa: E731
    w = dict(emb=r(V, D), rms_att=1 + 0.2 * torch.randn(L, D, generator=g), wq=r(L, D, D), wk=r(L, kv, D),
             wv=r(L, kv, D), wo=r(L, D, D), rms_ffn=1 + 0.2 * torch.randn(L, D, generator=g), w1=r(L, F_, D),
             w2=r(L, D, F_), w3=r(L, F_, D), rms_final=1 + 0.2 * torch.randn(D, generator=g))
    angles = torch.outer(torch.arange(S).float(), 1.0 / theta ** (torch.arange(0, hs, 2).float() / hs))
    w.update(freq_cis_real=angles.cos(), freq_cis_imag=angles.sin(), wcls=w['emb'] if tied else r(V, D))
    with open(path, 'wb') as f:
        f.write(struct.pack('<7i', D, F_, L, H, KV, V if tied else -V, S))
        for k in list(w)[:-1] + ([] if tied else ['wcls']):
            f.write(w[k].float().numpy().tobytes())
    return w


def llama2c_forward(w, tokens, H, KV):
    """llama2.c's run.c forward, one position at a time in float64: RoPE rotates the adjacent pairs (2i, 2i+1) of
    each head of q and k by pos * 10000^(-2i/head_size); query head h reads kv head h // (H / KV)."""
    w = {k: v.double() for k, v in w.items()}
    L, D = w['rms_att'].shape
    hs = D // H
    norm = lambda x, g: x / torch.sqrt((x * x).mean() + 1e-5) * g  # noqa: E731
    keys, values, out = [[] for _ in range(L)], [[] for _ in range(L)], []
    for pos, tok in enumerate(tokens):
        x = w['emb'][tok].clone()
        for l in range(L):
            xb = norm(x, w['rms_att'][l])
            q, k, v = w['wq'][l] @ xb, w['wk'][l] @ xb, w['wv'][l] @ xb
            for i in range(0, D, 2):
                a = pos / 10000.0 ** ((i % hs) / hs)
                for vec in ([q, k] if i < len(k) else [q]):
                    v0, v1 = vec[i].item(), vec[i + 1].item()
                    vec[i], vec[i + 1] = v0 * math.cos(a) - v1 * math.sin(a), v0 * math.sin(a) + v1 * math.cos(a)
            keys[l].append(k)
            values[l].append(v)
            att_out = torch.zeros(D, dtype=torch.float64)
            for h in range(H):
                kh = h // (H // KV)
                sl, kvs = slice(h * hs, (h + 1) * hs), slice(kh * hs, (kh + 1) * hs)
                att = torch.stack([q[sl] @ kk[kvs] for kk in keys[l]]) / math.sqrt(hs)
                att_out[sl] = sum(p * vv[kvs] for p, vv in zip(att.softmax(0), values[l]))
            x = x + w['wo'][l] @ att_out
            xb = norm(x, w['rms_ffn'][l])
            x = x + w['w2'][l] @ (torch.nn.functional.silu(w['w1'][l] @ xb) * (w['w3'][l] @ xb))
        out.append(w['wcls'] @ norm(x, w['rms_final']))
    return torch.stack(out)


@pytest.mark.parametrize('tied', [True, False])
def test_llama2c_permutation_matches_interleaved_rope_reference(tmp_path, tied):
    path = str(tmp_path / 'model.bin')
    w = write_llama2c(path, tied=tied)
    model = Llama.from_pretrained(path)
    cfg = model.config
    assert (cfg.n_embd, cfg.intermediate_size, cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.vocab_size,
            cfg.block_size, cfg.tie_embeddings, cfg.norm_eps, cfg.rope_theta) == (32, 48, 2, 4, 2, 40, 16, tied, 1e-5, 1e4)
    tokens = [1, 5, 9, 33, 2, 17, 17, 39, 0, 8, 21, 3]
    ours = logits(model.eval(), torch.tensor([tokens]))[0].double()
    ref = llama2c_forward(w, tokens, H=4, KV=2)
    assert ref.abs().max() > 1  # O(1) logits: a wrong q/k layout would differ by far more than the tolerance
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_llama2c_errors(tmp_path):
    path = str(tmp_path / 'm.bin')
    write_llama2c(path)
    with open(path, 'ab') as f:
        f.write(b'\0' * 4)
    with pytest.raises(ValueError, match='bytes, but a llama2.c checkpoint'):
        Llama.from_pretrained(path)
    with open(path, 'wb') as f:
        f.write(struct.pack('<2I', 0x616b3432, 1) + b'\0' * 248)
    with pytest.raises(ValueError, match='version 1/2 export'):
        Llama.from_pretrained(path)
    write_llama2c(path, theta=500000.0)
    with pytest.raises(ValueError, match='RoPE tables'):
        Llama.from_pretrained(path)
    with pytest.raises(FileNotFoundError):
        Llama.from_pretrained(str(tmp_path / 'missing.bin'))


# ---------------------------------------------------------------------------- Hugging Face folders
@pytest.mark.parametrize('kw', [dict(), dict(tie_embeddings=False), dict(qkv_bias=True),
                                dict(rope_scaling=LLAMA3, rope_theta=5e5),
                                dict(rope_scaling={'rope_type': 'linear', 'factor': 2.0}, tie_embeddings=False)])
def test_export_then_from_pretrained_is_identical(tmp_path, kw):
    model = tiny(**kw)
    export_hf(model, str(tmp_path / 'hf'))
    c = json.load(open(tmp_path / 'hf' / 'config.json'))
    assert c['architectures'] == ['Qwen2ForCausalLM' if kw.get('qkv_bias') else 'LlamaForCausalLM']
    assert (c['hidden_size'], c['num_key_value_heads'], c['max_position_embeddings']) == (32, 2, 32)
    loaded = Llama.from_pretrained(str(tmp_path / 'hf'))
    assert loaded.config == model.config
    assert torch.equal(logits(loaded.eval(), X), logits(model, X))
    short = Llama.from_pretrained(str(tmp_path / 'hf'), block_size=24, dtype='bfloat16')
    assert short.config.block_size == 24 and short.embed_tokens.weight.dtype == torch.bfloat16
    assert (short.lm_head.weight is short.embed_tokens.weight) == model.config.tie_embeddings


def test_sharded_safetensors_with_index(tmp_path):
    from safetensors.torch import load_file, save_file
    model = tiny(tie_embeddings=False)
    d = tmp_path / 'hf'
    export_hf(model, str(d))
    sd = load_file(str(d / 'model.safetensors'))
    os.remove(d / 'model.safetensors')
    names, weight_map = sorted(sd), {}
    for i, part in enumerate([names[:len(names) // 2], names[len(names) // 2:]]):
        fn = f'model-0000{i + 1}-of-00002.safetensors'
        save_file({k: sd[k] for k in part}, str(d / fn), metadata={'format': 'pt'})
        weight_map.update({k: fn for k in part})
    json.dump({'metadata': {'total_size': 0}, 'weight_map': weight_map}, open(d / 'model.safetensors.index.json', 'w'))
    assert torch.equal(logits(Llama.from_pretrained(str(d)).eval(), X), logits(model, X))
    os.remove(d / 'model-00002-of-00002.safetensors')
    with pytest.raises(FileNotFoundError):
        Llama.from_pretrained(str(d))


def test_unsupported_configs_are_errors_naming_the_field(tmp_path):
    export_hf(tiny(), str(tmp_path / 'hf'))
    base = json.load(open(tmp_path / 'hf' / 'config.json'))
    for change, field in [({'architectures': ['GPTNeoXForCausalLM']}, 'architectures'),
                          ({'architectures': None, 'model_type': 'gemma'}, 'architectures'),
                          ({'rope_scaling': {'rope_type': 'yarn', 'factor': 4.0}}, 'rope_scaling'),
                          ({'rope_scaling': {'type': 'dynamic', 'factor': 2.0}}, 'rope_scaling'),
                          ({'rope_parameters': {'rope_type': 'linear', 'rope_theta': 1e4}}, 'rope_scaling'),
                          ({'hidden_act': 'gelu'}, 'hidden_act'), ({'head_dim': 16}, 'head_dim'),
                          ({'attention_bias': True}, 'attention_bias'),
                          ({'quantization_config': {'quant_method': 'gptq'}}, 'quantization_config'),
                          ({'partial_rotary_factor': 0.5}, 'partial_rotary_factor'),
                          ({'architectures': ['MistralForCausalLM'], 'sliding_window': 16}, 'sliding_window'),
                          ({'architectures': ['Qwen2ForCausalLM'], 'use_sliding_window': True,
                            'sliding_window': 8}, 'sliding_window')]:
        with pytest.raises(ValueError, match=field):
            config_from_hf({**base, **change})
    # what is fine: a window as long as the context, Qwen2's unused window, transformers 5's rope_parameters
    assert config_from_hf({**base, 'architectures': ['MistralForCausalLM'], 'sliding_window': 32})['block_size'] == 32
    assert config_from_hf({**base, 'architectures': ['Qwen2ForCausalLM'], 'sliding_window': 8})['qkv_bias']
    new = config_from_hf({**base, 'rope_theta': None, 'rope_scaling': None,
                          'rope_parameters': {'rope_theta': 5e5, **LLAMA3}})
    assert new['rope_theta'] == 5e5 and new['rope_scaling'] == LLAMA3
    with pytest.raises(ValueError, match='rope_scaling'):
        LlamaConfig(rope_scaling={'rope_type': 'llama3', 'factor': 8.0})


def test_tensor_mismatches_are_errors(tmp_path):
    from safetensors.torch import load_file, save_file
    d = tmp_path / 'hf'
    export_hf(tiny(), str(d))
    sd = load_file(str(d / 'model.safetensors'))
    for change, msg in [(lambda s: s.pop('model.layers.1.mlp.up_proj.weight'), 'no weights for'),
                        (lambda s: s.update({'model.layers.0.self_attn.o_proj.bias': torch.zeros(32)}), 'no such'),
                        (lambda s: s.update({'model.norm.weight': torch.ones(1, 32)}), 'expected')]:
        broken = dict(sd)
        change(broken)
        save_file(broken, str(d / 'model.safetensors'))
        with pytest.raises(ValueError, match=msg):
            Llama.from_pretrained(str(d))


def test_padded_vocabulary(tmp_path):
    model = tiny(tie_embeddings=False)
    export_hf(model, str(tmp_path / 'hf'))
    big = Llama.from_pretrained(str(tmp_path / 'hf'), vocab_size=101)
    assert big.config.vocab_size == 101
    assert torch.equal(big.embed_tokens.weight[100], model.embed_tokens.weight.mean(0))
    assert torch.allclose(logits(big.eval(), X)[..., :96], logits(model, X), atol=1e-6)


def test_rope_scaling_tables():
    """linear: position p with factor 2 is position p/2 unscaled; llama3: the fastest frequency is kept, the slowest
    divided by the factor (its wavelength is beyond original_max_position_embeddings / low_freq_factor)."""
    cos, sin = rope_tables(16, 32, 1e4, {'rope_type': 'linear', 'factor': 2.0})
    cos0, sin0 = rope_tables(16, 32, 1e4)
    assert torch.allclose(cos[::2], cos0[:16], atol=1e-6) and torch.allclose(sin[::2], sin0[:16], atol=1e-6)
    cos, _ = rope_tables(16, 4000, 1e4, {**LLAMA3, 'original_max_position_embeddings': 8192})
    f = 1e4 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)  # wavelengths 2 pi / f: 6.3 (< 8192 / 4), ...,
    s = (8192 * f[6] / (2 * math.pi) - 1) / (4 - 1)                  # 6283 (in between: interpolated), 19869 (> 8192)
    want = torch.cat([f[:6], ((1 - s) / 8 + s) * f[6:7], f[7:] / 8])
    assert torch.allclose(cos[1, :8].double(), want.cos(), atol=1e-6)
    assert torch.allclose(cos[3999, 6:8].double(), (3999 * want[6:]).cos(), atol=1e-5)  # slow ones, far out


def test_export_refuses_lora_and_exports_a_train_checkpoint(tmp_path):
    model = tiny()
    apply_lora(model, ['q_proj'], r=2, alpha=4.0, dropout=0.0)
    with pytest.raises(ValueError, match='merge LoRA'):
        export_hf(model, str(tmp_path / 'x'))
    model = tiny(qkv_bias=True)
    path, _ = make_tokenizer_json(tmp_path / 'tokenizer.json', ['<|endoftext|>', '<|im_start|>', '<|im_end|>'])
    tok = get_tokenizer('hf:' + path)
    torch.save({'model_type': 'llama', 'model_args': vars(model.config), 'model': model.state_dict(),
                'tokenizer': tok.state(), 'iter_num': 7}, tmp_path / 'best.pt')
    export_checkpoint(str(tmp_path / 'best.pt'), str(tmp_path / 'hf'))
    out = tmp_path / 'hf'
    assert get_tokenizer('hf:' + str(out)).encode('<|im_start|>a<think>') == tok.encode('<|im_start|>a<think>')
    config = json.load(open(out / 'tokenizer_config.json'))
    assert config['eos_token'] == '<|endoftext|>' and 'bos_token' not in config and not config['add_bos_token']
    assert json.load(open(out / 'special_tokens_map.json'))['pad_token'] == '<|pad|>'
    assert torch.equal(logits(Llama.from_pretrained(str(out)).eval(), X), logits(model, X))
    gen = json.load(open(out / 'generation_config.json'))  # transformers' generate stops at the end of a reply
    assert gen['eos_token_id'] == [tok.eot_id, tok.special['<|im_end|>']] and 'bos_token_id' not in gen


# ---------------------------------------------------------------------------- PEFT adapters
def lora_model(targets=DEFAULT_TARGETS['llama'], r=4, rslora=False, **kw):
    """A tiny Llama (its plain copy returned too) under LoRA with non-zero B, so the adapters change the logits."""
    model = tiny(**kw)
    plain = tiny(**kw)
    apply_lora(model, targets, r=r, alpha=8.0, dropout=0.1, rslora=rslora)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, m in lora_modules(model):
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.3)
    return model.eval(), plain


def test_peft_files_and_key_names(tmp_path):
    from safetensors.torch import load_file
    model, _ = lora_model()
    save_peft(str(tmp_path / 'a'), model, 'base-folder')
    c = json.load(open(tmp_path / 'a' / 'adapter_config.json'))
    assert (c['peft_type'], c['task_type'], c['r'], c['lora_alpha'], c['lora_dropout'], c['use_rslora'],
            c['base_model_name_or_path']) == ('LORA', 'CAUSAL_LM', 4, 8.0, 0.1, False, 'base-folder')
    assert c['target_modules'] == sorted(DEFAULT_TARGETS['llama'])  # every layer: the short names
    sd = load_file(str(tmp_path / 'a' / 'adapter_model.safetensors'))
    assert len(sd) == 2 * 7 * 2
    assert sd['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'].shape == (4, 32)
    assert sd['base_model.model.model.layers.1.mlp.down_proj.lora_B.weight'].shape == (32, 4)
    assert torch.equal(sd['base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight'],
                       model.layers[1].self_attn.k_proj.lora_B)
    model, _ = lora_model(['layers.1.*q_proj', 'lm_head'], tie_embeddings=False)  # some layers: full names
    save_peft(str(tmp_path / 'b'), model)
    c = json.load(open(tmp_path / 'b' / 'adapter_config.json'))
    assert c['target_modules'] == ['model.layers.1.self_attn.q_proj', 'lm_head']
    assert sorted(load_file(str(tmp_path / 'b' / 'adapter_model.safetensors'))) == [
        'base_model.model.lm_head.lora_A.weight', 'base_model.model.lm_head.lora_B.weight',
        'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight',
        'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight']
    with pytest.raises(LoRAError, match='without adapters'):
        save_peft(str(tmp_path / 'c'), tiny())


@needs_peft
@pytest.mark.parametrize('kw', [dict(), dict(targets=['v_proj', 'layers.0.mlp.*'], rslora=True, qkv_bias=True)])
def test_peft_adapter_loads_in_peft_with_our_logits(tmp_path, kw):
    model, plain = lora_model(**kw)
    export_hf(plain, str(tmp_path / 'base'))
    save_peft(str(tmp_path / 'adapter'), model, str(tmp_path / 'base'))
    hf = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'base')),
                                        str(tmp_path / 'adapter')).eval()
    with torch.no_grad():
        ref = hf(X).logits
    ours = logits(model, X)
    assert (ours - logits(plain, X)).abs().max() > 0.1  # the adapters matter
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


# ---------------------------------------------------------------------------- transformers as the reference
def transformers_model(kind, **kw):
    """A transformers model of kind 'llama' (GQA, llama3 RoPE scaling), 'qwen2' (qkv bias, tied) or 'mistral',
    with O(1) weights."""
    shape = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=96, max_position_embeddings=32, rms_norm_eps=1e-5)
    if kind == 'llama':
        cfg = transformers.LlamaConfig(**shape, rope_theta=5e5, rope_scaling=dict(LLAMA3), **kw)
        return o1(transformers.LlamaForCausalLM(cfg))
    if kind == 'qwen2':
        return o1(transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**shape, tie_word_embeddings=True, **kw)))
    return o1(transformers.MistralForCausalLM(transformers.MistralConfig(**shape, sliding_window=None, **kw)))


@needs_transformers
@pytest.mark.parametrize('kind', ['llama', 'qwen2', 'mistral'])
def test_transformers_model_loads_with_the_same_logits(tmp_path, kind):
    hf = transformers_model(kind)
    hf.save_pretrained(str(tmp_path / kind))
    ours = Llama.from_pretrained(str(tmp_path / kind)).eval()
    assert ours.config.qkv_bias == (kind == 'qwen2') and ours.config.tie_embeddings == (kind == 'qwen2')
    with torch.no_grad():
        ref = hf(X).logits
    assert ref.abs().max() > 1 and torch.allclose(logits(ours, X), ref, atol=1e-5)


@needs_transformers
@pytest.mark.parametrize('kw', [dict(tie_embeddings=False, rope_scaling=LLAMA3, rope_theta=5e5),
                                dict(qkv_bias=True)])
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, kw):
    model = tiny(**kw)
    export_hf(model, str(tmp_path / 'hf'))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'hf')).eval()
    assert type(hf).__name__ == ('Qwen2ForCausalLM' if kw.get('qkv_bias') else 'LlamaForCausalLM')
    with torch.no_grad():
        ref = hf(X).logits
    assert ref.abs().max() > 1 and torch.allclose(logits(model, X), ref, atol=1e-5)


# ---------------------------------------------------------------------------- tokenizer.json
def make_tokenizer_json(path, specials, bos=None):
    """A small byte-level BPE tokenizer.json (as Qwen2.5's, SmolLM2's, Llama 3's) with the given special tokens; bos:
    one of them that the post-processor puts before every sequence (as Llama's '<s> $A' template)."""
    tokenizers = pytest.importorskip('tokenizers')
    tk = tokenizers.Tokenizer(tokenizers.models.BPE())
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=320, special_tokens=specials, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["the quick brown fox jumps over the lazy dog, é ü 数学 😀"] * 20, trainer)
    if bos:
        tk.post_processor = tokenizers.processors.TemplateProcessing(
            single=f'{bos} $A', pair=f'{bos} $A {bos} $B', special_tokens=[(bos, specials.index(bos))])
    tk.save(str(path))
    return str(path), tk.get_vocab_size()


def test_hf_tokenizer_uses_the_models_own_special_tokens(tmp_path):
    path, n = make_tokenizer_json(tmp_path / 'tokenizer.json', ['<|endoftext|>', '<|im_start|>', '<|im_end|>'])
    tok = get_tokenizer('hf:' + path)
    assert tok.eot_id == tok.special[EOT] == 0 and tok.special['<|im_start|>'] == 1 and tok.special['<|im_end|>'] == 2
    assert [tok.special[t] for t in ['<think>', '</think>', '<|pad|>']] == [n, n + 1, n + 2] and tok.vocab_size == n + 3
    text = '<|im_start|>user\nthe fox é 数学 😀<think>x</think><|im_end|><|endoftext|><|pad|>'
    ids = tok.encode(text)
    assert tok.decode(ids) == text and ids[0] == 1 and ids[-3:] == [2, 0, n + 2]
    plain = tok.encode(text, special=False)  # raw corpora: the special strings are text
    assert not set(plain) & set(tok.special.values()) and tok.decode(plain) == text
    again = tokenizer_from_state(tok.state())
    assert again.encode(text) == ids and get_tokenizer('hf:' + str(tmp_path)).encode(text) == ids


def test_hf_tokenizer_end_of_text_and_errors(tmp_path):
    path, n = make_tokenizer_json(tmp_path / 'tokenizer.json', ['<unk>', '<s>', '</s>'])
    tok = get_tokenizer('hf:' + path)
    assert tok.eot_id == 2 and tok.encode('</s>') == [2] and tok.decode([2]) == '</s>'
    assert tok.special['<|im_start|>'] == n and tok.vocab_size == n + 5
    make_tokenizer_json(tmp_path / 'tokenizer.json', ['<unk>'])
    with pytest.raises(ValueError, match='end-of-text'):
        get_tokenizer('hf:' + path)
    with pytest.raises(FileNotFoundError):
        get_tokenizer('hf:' + str(tmp_path / 'nothing' / 'tokenizer.json'))


MESSAGES = [{'role': 'user', 'content': 'the fox é?'},
            {'role': 'assistant', 'content': chat.assistant_reply('the dog 数学', '4')}]


def test_bos_only_for_tokenizers_that_use_one(tmp_path):
    path, n = make_tokenizer_json(tmp_path / 'llama.json', ['<unk>', '<s>', '</s>'], bos='<s>')
    tok = get_tokenizer('hf:' + path)
    assert tok.bos_id == 1 and tok.eot_id == 2 and tok.encode('the fox')[0] != 1  # pieces: no BOS
    ids, mask = chat.render(tok, MESSAGES)
    assert ids[0] == 1 and mask[0] == 0 and 1 not in ids[1:] and tok.decode(ids).startswith('<s><|im_start|>system')
    assert chat.prompt(tok, 'the fox')[:2] == [1, tok.special['<|im_start|>']]
    assert tokenizer_from_state(tok.state()).bos_id == 1
    path, _ = make_tokenizer_json(tmp_path / 'qwen.json', ['<|endoftext|>', '<|im_start|>', '<|im_end|>'])
    tok = get_tokenizer('hf:' + path)  # no post-processor template: no BOS, as Qwen2.5
    assert tok.bos_id is None and chat.render(tok, MESSAGES)[0][0] == tok.special['<|im_start|>']
    assert get_tokenizer('byte').bos_id is None


@needs_transformers
@pytest.mark.parametrize('bos', ['<s>', None])
def test_export_tokenizer_loads_in_autotokenizer(tmp_path, bos):
    path, n = make_tokenizer_json(tmp_path / 'tokenizer.json', ['<unk>', '<s>', '</s>'], bos=bos)
    tok = get_tokenizer('hf:' + path)  # no <|im_start|> etc.: ours are appended at n, n + 1, ...
    model = tiny(vocab_size=320)
    torch.save({'model_type': 'llama', 'model_args': vars(model.config), 'model': model.state_dict(),
                'tokenizer': tok.state(), 'iter_num': 1}, tmp_path / 'best.pt')
    export_checkpoint(str(tmp_path / 'best.pt'), str(tmp_path / 'hf'))
    at = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'hf'))
    assert (at.bos_token_id, at.eos_token_id, at.pad_token_id) == (1 if bos else None, 2, tok.special['<|pad|>'])
    assert at.convert_tokens_to_ids(['<|im_start|>', '<think>']) == [n, n + 2]
    ids, _ = chat.render(tok, MESSAGES)
    assert (ids[0] == 1) == bool(bos)
    assert at(tok.decode(ids[1:] if bos else ids)).input_ids == ids  # transformers puts the BOS first itself
    ids_of = lambda x: x['input_ids'] if hasattr(x, 'keys') else x  # noqa: E731 (BatchEncoding in transformers 5)
    assert ids_of(at.apply_chat_template(MESSAGES)) == ids
    assert ids_of(at.apply_chat_template(MESSAGES[:1], add_generation_prompt=True)) == \
        chat.prompt(tok, MESSAGES[0]['content'])
    sys_msgs = [{'role': 'system', 'content': 'Be brief.'}] + MESSAGES
    assert ids_of(at.apply_chat_template(sys_msgs)) == chat.render(tok, MESSAGES, system='Be brief.')[0]


CORPUS = ["Once upon a time, a little fox ran over the hill. It's 12 o'clock, the 345 dogs said: don't!"] * 30
TEXTS = ['Hello world', '  two leading spaces,   three inside and trailing  ', 'lines\n\n  indented\n\ttab',
         'digits 0123456789 3.14 1,000,000', 'é 東京 🙂 naïve Ωmega ☃', "it's we'll I'm!'s  X\n\n23", '', ' ', '\n',
         '<|im_start|>user\nthe fox 東京<|im_end|>\n<|im_start|>assistant\n<think>\n1+1\n</think>\n2<|im_end|><|pad|>']


def any_tokenizer(kind, tmp_path):
    """byte, gpt2, sp (prepare.py's sp:N), sp_llama (a SentencePiece BPE as llama2.c's and Llama 2's: dummy prefix,
    extra whitespace removed, <s> that the model is trained with) or hf (a tokenizer.json whose template adds <s>)."""
    if kind == 'gpt2':
        return gpt2_or_skip()
    if kind == 'sp':
        train_sentencepiece(CORPUS, 300, str(tmp_path / 'tokenizer.model'))
        return get_tokenizer('sp:300', str(tmp_path))
    if kind == 'sp_llama':
        import sentencepiece as spm
        spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / 'llama'),
                                       model_type='bpe', vocab_size=300, byte_fallback=True, character_coverage=1.0,
                                       normalization_rule_name='identity', split_digits=True, minloglevel=2)
        return get_tokenizer(str(tmp_path / 'llama.model'))
    if kind == 'hf':
        return get_tokenizer('hf:' + make_tokenizer_json(tmp_path / 'tok.json', ['<unk>', '<s>', '</s>'], bos='<s>')[0])
    return get_tokenizer('byte')


@needs_transformers
@pytest.mark.parametrize('kind', ['byte', 'gpt2', 'sp', 'sp_llama', 'hf'])
def test_export_of_every_tokenizer_loads_in_transformers(tmp_path, kind):
    tok = any_tokenizer(kind, tmp_path)
    assert (tok.bos_id is not None) == (kind in ('sp_llama', 'hf'))  # prepare.py's sp:N: trained without <s>
    model = tiny(vocab_size=64 * math.ceil(tok.vocab_size / 64), block_size=64)
    torch.save({'model_type': 'llama', 'model_args': vars(model.config), 'model': model.state_dict(),
                'tokenizer': tok.state()}, tmp_path / 'best.pt')
    out = str(export_checkpoint(str(tmp_path / 'best.pt'), str(tmp_path / 'hf')))
    at = transformers.AutoTokenizer.from_pretrained(out)
    ours = get_tokenizer('hf:' + out)  # our own loader of the folder (pretrained_tokenizer picks tokenizer.json)
    assert pretrained_tokenizer(out) == 'hf:' + os.path.join(out, 'tokenizer.json') and ours.bos_id == tok.bos_id
    assert (at.eos_token_id, at.bos_token_id, at.pad_token_id) == (tok.eot_id, tok.bos_id, tok.special['<|pad|>'])
    for text in TEXTS + ([EOT + 'x'] if kind in ('byte', 'gpt2') else []):  # sp's <|endoftext|> is our alias of </s>
        ids = tok.encode(text)
        assert at(text, add_special_tokens=False).input_ids == ids == ours.encode(text), text
        assert at(text).input_ids == ([] if tok.bos_id is None else [tok.bos_id]) + ids
        if '<' not in text or kind != 'sp_llama':  # its decoder strips the dummy prefix once, not after each special
            assert at.decode(ids) == tok.decode(ids) == ours.decode(ids), text
    if kind == 'sp_llama':  # unknown characters fall back to bytes, in both
        assert 0 not in tok.encode('ψ 🦊') and at('ψ 🦊', add_special_tokens=False).input_ids == tok.encode('ψ 🦊')
    else:  # (chat.render encodes piece by piece: with a dummy prefix, each would start with '▁', unlike the template)
        assert at(at.apply_chat_template(MESSAGES, tokenize=False), add_special_tokens=False).input_ids == \
            chat.render(tok, MESSAGES)[0]
    prompt = ([] if tok.bos_id is None else [tok.bos_id]) + tok.encode('Once upon a time, 東京')
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf.generation_config.eos_token_id = None  # ours does not stop: compare all 12 tokens
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)[0].tolist()
    assert model.generate(torch.tensor([prompt]), 12, temperature=0)[0].tolist() == ref


@needs_stories
@needs_transformers
def test_stories260k_export_generates_llama2cs_text_in_transformers(tmp_path):
    path = os.path.join(STORIES, 'stories260K.bin')
    tok = get_tokenizer(pretrained_tokenizer(path))
    export_hf(Llama.from_pretrained(path), str(tmp_path / 'hf'), hf_files(tok.state()))
    at = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'hf'))
    x = at('Once upon a time', return_tensors='pt').input_ids
    assert x[0].tolist() == [tok.bos_id] + tok.encode('Once upon a time') and tok.bos_id == 1  # <s> first, as run.c
    out = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'hf')).generate(
        x, max_new_tokens=256 - x.shape[1] + 1, do_sample=False)
    assert at.decode(out[0], skip_special_tokens=True) == STORIES_GREEDY


def test_export_cli_errors_are_one_line_and_leave_nothing(tmp_path, monkeypatch, capsys):
    import runpy
    torch.save({'model_type': 'rwkv7', 'model_args': {}, 'model': {}, 'tokenizer': None, 'iter_num': 0},
               tmp_path / 'rwkv.pt')
    (tmp_path / 'text.pt').write_text('not a checkpoint')
    rwkv, out = str(tmp_path / 'rwkv.pt'), str(tmp_path / 'out')
    for args, msg in [([rwkv, out], 'RWKV-7'), ([str(tmp_path / 'missing.pt'), out], 'no checkpoint'),
                      ([str(tmp_path / 'text.pt'), out], 'cannot read'), ([], 'expected 2 arguments, got 0 (usage'),
                      ([str(tmp_path), out, '--peft'], "no " + str(tmp_path / 'ckpt.pt') + ": --peft exports a LoRA"),
                      ([str(tmp_path), out], 'no best.pt or ckpt.pt in'), ([rwkv, out + '.gguf'], 'rwkv.pt does not load into its model'), (['-h'], '')]:
        monkeypatch.setattr(sys, 'argv', ['export.py'] + args)
        with pytest.raises(SystemExit) as e:
            runpy.run_path(os.path.join(ROOT, 'export.py'), run_name='__main__')
        o, err = capsys.readouterr()
        if msg:
            assert e.value.code == 1 and o == '' and err.count('\n') == 1, err
            assert err.startswith('export.py: error: ') and msg in err, err
        else:  # --help: the usage, on stdout
            assert not e.value.code and o.startswith('usage: python export.py') and err == ''
        assert not os.path.exists(out)
    p = run('export.py', rwkv, out, cwd=tmp_path, check=False, timeout=60)
    assert p.returncode == 1 and p.stderr.count('\n') == 1 and 'RWKV-7' in p.stderr and not os.path.exists(out)


def test_pretrained_tokenizer_finds_the_models_own(tmp_path):
    (tmp_path / 'tokenizer.model').write_bytes(b'')
    assert pretrained_tokenizer(str(tmp_path)) == str(tmp_path / 'tokenizer.model')
    (tmp_path / 'tokenizer.json').write_text('{}')
    assert pretrained_tokenizer(str(tmp_path)) == 'hf:' + str(tmp_path / 'tokenizer.json')
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / 'tok512.model').write_bytes(b'')
    assert pretrained_tokenizer(str(tmp_path / 'x' / 'm.bin')) == str(tmp_path / 'x' / 'tok512.model')
    with pytest.raises(FileNotFoundError):
        pretrained_tokenizer(str(tmp_path / 'x'))


# ---------------------------------------------------------------------------- stories260K (llama2.c's real model)
# llama2.c doc/stories260K.md: `./run stories260K/stories260K.bin -z stories260K/tok512.bin -t 0.0` (256 steps)
STORIES_GREEDY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a "
    "big, red ball. She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, let's go to the park.\" "
    "Lily was sad and didn't know what to do. She said, \"I want to play with your ball, but I can't find it.\"\nLily "
    "was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\nLily didn't want to "
    "help her mom, so she said, \"I'm sorry, mom. I didn't know what to do.\" Her mom said, \"Don't worry, Lily. We "
    "can help you.")


@needs_stories
def test_stories260k_greedy_matches_llama2c():
    model = Llama.from_pretrained(os.path.join(STORIES, 'stories260K.bin')).eval()
    tok = get_tokenizer(pretrained_tokenizer(os.path.join(STORIES, 'stories260K.bin')))
    assert model.config.n_embd == 64 and model.config.block_size == 512 and tok.bos_id == 1  # <s>: sequences start
    out = model.generate(torch.tensor([[tok.bos_id]]), 256, temperature=0)[0, 1:].tolist()  # from BOS, as run.c
    assert tok.decode(out) == STORIES_GREEDY
    text = open(os.path.join(SHARED, 'data', 'tinystories', 'tinystories_val_head.txt')).read()
    ids = tok.encode(text[:20000], special=False)
    x = torch.tensor([[1] + ids[i:i + 255] for i in range(0, 4 * 255, 255)])  # a BOS per window, as llama2.c
    with torch.no_grad():
        _, loss = model(x[:, :-1], targets=x[:, 1:])
    assert loss.item() < 2.0  # about 1.7 on this sample (../shared/data/README.md: 1.670 over all of it)


@needs_stories
def test_sample_and_bench_load_a_llama2c_model():
    path = os.path.join(STORIES, 'stories260K.bin')
    p = run('sample.py', f'--ckpt=llama2c:{path}', '--temperature=0', '--start=Once upon a time', '--num_samples=1',
            '--max_new_tokens=30', cwd=ROOT, check=False, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith('Once upon a time, there was a little girl named Lily.'), p.stdout
    data = os.path.join(SHARED, 'data', 'tinystories', 'tinystories_val_head.txt')
    p = run('bench.py', '--task=perplexity', f'--ckpt=llama2c:{path}', f'--data={data}', '--limit=4', cwd=ROOT,
            check=False, timeout=120)
    assert p.returncode == 0, p.stderr
    loss = float(p.stdout.strip().splitlines()[-1].split('|')[3])
    assert 1.0 < loss < 2.2, p.stdout
