"""
Our RWKV-7 against BlinkDL's official `rwkv` pip package, an independent implementation (its x070 model, strategy
'cpu fp32'): a run exported by export.py to a .pth runs in it with our logits (1e-4), in its sequence mode and token
by token; so does a LoRA run started from an official .pth (train.py --init_from=rwkv:<.pth>) and exported merged.
With ../shared, our writer re-creates the official reference file's layout bit for bit. Skips without `rwkv`
(requirements-dev.txt).

    python -m pytest test_rwkv_official.py -q
"""

import dataclasses
import os

import pytest
import torch

from conftest import ONE_THREAD, ROOT, SHARED, TEXT, prepare_byte_data, run
from model_rwkv7 import RWKV7, RWKV7Config
from tokenizer import get_tokenizer

os.environ.setdefault('RWKV_V7_ON', '1')  # read when rwkv.model is imported: RWKV is then its x070 class
try:
    from rwkv.model import RWKV as OfficialRWKV
except ImportError:
    OfficialRWKV = None
needs_rwkv = pytest.mark.skipif(OfficialRWKV is None, reason="needs the official rwkv package (pip install rwkv)")
REF = os.path.join(SHARED, 'reference', 'rwkv7_r1', 'model.pth')
PROMPT = "Tom has 12 apples. He gives 5 to Ann. How many apples does Tom have now?"


def random_model(vocab_size, seed=0):
    """A 2-layer RWKV-7 whose weights are O(0.1) noise on the training init (which zeroes the output projections and
    LoRA A's): every weight matters to the logits."""
    torch.manual_seed(seed)
    model = RWKV7(RWKV7Config(vocab_size=vocab_size, n_layer=2, n_embd=64, head_size=16, d_decay=16, d_aaa=16, d_mv=16,
                              d_gate=32, chunk_len=8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def official_logits(pth, ids):
    """The rwkv package's logits (T, V) of ids: its sequence mode, then the same tokens one at a time."""
    model = OfficialRWKV(pth.removesuffix('.pth'), strategy='cpu fp32')
    seq, _ = model.forward(ids, None, full_output=True)
    state, rows = None, []
    for t in ids:
        out, state = model.forward([t], state)
        rows.append(out)
    return seq, torch.stack(rows)


def our_logits(model, ids):
    with torch.no_grad():
        return model.eval()(torch.tensor([ids]))[0][0]


@pytest.mark.skipif(not os.path.isfile(REF), reason='needs ../shared/reference/rwkv7_r1 (CI has it)')
def test_pth_layout_is_the_official_trainers(tmp_path):
    """The reference file (written by the official trainer) read and written back: the same keys in the same order,
    shapes, dtypes and values (block 0's v0/v1/v2, never read, are zeros in ours)."""
    from export import export
    ref = torch.load(REF, weights_only=True)
    export(f'rwkv:{REF}', str(tmp_path / 'x.pth'))
    ours = torch.load(tmp_path / 'x.pth', weights_only=True)
    assert list(ours) == list(ref)
    for k, v in ref.items():
        assert ours[k].shape == v.shape and ours[k].dtype == v.dtype, k
        assert torch.equal(ours[k], v) or k.startswith('blocks.0.att.v'), k
    export(f'rwkv:{REF}', str(tmp_path / 'y.pth'), dtype='bfloat16')
    half = torch.load(tmp_path / 'y.pth', weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in half.values()) and torch.equal(half['head.weight'],
                                                                                 ref['head.weight'].bfloat16())


@needs_rwkv
def test_exported_run_runs_in_the_official_package_with_our_logits(tmp_path):
    tok = get_tokenizer('byte')
    model = random_model(320)
    torch.save({'model_type': 'rwkv7', 'model_args': dataclasses.asdict(model.config), 'model': model.state_dict(),
                'tokenizer': tok.state(), 'iter_num': 9}, tmp_path / 'best.pt')
    p = run('export.py', str(tmp_path), 'run.pth', cwd=tmp_path, timeout=120)
    assert p.stdout.strip() == "wrote run.pth and run.tokenizer.json"
    ids = tok.encode(PROMPT)
    seq, steps = official_logits(str(tmp_path / 'run.pth'), ids)
    ours = our_logits(model, ids)
    assert ours.abs().max() > 1  # logits that differ a lot between tokens, so 1e-4 means something
    torch.testing.assert_close(seq, ours, atol=1e-4, rtol=0)
    torch.testing.assert_close(steps, ours, atol=1e-4, rtol=0)
    from tokenizers import Tokenizer  # the package's PIPELINE reads a tokenizer file with it
    assert Tokenizer.from_file(str(tmp_path / 'run.tokenizer.json')).encode(PROMPT).ids == ids


@needs_rwkv
def test_lora_on_an_official_pth_exports_merged_and_runs_in_the_official_package(tmp_path):
    """official .pth in -> train.py with LoRA -> merged best.pt -> .pth out: the package runs it with the logits of
    the merged model, which differ from the base's (the adapters trained)."""
    prepare_byte_data(tmp_path, TEXT)
    base = random_model(320)
    torch.save(base.official_state_dict(torch.bfloat16), tmp_path / 'base.pth')  # as released: bfloat16
    run('train.py', '--data_dir=d', '--model_type=rwkv7', '--init_from=rwkv:base.pth', '--lora_r=4', '--out_dir=lo',
        '--block_size=32', '--batch_size=4', '--max_iters=6', '--eval_interval=3', '--eval_iters=2',
        '--learning_rate=1e-2', '--warmup_iters=0', '--lr_decay_iters=6', '--chunk_len=8', '--device=cpu',
        cwd=tmp_path, timeout=180, env=ONE_THREAD)
    run('export.py', 'lo', 'tuned.pth', '--dtype=float32', cwd=tmp_path, timeout=120)
    from checkpoint import load_model
    tuned, tok, _ = load_model(str(tmp_path / 'lo' / 'best.pt'))
    ids = tok.encode(PROMPT)
    seq, steps = official_logits(str(tmp_path / 'tuned.pth'), ids)
    ours = our_logits(tuned, ids)
    torch.testing.assert_close(seq, ours, atol=1e-4, rtol=0)
    torch.testing.assert_close(steps, ours, atol=1e-4, rtol=0)
    before = our_logits(RWKV7.from_pretrained(str(tmp_path / 'base.pth')), ids)
    assert (before - ours).abs().max() > 1e-3
    p = run('export.py', 'lo/ckpt.pt', 'x.pth', cwd=tmp_path, check=False, timeout=120)
    assert p.returncode == 1 and 'holds only LoRA adapters' in p.stderr and not os.path.exists(tmp_path / 'x.pth')


def test_pth_export_errors_are_one_line_and_write_nothing(tmp_path):
    tok = get_tokenizer('byte')
    model = random_model(320)
    torch.save({'model_type': 'rwkv7', 'model_args': dataclasses.asdict(model.config), 'model': model.state_dict(),
                'tokenizer': tok.state(), 'iter_num': 9}, tmp_path / 'best.pt')
    (tmp_path / 'dir.pth').mkdir()
    for args, msg in [(['best.pt', 'x.pth', '--dtype=int8'], "unknown --dtype 'int8'"),
                      (['best.pt', 'dir.pth'], 'is a folder'), (['best.pt', 'hf', '--dtype=bfloat16'], 'for .pth and .gguf files'),
                      (['best.pt', 'x.pth', '--peft'], 'a pth file holds the merged model'),
                      (['llama2c:m.bin', 'x.pth'], "is a Llama: .pth is RWKV-7's format"),
                      (['rwkv:x.pth', 'hf'], 'export it to a .pth file'), (['best.pt', 'hf'], 'export it to a .pth'),
                      (['best.pt', 'no/such/dir/x.pth'], 'No such file')]:
        p = run('export.py', *args, cwd=tmp_path, check=False, timeout=60)
        assert p.returncode == 1 and p.stderr.count('\n') == 1 and msg in p.stderr, (args, p.stderr)
    assert sorted(os.listdir(tmp_path)) == ['best.pt', 'dir.pth'] and not os.listdir(tmp_path / 'dir.pth')
    (tmp_path / 'junk.pth').write_text('not a checkpoint')
    p = run('export.py', 'rwkv:junk.pth', 'y.pth', cwd=tmp_path, check=False, timeout=60)
    assert p.returncode == 1 and 'not a readable .pth file' in p.stderr and p.stderr.count('\n') == 1
    # the .pth and its tokenizer.json are one pair: when the second cannot be written, the first stays as it was
    run('export.py', 'best.pt', 'x.pth', cwd=tmp_path, timeout=60)
    before = (tmp_path / 'x.pth').read_bytes()
    (tmp_path / 'x.tokenizer.json').unlink()
    (tmp_path / 'x.tokenizer.json').mkdir()
    p = run('export.py', 'best.pt', 'x.pth', '--dtype=bfloat16', cwd=tmp_path, check=False, timeout=60)
    assert p.returncode == 1 and (tmp_path / 'x.pth').read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['best.pt', 'dir.pth', 'junk.pth', 'x.pth', 'x.tokenizer.json']
