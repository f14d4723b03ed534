"""
Tests of LoRA, QLoRA and 8-bit AdamW (lora.py, qlora.py, their train.py keys):

    OMP_NUM_THREADS=1 python -m pytest test_lora.py -x -q

Tiny random models (2 layers x 64 wide) of both model types, CPU only, no network, no ../shared. The QLoRA and
8-bit AdamW tests need bitsandbytes >= 0.50 (its CPU kernels) and skip without it.
"""

import dataclasses
import json
import math
import os
import shutil
import sys

import pytest
import torch

from conftest import ONE_THREAD, ROOT, TEXT, prepare_byte_data, run
from lora import (DEFAULT_TARGETS, LoRAError, LoRALinear, apply_lora, count_params, load_adapter, lora_modules,
                  lora_state_dict, merge_lora, merged_state_dict, save_adapter, unmerge_lora)
from model_llama import Llama, LlamaConfig
from model_rwkv7 import RWKV7, RWKV7Config
from tokenizer import get_tokenizer

try:
    import bitsandbytes
    HAVE_BNB = tuple(int(x) for x in bitsandbytes.__version__.split('.')[:2]) >= (0, 50)
except ImportError:
    HAVE_BNB = False
needs_bnb = pytest.mark.skipif(not HAVE_BNB, reason="needs bitsandbytes >= 0.50 (CPU 4-bit and 8-bit kernels)")


def tiny(kind, seed=0, n_embd=64):
    """A 2-layer, n_embd-wide model whose weights are O(1) (not the near-zero training init), so every adapter and
    every quantization error shows in the logits."""
    torch.manual_seed(seed)
    if kind == 'llama':
        model = Llama(LlamaConfig(block_size=32, vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=n_embd))
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0, 1 / math.sqrt(p.shape[1]))
    else:
        model = RWKV7(RWKV7Config(vocab_size=64, n_layer=2, n_embd=n_embd, head_size=16, d_decay=8, d_aaa=8, d_mv=8,
                                  d_gate=8, chunk_len=8))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.2)
    return model


def perturb_adapters(model, seed=1):
    """B starts at zero (the adapter is a no-op); give it values so that the update is seen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_modules(model):
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


def tokens(seed=0):
    return torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- lora.py
@pytest.mark.parametrize('kind', ['llama', 'rwkv7'])
def test_lora_starts_at_base_and_freezes_the_rest(kind):
    model = tiny(kind).eval()
    x = tokens()
    base_logits = model(x)[0]
    n_base = sum(p.numel() for p in model.parameters())
    wrapped = apply_lora(model, DEFAULT_TARGETS[kind], r=4, alpha=8)
    assert len(wrapped) == len(DEFAULT_TARGETS[kind]) * 2  # every projection of both layers, nothing else
    assert not any(n.endswith(('lm_head', 'head')) for n in wrapped)
    assert torch.equal(model(x)[0], base_logits)  # B = 0: exactly the base
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f'{n}.{ab}' for n in wrapped for ab in ('lora_A', 'lora_B')}
    n_train, n_total = count_params(model)
    assert n_total == n_base + n_train and n_train == sum(4 * (m.base.in_features + m.base.out_features)
                                                          for _, m in lora_modules(model))


@pytest.mark.parametrize('kind', ['llama', 'rwkv7'])
def test_only_adapters_get_gradients_also_with_checkpointing(kind):
    grads = []
    for ckpt in (False, True):
        model = tiny(kind)
        apply_lora(model, DEFAULT_TARGETS[kind], r=4, alpha=8, dropout=0.1)
        perturb_adapters(model)
        model.train()
        model.grad_checkpoint = ckpt
        torch.manual_seed(5)  # the same dropout masks in both runs (checkpointing replays the RNG)
        model(tokens(), tokens(1))[1].backward()
        for n, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad == ('lora_' in n), n
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert all(g.abs().sum() > 0 for g in grads[0].values())
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('kind,rslora', [('llama', False), ('rwkv7', True)])
def test_merge_equals_unmerged(kind, rslora):
    model = tiny(kind).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, DEFAULT_TARGETS[kind], r=4, alpha=8, rslora=rslora)
    assert lora_modules(model)[0][1].scaling == (8 / 2 if rslora else 8 / 4)
    perturb_adapters(model)
    x = tokens()
    lora_logits = model(x)[0]
    assert not torch.allclose(lora_logits, tiny(kind).eval()(x)[0], atol=1e-3)  # the adapters do something
    plain = tiny(kind, seed=9).eval()
    plain.load_state_dict(merged_state_dict(model))  # the plain model's keys, strictly
    torch.testing.assert_close(plain(x)[0], lora_logits, atol=1e-5, rtol=1e-5)
    merge_lora(model)
    torch.testing.assert_close(model(x)[0], lora_logits, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model(x)[0], lora_logits, atol=1e-5, rtol=1e-5)
    after = merged_state_dict(model)
    for _, m in lora_modules(model):
        m.lora_B.data.zero_()
    for k, v in merged_state_dict(model).items():  # unmerge gave the base weights back
        torch.testing.assert_close(v, before[k], atol=1e-6, rtol=0)
    assert after.keys() == before.keys()


def test_targets_and_refusals():
    model = tiny('llama')  # tie_embeddings: lm_head.weight is embed_tokens.weight
    with pytest.raises(LoRAError, match='tied'):
        apply_lora(model, ['lm_head'], r=4, alpha=8)
    with pytest.raises(LoRAError, match="matches no nn.Linear.*self_attn.q_proj"):
        apply_lora(model, ['q_prj'], r=4, alpha=8)
    assert apply_lora(model, ['layers.1.self_attn.*', 'up_proj'], r=2, alpha=2) == [
        'layers.1.self_attn.q_proj', 'layers.1.self_attn.k_proj', 'layers.1.self_attn.v_proj',
        'layers.1.self_attn.o_proj', 'layers.0.mlp.up_proj', 'layers.1.mlp.up_proj']
    with pytest.raises(LoRAError, match='already has LoRA'):
        apply_lora(model, ['q_proj'], r=2, alpha=2)
    untied = Llama(LlamaConfig(block_size=32, vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                               tie_embeddings=False))
    assert apply_lora(untied, ['lm_head'], r=2, alpha=2) == ['lm_head']  # only when asked, and untied
    assert isinstance(untied.lm_head, LoRALinear)


@pytest.mark.parametrize('kind', ['llama', 'rwkv7'])
def test_adapter_save_load_and_wrong_base(kind, tmp_path):
    model = tiny(kind).eval()
    apply_lora(model, DEFAULT_TARGETS[kind], r=4, alpha=8)
    perturb_adapters(model)
    path = str(tmp_path / 'adapter.safetensors')
    save_adapter(path, model, meta={'note': 'test'})
    n_adapter = sum(v.numel() for v in lora_state_dict(model).values())
    assert os.path.getsize(path) < 4 * n_adapter + 4096  # fp32 adapters and a small header, no base weights
    fresh = tiny(kind).eval()  # the same base, no adapters yet: load_adapter applies them
    assert load_adapter(path, fresh) == {'note': 'test'}
    torch.testing.assert_close(fresh(tokens())[0], model(tokens())[0], atol=0, rtol=0)
    with pytest.raises(LoRAError, match='another base model'):
        load_adapter(path, tiny(kind, seed=3))  # same shapes, other weights
    with pytest.raises(LoRAError, match='does not fit'):
        load_adapter(path, tiny(kind, n_embd=32))  # another shape
    wrapped = tiny(kind)
    apply_lora(wrapped, DEFAULT_TARGETS[kind][:2], r=4, alpha=8)  # other targets
    with pytest.raises(LoRAError, match='does not fit'):
        load_adapter(path, wrapped)


# ---------------------------------------------------------------------------- qlora.py and 8-bit AdamW
def test_missing_bitsandbytes_says_how_to_install(monkeypatch):
    import qlora
    monkeypatch.setitem(sys.modules, 'bitsandbytes', None)  # import bitsandbytes now raises ImportError
    with pytest.raises(ImportError, match='pip install bitsandbytes'):
        qlora.quantize_model(tiny('llama'), torch.float32, 'cpu')


def rel_err(a, b):
    """RMS of a - b relative to the RMS spread of b's rows (over the vocabulary)."""
    return ((a - b).pow(2).mean().sqrt() / (b - b.mean(-1, keepdim=True)).pow(2).mean().sqrt()).item()


@needs_bnb
@pytest.mark.parametrize('kind', ['llama', 'rwkv7'])
def test_qlora_forward_within_nf4_error(kind):
    # Tolerance: NF4 with blocks of 64 rounds a weight matrix with a relative RMS error of ~0.09 (0.089-0.094 on
    # these layers; the 16 NF4 levels are ~0.1-0.2 of a block's absmax apart). That error is checked per layer, the
    # 4-bit layers must compute exactly with their dequantized weights, and the logits must be no further from fp32
    # than those of the same model with Gaussian noise of the same per-layer RMS added to the weights (a factor
    # 1.5 of slack): a misplaced or wrongly scaled block would be far beyond that (an unrelated matrix: error ~1.4).
    from qlora import dequantize_weight, quantize_model
    model = tiny(kind).eval()
    x = tokens()
    ref = model(x)[0]
    apply_lora(model, DEFAULT_TARGETS[kind], r=4, alpha=8)
    weights = {n: m.base.weight.detach().clone() for n, m in lora_modules(model)}
    assert quantize_model(model, torch.float32, 'cpu') == len(weights)
    q_logits = model(x)[0]
    noisy, dequant = tiny(kind).eval(), tiny(kind).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, m in lora_modules(model):
            w, wq = weights[n], dequantize_weight(m.base.weight)
            assert m.base.weight.dtype == torch.uint8 and wq.shape == w.shape
            err = (wq - w).pow(2).mean().sqrt()
            assert err / w.pow(2).mean().sqrt() < 0.11, n
            noisy.get_submodule(n).weight.add_(torch.randn(w.shape, generator=g) * err)
            dequant.get_submodule(n).weight.copy_(wq)
    torch.testing.assert_close(q_logits, dequant(x)[0], atol=1e-4, rtol=1e-4)
    e_q, e_noise = rel_err(q_logits, ref), rel_err(noisy(x)[0], ref)
    assert 0.01 < e_q < 1.5 * e_noise, (e_q, e_noise)


@needs_bnb
def test_qlora_trains_adapters_only_and_merges():
    from lora import merge_qlora
    from qlora import quantize_model, quantized_bytes
    model = tiny('llama')
    apply_lora(model, DEFAULT_TARGETS['llama'], r=8, alpha=16)
    quantize_model(model, torch.float32, 'cpu')
    nbytes, nweights = quantized_bytes(model)
    n = len(lora_modules(model))  # NF4 codes, double-quantized statistics, each layer's two code tables (16 + 256 fp32)
    assert 0.5 * nweights < nbytes < 0.52 * nweights + n * (16 + 256) * 4
    packed = {n: m.base.weight.data.clone() for n, m in lora_modules(model)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = tokens(), tokens(1)
    losses = []
    for _ in range(10):
        loss = model(x, y)[1]
        loss.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if 'lora_' not in n)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses
    assert all(torch.equal(m.base.weight.data, packed[n]) for n, m in lora_modules(model))  # the base is frozen
    model.eval()
    logits = model(x)[0]
    plain = tiny('llama', seed=9).eval()
    with pytest.warns(UserWarning, match='dequantized'):
        plain.load_state_dict(merged_state_dict(model))
    torch.testing.assert_close(plain(x)[0], logits, atol=1e-4, rtol=1e-4)
    with pytest.warns(UserWarning, match='not re-quantized'):
        merge_qlora(model)
    torch.testing.assert_close(model(x)[0], logits, atol=1e-4, rtol=1e-4)


@needs_bnb
def test_qlora_eval_computes_as_train_on_avx512_bf16_cpus(monkeypatch):
    # bitsandbytes' Linear4bit repacks its weight to a bf16 CPU layout at the first eval no-grad forward where the CPU
    # has AVX512-BF16: pretend every CPU has it (its __init__ reads this), so the test bites on any machine
    import bitsandbytes.nn.modules as bnb_modules
    from qlora import dequantize_weight, quantize_model
    monkeypatch.setattr(bnb_modules, 'has_avx512bf16', lambda: True)
    model = tiny('llama', n_embd=96)  # SwiGLU width 256 ... and a 96-wide input: not a multiple of 64
    apply_lora(model, DEFAULT_TARGETS['llama'], r=4, alpha=8)
    perturb_adapters(model)
    quantize_model(model, torch.float32, 'cpu')
    before = {n: dequantize_weight(m.base.weight).clone() for n, m in lora_modules(model)}
    x = tokens()
    train_logits = model.train()(x)[0]
    with torch.no_grad():
        eval_logits = model.eval()(x)[0]
        again = model(x)[0]
    assert not any(getattr(m.base.weight.quant_state, 'packing_format_for_cpu', False) for _, m in lora_modules(model))
    torch.testing.assert_close(eval_logits, train_logits.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, eval_logits, atol=0, rtol=0)
    assert all(torch.equal(dequantize_weight(m.base.weight), before[n]) for n, m in lora_modules(model))


@needs_bnb
def test_qlora_check_device_refuses_a_layer_that_computes_otherwise(monkeypatch):
    # a 4-bit layer whose eval forward is not x @ dequantized(W).T (here: bitsandbytes' packed bf16 path, forced on)
    import bitsandbytes.nn.modules as bnb_modules
    import qlora
    made = qlora.quantize_linear

    def packing_layer(lin, compute_dtype, device):
        q = made(lin, compute_dtype, device)
        q.support_avx512bf16_for_cpu = True
        return q
    monkeypatch.setattr(bnb_modules, 'has_avx512bf16', lambda: True)
    monkeypatch.setattr(qlora, 'quantize_linear', packing_layer)
    with pytest.raises(RuntimeError, match='bitsandbytes'):
        qlora.check_device('cpu')
    monkeypatch.setattr(qlora, 'quantize_linear', made)
    qlora.check_device('cpu')


@needs_bnb
def test_dequantize_weight_unpacks_a_weight_packed_by_bitsandbytes():
    import bitsandbytes.functional as bnbF
    from qlora import dequantize_weight, quantize_linear
    torch.manual_seed(0)
    q = quantize_linear(torch.nn.Linear(128, 64, bias=False), torch.float32, 'cpu')
    w = dequantize_weight(q.weight).clone()
    q.weight.data, q.weight.quant_state = bnbF._convert_weight_packed_for_cpu(q.weight.data, q.weight.quant_state)
    assert (bnbF.dequantize_4bit(q.weight.data, q.weight.quant_state) - w).abs().max() > 0.1 * w.abs().max()
    back = dequantize_weight(q.weight)  # the packing rounded the block scales to bf16: within that rounding
    assert (back - w).abs().max() < 0.005 * w.abs().max()
    assert not q.weight.quant_state.packing_format_for_cpu


@needs_bnb
def test_adamw8bit_against_torch_adamw():
    # on this CPU's code path: 32-bit moments (< 4096 elements) are AdamW itself; 8-bit moments (block-wise, 256
    # levels) move the weights by what AdamW would to a few percent
    from optim import adamw8bit
    for n, tol in ((2048, 2e-5), (8192, 0.06)):  # 2e-5: fp32 rounding of weights ~1 (eps 1.2e-7)
        torch.manual_seed(0)
        w0 = torch.randn(n)
        a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
        ref = torch.optim.AdamW([a], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
        opt = adamw8bit([{'params': [b], 'weight_decay': 0.1}], 1e-2, (0.9, 0.95), 'cpu')
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            a.grad = torch.randn(n, generator=g)
            b.grad = a.grad.clone()
            ref.step()
            opt.step()
        assert (a - b).abs().max() < tol * (a - w0).abs().max(), n


@needs_bnb
def test_bitsandbytes_import_is_quiet():
    # on AVX512-BF16 CPUs bitsandbytes warns at import that it cannot fetch a hub kernel of the path qlora turns off
    p = run('-c', 'import qlora; qlora.require_bnb()', cwd=ROOT, check=False, timeout=120)
    assert p.returncode == 0 and 'kernels-community' not in p.stderr + p.stdout, p.stderr


@needs_bnb
@pytest.mark.parametrize('kind', ['llama', 'rwkv7'])
def test_adamw8bit_trains_with_the_models_groups(kind):
    from optim import adamw8bit
    model = tiny(kind)
    groups = model.configure_optimizers(0.1, 3e-3, (0.9, 0.95), 'cpu').param_groups
    opt = adamw8bit(groups, 3e-3, (0.9, 0.95), 'cpu')
    assert [g['weight_decay'] for g in opt.param_groups] == [g['weight_decay'] for g in groups if g['params']]
    if kind == 'rwkv7':
        assert [g.get('lr_scale', 1.0) for g in opt.param_groups] == [1.0, 1.0, 2.0]
    x, y = tokens(), tokens(1)
    losses = []
    for _ in range(15):
        loss = model(x, y)[1]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    big = [s for s in opt.state.values() if 'state1' in s and s['state1'].numel() >= 4096]
    assert big and all(s['state1'].dtype == torch.uint8 for s in big)  # 8-bit moments for the large matrices


# ---------------------------------------------------------------------------- train.py end to end
def train(*args, cwd, check=True):
    return run('train.py', *args, cwd=cwd, check=check, timeout=120, env=ONE_THREAD)


ARGS = ['--data_dir=d', '--block_size=32', '--batch_size=4', '--n_layer=2', '--n_head=4', '--n_kv_head=2',
        '--n_embd=64', '--eval_interval=4', '--eval_iters=2', '--log_interval=2', '--warmup_iters=2',
        '--lr_decay_iters=20', '--device=cpu']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return prepare_byte_data(tmp_path_factory.mktemp('lora'), TEXT)


def test_train_lora_from_a_run_and_resume_exactly(data_dir):
    # the base run's best.pt, as train.py writes it (a random model: one train.py run less)
    base = Llama(LlamaConfig(block_size=32, vocab_size=320, n_layer=2, n_head=4, n_kv_head=2, n_embd=64))
    os.makedirs(data_dir / 'base')
    torch.save({'model': base.state_dict(), 'model_type': 'llama', 'model_args': dataclasses.asdict(base.config),
                'tokenizer': get_tokenizer('byte').state(), 'iter_num': 0}, data_dir / 'base' / 'best.pt')
    lora = [*ARGS, '--init_from=base', '--lora_r=4', '--lora_alpha=8', '--lora_dropout=0.1', '--learning_rate=1e-2']
    p = train(*lora, '--out_dir=lora', '--max_iters=8', cwd=data_dir)
    assert 'LoRA r=4, alpha=8.0 on 14 layers' in p.stdout and '9,728 trainable of 128,832 parameters' in p.stdout
    train(*lora, '--out_dir=part', '--max_iters=4', cwd=data_dir)
    p = train(*lora, '--out_dir=part', '--max_iters=8', '--init_from=resume', cwd=data_dir)
    assert 'resuming from part/ckpt.pt at iteration 4' in p.stdout
    a, b = (torch.load(data_dir / d / 'ckpt.pt', weights_only=False) for d in ('lora', 'part'))
    assert a['iter_num'] == b['iter_num'] == 8 and a['model'].keys() == b['model'].keys()
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])  # bitwise, dropout included
    assert all('lora_' in k for k in a['model']) and a['lora']['base']['init_from'] == 'base'
    assert os.path.getsize(data_dir / 'lora' / 'ckpt.pt') < 0.5 * os.path.getsize(data_dir / 'base' / 'best.pt')
    log = [json.loads(line) for line in open(data_dir / 'lora' / 'log.jsonl')]
    val = [r['val_loss'] for r in log if 'val_loss' in r]
    assert val[-1] < val[0], val
    best = torch.load(data_dir / 'lora' / 'best.pt', weights_only=False)  # merged: a plain model loads it
    plain = Llama(LlamaConfig(**best['model_args']))
    plain.load_state_dict(best['model'])
    fresh = Llama(LlamaConfig(**best['model_args']))
    fresh.load_state_dict(torch.load(data_dir / 'base' / 'best.pt', weights_only=False)['model'])
    load_adapter(str(data_dir / 'lora' / 'adapter.safetensors'), fresh)  # the same best adapters, unmerged
    torch.testing.assert_close(fresh.eval()(tokens())[0], plain.eval()(tokens())[0], atol=1e-5, rtol=1e-5)
    # as a Hugging Face base + PEFT adapter (python export.py run folder --peft): read back by PEFT's names, it is best.pt
    p = run('export.py', 'lora', 'hf', '--peft', cwd=data_dir, check=False, timeout=120)
    assert p.returncode == 0, p.stderr
    from safetensors.torch import load_file, save_file
    back = Llama.from_pretrained(str(data_dir / 'hf' / 'base'))
    c = json.load(open(data_dir / 'hf' / 'adapter' / 'adapter_config.json'))
    assert c['base_model_name_or_path'] == str(data_dir / 'hf' / 'base') and c['lora_dropout'] == 0.1
    apply_lora(back, c['target_modules'], c['r'], c['lora_alpha'], rslora=c['use_rslora'])
    sd = load_file(str(data_dir / 'hf' / 'adapter' / 'adapter_model.safetensors'))
    with torch.no_grad():
        for n, m in lora_modules(back):
            m.lora_A.copy_(sd.pop(f'base_model.model.model.{n}.lora_A.weight'))
            m.lora_B.copy_(sd.pop(f'base_model.model.model.{n}.lora_B.weight'))
    assert not sd
    torch.testing.assert_close(back.eval()(tokens())[0], plain(tokens())[0], atol=1e-5, rtol=1e-5)
    # an adapter file that does not load: a one-line error, and nothing written (no base folder without its adapter)
    shutil.copytree(data_dir / 'lora', data_dir / 'lora_bad')
    save_file({'x': torch.zeros(2)}, str(data_dir / 'lora_bad' / 'adapter.safetensors'))
    p = run('export.py', 'lora_bad', 'hf-bad', '--peft', cwd=data_dir, check=False, timeout=120)
    assert p.returncode == 1 and 'is not an adapter file' in p.stderr and p.stderr.count('\n') == 1, p.stderr
    assert not os.path.exists(data_dir / 'hf-bad')


@needs_bnb
def test_train_qlora_on_the_shakespeare_config_merges_into_what_it_trained(data_dir):
    # the README's QLoRA command's shapes (config/shakespeare_char.py: SwiGLU width 352, not a multiple of 64), with
    # evals; the merged best.pt must compute what the quantized base + the saved adapters compute
    cfg = dict(block_size=64, vocab_size=320, n_layer=4, n_head=4, n_kv_head=2, n_embd=128)
    base = Llama(LlamaConfig(**cfg))
    os.makedirs(data_dir / 'base_sc')
    torch.save({'model': base.state_dict(), 'model_type': 'llama', 'model_args': dataclasses.asdict(base.config),
                'tokenizer': get_tokenizer('byte').state(), 'iter_num': 0}, data_dir / 'base_sc' / 'best.pt')
    p = train(os.path.join(ROOT, 'config', 'shakespeare_char.py'), '--data_dir=d', '--init_from=base_sc',
              '--lora_r=8', '--qlora', '--optim=adamw8bit', '--out_dir=qsc', '--max_iters=6', '--eval_interval=3',
              '--eval_iters=2', '--learning_rate=1e-2', '--warmup_iters=0', cwd=data_dir)
    assert 'QLoRA: 28 linear layers in NF4' in p.stdout
    from qlora import quantize_model
    best = torch.load(data_dir / 'qsc' / 'best.pt', weights_only=False)
    merged = Llama(LlamaConfig(**best['model_args']))
    merged.load_state_dict(best['model'])
    adapted = Llama(LlamaConfig(**cfg))
    adapted.load_state_dict(base.state_dict())
    apply_lora(adapted, best['merged_lora']['targets'], best['merged_lora']['r'], best['merged_lora']['alpha'])
    quantize_model(adapted, torch.float32, 'cpu')
    load_adapter(str(data_dir / 'qsc' / 'adapter.safetensors'), adapted)
    assert any(m.lora_B.abs().max() > 0 for _, m in lora_modules(adapted))  # the adapters trained
    x = torch.randint(0, 320, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(x)[0], adapted.eval()(x)[0], atol=1e-4, rtol=1e-4)


@needs_bnb
def test_train_qlora_rwkv_adamw8bit_checkpointing(data_dir):
    args = [*ARGS, '--model_type=rwkv7', '--head_size=16', '--chunk_len=8', '--lora_r=4', '--qlora',
            '--optim=adamw8bit', '--grad_checkpoint', '--learning_rate=1e-2', '--out_dir=q']
    p = train(*args, '--max_iters=8', cwd=data_dir)
    assert 'QLoRA: 12 linear layers in NF4' in p.stdout and 'on 12 layers' in p.stdout
    log = [json.loads(line) for line in open(data_dir / 'q' / 'log.jsonl')]
    val = [r['val_loss'] for r in log if 'val_loss' in r]
    assert val[-1] < val[0] - 0.5, val
    p = train(*args, '--max_iters=10', '--init_from=resume', '--seed=7', cwd=data_dir, check=False)
    assert p.returncode == 1 and 'not the one this LoRA run was trained on' in p.stderr  # a scratch base: seeded
    p = train(*ARGS, '--qlora', cwd=data_dir, check=False)
    assert p.returncode == 1 and 'set lora_r' in p.stderr
    p = run('export.py', 'q', 'hf-q', '--peft', cwd=data_dir, check=False, timeout=120)
    assert p.returncode == 1 and 'not a LoRA run of a Llama' in p.stderr and not os.path.exists(data_dir / 'hf-q')
