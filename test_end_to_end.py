"""
train.py, sample.py and bench.py end to end on a tiny byte-level run (2 x 32 Llama, and RWKV-7): exact resume
(bitwise weights and identical logs), --eval_only's bits per byte, Ctrl-C saving and resuming, sample.py streaming
and its modes, and chat SFT: prepare.py on GSM8K-format records, masked-loss accumulation (2 x 4 micro-batches = one
batch of 8), fine-tuning a run, reasoning and chat sampling, bench.py's accuracy.

    python -m pytest test_end_to_end.py -q  (CPU, no network, no ../shared)
"""

import json
import math
import os
import re
import signal
import subprocess

import pytest
import torch

from conftest import command, corpus, prepare_byte_data, run

TEXT = corpus(tail=' Ünïcödé ✓ 😀')
TRAIN_ARGS = ['--data_dir=d', '--block_size=32', '--batch_size=4', '--n_layer=2', '--n_head=4', '--n_kv_head=2',
              '--n_embd=32', '--eval_interval=5', '--eval_iters=2', '--log_interval=1', '--warmup_iters=3',
              '--lr_decay_iters=12', '--learning_rate=3e-3', '--gradient_accumulation_steps=2', '--dropout=0.1',
              '--device=cpu']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return prepare_byte_data(tmp_path_factory.mktemp('train'), TEXT)


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
    args = command('train.py', *TRAIN_ARGS, '--out_dir=sig', '--max_iters=100000', '--eval_interval=100000',
                   '--lr_decay_iters=100000')
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


# ---------------------------------------------------------------------------- chat data: SFT, sampling, bench.py
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
    p = run('sample.py', '--out_dir=c', '--mode=chat', '--device=cpu', '--max_new_tokens=4', cwd=tmp_path,
            input='hello\nexit\n', check=False, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith('> ')
    p = run('bench.py', '--task=accuracy', '--out_dir=c', '--data=d/test.jsonl', '--limit=3', '--max_new_tokens=8',
            '--device=cpu', cwd=tmp_path)
    assert re.search(r'\| c \| 3 \| [01]\.\d{3} \| \[', p.stdout)
