"""
Tests of train.py's scale-out and failure handling: DDP and FSDP2 on the CPU with gloo (2 processes train like 1,
also LoRA, and rows grouped by length, on chat data), exact resume after SIGKILL (at a random iteration, during a
checkpoint write, under DDP) and of FSDP runs, keep_last, non-finite losses skipped, stopping the run or rolled back,
a full disk, SIGTERM, out of memory, optim.py's Muon against torch.optim.Muon / AdamW (and a Muon run resumed exactly), and a
table of bad inputs that must get a clear one-line error, exit status 1 and no changed file.
python -m pytest test_train.py  (CPU: about 120 s on 2 busy cores, ~105 s of CPU time)

Runs are a 2 x 32 Llama, fp32, dropout 0, so they compare bitwise: on 32-token rows of a small byte-tokenized text,
and for LoRA on gsm_synth chat data. Runs that go on from the middle start from a copy of the reference run's
ckpt_000012.pt (keep_last).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile

import numpy as np
import pytest
import torch

from conftest import ONE_THREAD, ROOT, TEXT, bad_input_results, command, run
from shards import write_shard
from tokenizer import get_tokenizer

# 20 iterations of 2 micro-batches, an eval and a checkpoint every 4; the learning rate depends only on the
# iteration (lr_decay_iters is fixed), so a run stopped with any max_iters and resumed follows the reference
ARGS = ['--data_dir=d', '--block_size=32', '--batch_size=4', '--gradient_accumulation_steps=2', '--n_layer=2',
        '--n_head=4', '--n_kv_head=2', '--n_embd=32', '--eval_interval=4', '--eval_iters=2', '--log_interval=1',
        '--warmup_iters=3', '--lr_decay_iters=20', '--learning_rate=3e-3', '--device=cpu', '--keep_last=3']


# train.py with faults injected from outside (train.py has no test hooks): TRAIN_SAVE_PAUSE=s prints 'writing
# <out_dir>/ckpt.pt.tmp' and waits s seconds in each write of ckpt.pt, between the temp file and the rename;
# TRAIN_NAN_ITERS=12,14 makes the model's training loss of those iterations NaN, once each (after a rollback they
# train; a chat micro-batch with no supervised token stays 0, as train.py makes it)
FAULTY_TRAIN = r"""
import os, runpy, sys, time
sys.path.insert(0, os.environ['ROOT'])
import data, model_llama, model_rwkv7

pause = float(os.environ.get('TRAIN_SAVE_PAUSE', 0))
replace = os.replace
def slow_replace(src, dst):
    if pause and str(dst).endswith('ckpt.pt'):
        print(f"writing {src}", flush=True)
        time.sleep(pause)
    replace(src, dst)
os.replace = slow_replace

nan = {int(i) for i in os.environ.get('TRAIN_NAN_ITERS', '').split(',') if i}
now = {'iter': None, 'fired': set()}  # the iteration of the last training batch drawn; the NaNs given
draw = data.Batches.draw
def draw_(self, split, gen, iter_num=0, *args):
    if split == 'train':  # every draw of an iteration comes before its forwards
        nan.difference_update(now['fired'])  # once each
        now['fired'].clear()
        now['iter'] = iter_num
    return draw(self, split, gen, iter_num, *args)
def nan_loss(forward):
    def forward_(self, *args, **kwargs):
        logits, loss = forward(self, *args, **kwargs)
        if self.training and now['iter'] in nan:
            now['fired'].add(now['iter'])
            loss = loss * float('nan')
        return logits, loss
    return forward_
data.Batches.draw = draw_
model_llama.Llama.forward = nan_loss(model_llama.Llama.forward)
model_rwkv7.RWKV7.forward = nan_loss(model_rwkv7.RWKV7.forward)
runpy.run_path(os.path.join(os.environ['ROOT'], 'train.py'), run_name='__main__')
"""


def launch(nproc, env):
    """What follows python: train.py (nproc 0), or torchrun starting it in nproc processes; with TRAIN_SAVE_PAUSE or
    TRAIN_NAN_ITERS in env, FAULTY_TRAIN running train.py instead."""
    script = os.path.join(ROOT, 'train.py')
    if {'TRAIN_SAVE_PAUSE', 'TRAIN_NAN_ITERS'} & set(env):
        script = os.path.join(tempfile.gettempdir(), f'faulty_train_{os.getpid()}.py')
        with open(script, 'w') as f:
            f.write(FAULTY_TRAIN)
    if not nproc:
        return [script]
    return ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', script]


def train(*args, cwd, nproc=0, check=True, env=None):
    env = {**ONE_THREAD, 'ROOT': ROOT, **(env or {})}
    return run(*launch(nproc, env), *args, cwd=cwd, check=check, timeout=180, env=env)


def start(*args, cwd, nproc=0, env=None):
    env = {**os.environ, **ONE_THREAD, 'ROOT': ROOT, **(env or {})}
    return subprocess.Popen(command(*launch(nproc, env), *args), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def wait_for(proc, prefix):
    """Read proc's output until a line starts with prefix; return the lines read."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no line '{prefix}' in the output:\n{''.join(lines)[-3000:]}")


def kill_hard(proc):
    """SIGKILL a process and its children (torchrun's workers) at once, as a crash of the machine would."""
    kids = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1]) == proc.pid:
                kids.append(int(pid))
        except (OSError, IndexError, ValueError):
            pass
    for pid in kids + [proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def ckpt(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def same_weights(a, b):
    a, b = (ckpt(p)['model'] if isinstance(p, (str, os.PathLike)) else p for p in (a, b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(out_dir):
    """{iteration: training loss} from log.jsonl; a line repeated after a resume keeps the later value."""
    return {r['iter']: r['loss'] for r in map(json.loads, open(os.path.join(out_dir, 'log.jsonl'))) if 'loss' in r}


def from_ref(tmp, name):
    """A new out_dir holding the reference run's checkpoint of iteration 12 as ckpt.pt: a run stopped there."""
    os.makedirs(tmp / name)
    shutil.copy(tmp / 'ref' / 'ckpt_000012.pt', tmp / name / 'ckpt.pt')
    return tmp / name


@pytest.fixture(scope='module')
def tmp(tmp_path_factory):
    """The data (d) and the reference: one process, 20 iterations, never stopped (ref)."""
    tmp = tmp_path_factory.mktemp('train')
    (tmp / 'input.txt').write_text(TEXT)
    tok, n = get_tokenizer('byte'), len(TEXT) * 9 // 10  # what prepare.py --tokenizer=byte writes, without its start
    os.makedirs(tmp / 'd')
    for split, text in (('train', TEXT[:n]), ('val', TEXT[n:])):
        write_shard(str(tmp / 'd' / f'{split}_000.bin'), [tok.eot_id] + tok.encode(text), tok.vocab_size)
    (tmp / 'd' / 'meta.json').write_text(json.dumps({'tokenizer': 'byte', 'vocab_size': tok.vocab_size,
                                                      'eot_id': tok.eot_id}))
    train(*ARGS, '--out_dir=ref', '--max_iters=20', cwd=tmp)
    return tmp


@pytest.fixture(scope='module')
def ddp_run(tmp):
    """The reference's config on 2 processes (gloo), each running 1 of the 2 micro-batches of a step."""
    return train(*ARGS, '--out_dir=ddp', '--max_iters=20', cwd=tmp, nproc=2)


# ---------------------------------------------------------------------------- DDP
def test_two_processes_train_like_one(tmp, ddp_run):
    assert 'tokens per iteration: 256 (2 x 4 x 32), device cpu, dtype float32, 2 processes' in ddp_run.stdout
    assert ddp_run.stdout.count('\niter 7: loss') == 1  # rank 0 alone logs
    one, two = losses(tmp / 'ref'), losses(tmp / 'ddp')
    assert sorted(one) == sorted(two) == list(range(1, 21))
    diff = max(abs(one[i] - two[i]) for i in one)
    print(f"largest difference of the training loss over 20 steps, 1 vs 2 processes: {diff:.3g}")
    assert diff < 1e-5
    evals = [[r['val_loss'] for r in map(json.loads, open(tmp / d / 'log.jsonl')) if 'val_loss' in r]
             for d in ('ref', 'ddp')]
    assert len(evals[0]) == 6 and np.allclose(evals[0], evals[1], atol=1e-5)
    a, b = ckpt(tmp / 'ref' / 'ckpt.pt'), ckpt(tmp / 'ddp' / 'ckpt.pt')
    assert a['iter_num'] == b['iter_num'] == 20 and len(b['rng']['ranks']) == 2
    assert all(torch.allclose(a['model'][k], b['model'][k], atol=1e-5) for k in a['model'])


def test_two_processes_killed_and_resumed(tmp, ddp_run):
    # killed (both ranks and torchrun, SIGKILL) somewhere after the checkpoint of iteration 8, resumed on 2 processes
    kill_at = random.randint(9, 14)
    proc = start(*ARGS, '--out_dir=ddp_kill', '--max_iters=1000', cwd=tmp, nproc=2)
    wait_for(proc, f'iter {kill_at}:')
    kill_hard(proc)
    it = ckpt(tmp / 'ddp_kill' / 'ckpt.pt')['iter_num']
    assert 8 <= it < 20, (kill_at, it)
    p = train(*ARGS, '--out_dir=ddp_kill', '--max_iters=20', '--init_from=resume', cwd=tmp, nproc=2)
    assert f'resuming from ddp_kill/ckpt.pt at iteration {it}' in p.stdout
    assert same_weights(tmp / 'ddp' / 'ckpt.pt', tmp / 'ddp_kill' / 'ckpt.pt'), (kill_at, it)
    assert losses(tmp / 'ddp')[20] == losses(tmp / 'ddp_kill')[20]


@pytest.fixture(scope='module')
def chat(tmp):
    """gsm_synth chat data, byte tokens (tmp/chat: 100 train examples of 403-977 tokens)."""
    run('prepare.py', '--dataset=gsm_synth', '--format=chat', '--tokenizer=byte', '--data_dir=chat', '--synth_train=100',
        '--synth_val=20', '--synth_test=10', cwd=tmp, env=ONE_THREAD)
    return tmp / 'chat'


def test_lora_on_chat_data_under_ddp(tmp, chat):
    # chat data: the supervised tokens per micro-batch vary, so the window's count is summed over the ranks; LoRA:
    # only the adapters are in DDP's reducer, and a seeded scratch base is the same on both ranks. 2 x 2 micro-batches
    args = [*ARGS, '--data_dir=chat', '--block_size=512', '--batch_size=1', '--gradient_accumulation_steps=4',
            '--lora_r=4', '--lora_alpha=8', '--max_iters=4', '--learning_rate=1e-2']
    train(*args, '--out_dir=lora1', cwd=tmp)
    p = train(*args, '--out_dir=lora2', cwd=tmp, nproc=2)
    assert 'LoRA r=4' in p.stdout
    one, two = losses(tmp / 'lora1'), losses(tmp / 'lora2')
    diff = max(abs(one[i] - two[i]) for i in one)
    print(f"largest difference of the training loss, LoRA on chat data, 1 vs 2 processes: {diff:.3g}")
    assert diff < 1e-5 and one[4] < one[1]
    a, b = ckpt(tmp / 'lora1' / 'ckpt.pt'), ckpt(tmp / 'lora2' / 'ckpt.pt')
    assert 'lora' in b and all(torch.allclose(a['model'][k], b['model'][k], atol=1e-5) for k in a['model'])


def test_group_by_length_on_two_processes_and_resumed(tmp, chat):
    # rows of one example each, micro-batches of one length band and of varying size, with curriculum: 2 processes
    # train like 1, and a run stopped at 3 and resumed like the straight one
    args = [*ARGS, '--data_dir=chat', '--block_size=1024', '--batch_size=2', '--group_by_length', '--curriculum']
    p = train(*args, '--out_dir=gbl', '--max_iters=6', cwd=tmp)
    assert 'truncated' not in p.stdout  # examples of 403-977 tokens: each row as long as its example needs
    train(*args, '--out_dir=gbl2', '--max_iters=6', cwd=tmp, nproc=2)
    train(*args, '--out_dir=gbl_resume', '--max_iters=3', cwd=tmp)
    train(*args, '--out_dir=gbl_resume', '--max_iters=6', '--init_from=resume', cwd=tmp)
    one, two = losses(tmp / 'gbl'), losses(tmp / 'gbl2')
    assert max(abs(one[i] - two[i]) for i in one) < 1e-5 and one[6] < one[1], (one, two)
    assert same_weights(tmp / 'gbl' / 'ckpt.pt', tmp / 'gbl_resume' / 'ckpt.pt')


# ---------------------------------------------------------------------------- FSDP
@pytest.fixture(scope='module')
def fsdp_run(tmp):
    """The reference's config on 2 processes with FSDP2 (gloo); 3 eval batches, so one rank runs a spare forward."""
    return train(*ARGS, '--out_dir=fsdp', '--max_iters=20', '--fsdp', '--eval_iters=3', cwd=tmp, nproc=2)


def test_fsdp_trains_like_one_process_and_resumes_exactly(tmp, fsdp_run):
    one, two = losses(tmp / 'ref'), losses(tmp / 'fsdp')
    assert sorted(two) == list(range(1, 21))
    diff = max(abs(one[i] - two[i]) for i in one)
    print(f"largest difference of the training loss over 20 steps, 1 process vs 2 with FSDP: {diff:.3g}")
    assert diff < 1e-5
    # the file of one process: full tensors (tied ones shared), the optimizer state keyed by index
    a, b = ckpt(tmp / 'ref' / 'ckpt.pt'), ckpt(tmp / 'fsdp' / 'ckpt.pt')
    assert a.keys() == b.keys() and list(a['model']) == list(b['model'])
    assert all(torch.allclose(a['model'][k], b['model'][k], atol=1e-5) for k in a['model'])
    assert b['model']['lm_head.weight'].data_ptr() == b['model']['embed_tokens.weight'].data_ptr()
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and all(torch.allclose(sa[i][k], sb[i][k], atol=1e-5) for i in sa for k in sa[i])
    # its checkpoint of iteration 12 resumed with FSDP is bitwise the unbroken run; in one process, within 1e-5
    for name, nproc, fsdp in (('fsdp_resume', 2, ['--fsdp', '--eval_iters=3']), ('fsdp_to_one', 0, [])):
        os.makedirs(tmp / name)
        shutil.copy(tmp / 'fsdp' / 'ckpt_000012.pt', tmp / name / 'ckpt.pt')
        p = train(*ARGS, f'--out_dir={name}', '--max_iters=20', '--init_from=resume', *fsdp, cwd=tmp, nproc=nproc)
        assert f'resuming from {name}/ckpt.pt at iteration 12' in p.stdout
    assert same_weights(tmp / 'fsdp' / 'ckpt.pt', tmp / 'fsdp_resume' / 'ckpt.pt')
    assert str(sb) == str(ckpt(tmp / 'fsdp_resume' / 'ckpt.pt')['optimizer']['state'])
    assert losses(tmp / 'fsdp')[20] == losses(tmp / 'fsdp_resume')[20]
    c = ckpt(tmp / 'fsdp_to_one' / 'ckpt.pt')['model']
    assert all(torch.allclose(b['model'][k], c[k], atol=1e-5) for k in c)


# ---------------------------------------------------------------------------- exact resume, keep_last
def test_sigkill_at_a_random_iteration_resumes_exactly(tmp):
    kill_at = random.randint(5, 14)  # after the checkpoint of iteration 4
    proc = start(*ARGS, '--out_dir=kill', '--max_iters=1000', cwd=tmp)
    wait_for(proc, f'iter {kill_at}:')
    kill_hard(proc)
    it = ckpt(tmp / 'kill' / 'ckpt.pt')['iter_num']
    assert 4 <= it < 20, (kill_at, it)
    train(*ARGS, '--out_dir=kill', '--max_iters=20', '--init_from=resume', cwd=tmp)
    a, b = ckpt(tmp / 'ref' / 'ckpt.pt'), ckpt(tmp / 'kill' / 'ckpt.pt')
    assert same_weights(a['model'], b['model']), (kill_at, it)
    assert str(a['optimizer']['state']) == str(b['optimizer']['state'])
    assert losses(tmp / 'ref')[20] == losses(tmp / 'kill')[20]


def test_sigkill_while_writing_a_checkpoint_then_sigterm(tmp):
    # killed while ckpt.pt of 16 is written (a pause between the temp file and the rename): the one of 12 stays whole
    out = from_ref(tmp, 'kill_write')
    args = [*ARGS, '--out_dir=kill_write', '--max_iters=20', '--init_from=resume']
    proc = start(*args, cwd=tmp, env={'TRAIN_SAVE_PAUSE': '1'})
    wait_for(proc, 'writing kill_write/ckpt.pt.tmp')
    kill_hard(proc)
    assert (out / 'ckpt.pt.tmp').exists() and ckpt(out / 'ckpt.pt')['iter_num'] == 12
    # resumed, then SIGTERM (what schedulers send) at the same place: the step finishes, 17 is saved, exit 0
    proc = start(*args, cwd=tmp, env={'TRAIN_SAVE_PAUSE': '0.3'})
    wait_for(proc, 'writing kill_write/ckpt.pt.tmp')
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and 'saved kill_write/ckpt.pt at iteration 17; resume with --init_from=resume' in output
    assert not (out / 'ckpt.pt.tmp').exists()
    train(*args, cwd=tmp)
    assert same_weights(tmp / 'ref' / 'ckpt.pt', out / 'ckpt.pt')
    assert losses(tmp / 'ref')[20] == losses(out)[20]


def test_keep_last(tmp):
    assert sorted(f for f in os.listdir(tmp / 'ref') if f.startswith('ckpt')) == \
        ['ckpt.pt', 'ckpt_000012.pt', 'ckpt_000016.pt', 'ckpt_000020.pt']
    assert os.path.samefile(tmp / 'ref' / 'ckpt.pt', tmp / 'ref' / 'ckpt_000020.pt')  # a hard link: no extra space
    assert ckpt(tmp / 'ref' / 'ckpt_000016.pt')['iter_num'] == 16


def test_overwrite_replaces_the_earlier_run_whole(tmp):
    """A new run over another run is refused (BAD_INPUTS); with --overwrite=True the earlier run's files go first,
    so the folder never mixes two runs' checkpoints or log lines."""
    out = tmp / 'over'
    shutil.copytree(tmp / 'ref', out)
    train(*ARGS, '--out_dir=over', '--max_iters=4', '--overwrite=True', cwd=tmp)
    assert sorted(f for f in os.listdir(out) if f.endswith('.pt')) == ['best.pt', 'ckpt.pt', 'ckpt_000004.pt']
    assert ckpt(out / 'ckpt.pt')['iter_num'] == 4
    assert losses(out) == {k: v for k, v in losses(tmp / 'ref').items() if k <= 4}  # this run's four lines alone


# ---------------------------------------------------------------------------- faults
def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp):
    # NaN losses at 12 (alone), then 14, 15, 16: the third in a row stops the run; a checkpoint at every iteration
    out = from_ref(tmp, 'nan')
    p = train(*ARGS, '--out_dir=nan', '--max_iters=20', '--init_from=resume', '--eval_interval=1', '--keep_last=9',
              '--max_bad_steps=3', cwd=tmp, check=False, env={'TRAIN_NAN_ITERS': '12,14,15,16'})
    assert p.returncode == 1 and 'Traceback' not in p.stderr, p.stderr
    assert 'error: 3 steps in a row had a non-finite loss or gradient (iterations 14 to 16' in p.stderr
    assert 'nan/ckpt.pt (iteration 16) is kept' in p.stderr and '--learning_rate' in p.stderr
    assert 'iter 12: non-finite loss or gradient (loss nan), step skipped (1 in a row)' in p.stdout
    skipped = [r['iter'] for r in map(json.loads, open(out / 'log.jsonl')) if 'skipped' in r]
    assert skipped == [12, 14, 15, 16]
    # a skipped step changes nothing (weights, optimizer); the step after it trains
    a, b = ckpt(tmp / 'ref' / 'ckpt_000012.pt'), ckpt(out / 'ckpt_000013.pt')
    assert same_weights(a['model'], b['model']) and str(a['optimizer']['state']) == str(b['optimizer']['state'])
    assert not same_weights(out / 'ckpt_000013.pt', out / 'ckpt_000014.pt')
    assert same_weights(out / 'ckpt_000014.pt', out / 'ckpt_000016.pt')
    assert np.isfinite(losses(out)[14])


@pytest.fixture(scope='module')
def lr_half(tmp):
    """The reference resumed at iteration 12 from a checkpoint that holds a learning rate factor of 0.5."""
    os.makedirs(tmp / 'lr_half')
    torch.save({**ckpt(tmp / 'ref' / 'ckpt_000012.pt'), 'lr_factor': 0.5}, tmp / 'lr_half' / 'ckpt.pt')
    p = train(*ARGS, '--out_dir=lr_half', '--max_iters=20', '--init_from=resume', cwd=tmp)
    assert 'resuming from lr_half/ckpt.pt at iteration 12' in p.stdout and 'learning rate x0.5 after NaN' in p.stdout
    return tmp / 'lr_half'


ROLLBACK = ['--max_iters=20', '--init_from=resume', '--max_bad_steps=2', '--nan_rollback=1']


def test_nan_rollback_reloads_the_checkpoint_with_a_lower_learning_rate(tmp, lr_half):
    # NaN at 15 and 16, 2 in a row: back to ckpt.pt of 12 (the eval of 16, amid the skipped steps, does not
    # overwrite it) with the learning rate x0.5; the test hook gives each NaN once, so 15 and 16 then train
    out = from_ref(tmp, 'rollback')
    p = train(*ARGS, '--out_dir=rollback', *ROLLBACK, cwd=tmp, env={'TRAIN_NAN_ITERS': '15,16'})
    assert 'iter 16: 2 non-finite steps in a row: rolled back to rollback/ckpt.pt (iteration 12), learning rate ' \
           'now x0.5 (rollback 1 of 1)' in p.stdout, p.stdout
    records = [r for r in map(json.loads, open(out / 'log.jsonl')) if 'rollback' in r]
    assert records == [{'iter': 16, 'rollback_to': 12, 'lr_factor': 0.5, 'rollback': 1}]
    # from there exactly the run resumed with the lowered learning rate, which the checkpoints keep
    assert same_weights(lr_half / 'ckpt.pt', out / 'ckpt.pt') and ckpt(out / 'ckpt.pt')['lr_factor'] == 0.5
    assert losses(out) == losses(lr_half) and sorted(losses(out)) == list(range(13, 21))
    # another streak after the last rollback allowed stops the run, as without rollbacks
    from_ref(tmp, 'rollback2')
    p = train(*ARGS, '--out_dir=rollback2', *ROLLBACK, cwd=tmp, check=False, env={'TRAIN_NAN_ITERS': '15,16,18,19'})
    assert p.returncode == 1 and 'Traceback' not in p.stderr, p.stderr
    assert 'error: 2 steps in a row had a non-finite loss or gradient (iterations 18 to 19' in p.stderr
    assert 'rolled back 1 of --nan_rollback=1 times' in p.stderr


def test_fsdp_nan_rollback(tmp, fsdp_run, lr_half):
    # the same under FSDP (the weights and optimizer state go back into the shards): within 1e-5 of one process
    os.makedirs(tmp / 'fsdp_rollback')
    shutil.copy(tmp / 'fsdp' / 'ckpt_000012.pt', tmp / 'fsdp_rollback' / 'ckpt.pt')
    p = train(*ARGS, '--out_dir=fsdp_rollback', *ROLLBACK, '--fsdp', cwd=tmp, nproc=2,
              env={'TRAIN_NAN_ITERS': '15,16'})
    assert 'rolled back to fsdp_rollback/ckpt.pt (iteration 12), learning rate now x0.5' in p.stdout
    one, two = losses(lr_half), losses(tmp / 'fsdp_rollback')
    assert one.keys() == two.keys() and max(abs(one[i] - two[i]) for i in one) < 1e-5
    a, b = ckpt(lr_half / 'ckpt.pt'), ckpt(tmp / 'fsdp_rollback' / 'ckpt.pt')
    assert b['lr_factor'] == 0.5 and all(torch.allclose(a['model'][k], b['model'][k], atol=1e-5) for k in a['model'])


# ---------------------------------------------------------------------------- Muon
def test_muon_matches_torch_muon_and_adamw():
    """optim.py's Muon against torch: its Muon groups as torch.optim.Muon (adjust_lr_fn='match_rms_adamw') up to torch's
    bfloat16 Newton-Schulz, its AdamW groups as torch.optim.AdamW; the groups it makes hold each parameter once."""
    from model_llama import Llama, LlamaConfig
    from model_rwkv7 import RWKV7, RWKV7Config
    from optim import MuonAdamW, muon_groups
    torch.manual_seed(0)
    start = [torch.randn(32, 48), torch.randn(48, 32), torch.randn(48), torch.randn(5, 7)]
    a, b = ([p.clone().requires_grad_() for p in start] for _ in range(2))
    mine = MuonAdamW([{'params': a[:2], 'muon': True}, {'params': a[2:], 'weight_decay': 0.0}], lr=1e-2,
                     betas=(0.9, 0.99), weight_decay=0.1)
    ref = [torch.optim.Muon(b[:2], lr=1e-2, weight_decay=0.1, adjust_lr_fn='match_rms_adamw'),
           torch.optim.AdamW(b[2:], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0)]
    for _ in range(5):
        for p, q in zip(a, b):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        mine.step()
        [o.step() for o in ref]
    for i, (p, q, p0) in enumerate(zip(a, b, start)):
        err = ((p - q).norm() / (q - p0).norm()).item()
        assert err < (0.02 if i < 2 else 1e-6), (i, err)  # 0.008 measured for the Muon pair
    with pytest.raises(ValueError, match='2-D'):
        MuonAdamW([{'params': [torch.zeros(3, requires_grad=True)], 'muon': True}], lr=1e-3)
    for model, per_block in ((Llama(LlamaConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_kv_head=1,
                                                n_embd=32)), 7),
                             (RWKV7(RWKV7Config(vocab_size=64, n_layer=2, n_embd=32, head_size=8, d_decay=8, d_aaa=8,
                                                d_mv=8)), 6)):
        groups = muon_groups(model, model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups)
        listed = [p for g in groups for p in g['params']]
        assert groups[0]['muon'] and len(groups[0]['params']) == per_block * 2 and groups[0]['weight_decay'] == 0.1
        assert len(listed) == len({id(p) for p in listed}) == len(list(model.parameters()))
        assert all(p.dim() == 2 for p in groups[0]['params']) and not any(g.get('muon') for g in groups[1:])
        mlp = muon_groups(model, model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups,
                          ['*.mlp.*', '*.ffn.*'])
        assert len(mlp[0]['params']) == (3 if per_block == 7 else 2) * 2
        with pytest.raises(ValueError, match=r"muon_targets \['mpl'\] match none of the blocks' linear layers"):
            muon_groups(model, model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups, ['mpl'])


def test_muon_run_learns_and_resumes_exactly(tmp):
    train(*ARGS, '--optim=muon', '--out_dir=muon', '--max_iters=20', cwd=tmp)
    train(*ARGS, '--optim=muon', '--out_dir=muon_resume', '--max_iters=12', cwd=tmp)
    train(*ARGS, '--optim=muon', '--out_dir=muon_resume', '--max_iters=20', '--init_from=resume', cwd=tmp)
    full, resumed = losses(tmp / 'muon'), losses(tmp / 'muon_resume')
    assert full[20] == resumed[20] and full[20] < 0.8 * full[1], (full[1], full[20])
    assert same_weights(tmp / 'muon' / 'ckpt.pt', tmp / 'muon_resume' / 'ckpt.pt')
    assert ckpt(tmp / 'muon' / 'ckpt.pt')['optimizer']['param_groups'][0]['muon']
    p = train(*ARGS, '--optim=muon', '--out_dir=muon', '--max_iters=24', '--init_from=resume', '--muon_targets=*.mlp.*',
              cwd=tmp, check=False)
    assert p.returncode == 1 and "muon/ckpt.pt was trained with muon_targets='': resume with it" in p.stderr, p.stderr


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux)')
def test_full_disk_keeps_the_previous_checkpoint(tmp):
    # the temp file is a link to /dev/full, where every write fails with ENOSPC: a real "no space left on device"
    out = from_ref(tmp, 'full')
    before = (out / 'ckpt.pt').read_bytes()
    os.symlink('/dev/full', out / 'ckpt.pt.tmp')
    p = train(*ARGS, '--out_dir=full', '--max_iters=20', '--init_from=resume', cwd=tmp, check=False)
    assert p.returncode == 1 and 'Traceback' not in p.stderr, p.stderr
    assert 'error: the disk is full while saving full/ckpt.pt ([Errno 28] No space left on device)' in p.stderr
    assert 'the previous full/ckpt.pt (iteration 12) is kept as it was' in p.stderr
    assert (out / 'ckpt.pt').read_bytes() == before and not os.path.lexists(out / 'ckpt.pt.tmp')


# ---------------------------------------------------------------------------- bad input: a clear error, nothing changed
# conftest.bad_input_results runs every case as __main__ in one helper process (torch imported once), so the case
# of the forward that runs out of memory, and those without bitsandbytes, need no GPU and no uninstall.
NO_BNB = {'hide': ['bitsandbytes']}
DDP2 = {'env': {'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '2'}}
# (what is wrong, the arguments after ARGS, a piece of the message, options)
BAD_INPUTS = [
    ('unknown config key', ['--lerning_rate=1'], "unknown config key 'lerning_rate'. Did you mean: learning_rate?",
     {}),
    ('value of the wrong type', ['--batch_size=abc'], "config key 'batch_size' expects int", {}),
    ('None for a number', ['--batch_size=None'], "config key 'batch_size' expects int (default 4), got NoneType None",
     {}),
    ('--key without a value', ['--batch_size'], "malformed argument '--batch_size': use --key=value", {}),
    ('missing config file', ['config/nope.py'], "config file 'config/nope.py' not found", {}),
    ('config file that fails to run', ['broken.py'], "config file 'broken.py' failed to run: NameError", {}),
    ('unknown dtype', ['--dtype=fp8'], "dtype must be auto, float32, bfloat16 or float16, not 'fp8'", {}),
    ('unknown model_type', ['--model_type=gpt'], "model_type must be 'llama' or 'rwkv7'", {}),
    ('unknown preset', ['--preset=huge'], "unknown preset 'huge'", {}),
    ('batch_size 0', ['--batch_size=0'], "batch_size must be at least 1, got 0", {}),
    ('max_bad_steps 0', ['--max_bad_steps=0'], "max_bad_steps must be at least 1, got 0", {}),
    ('keep_last negative', ['--keep_last=-1'], "keep_last must be 0 (off) or more, got -1", {}),
    ('out_dir is a file', ['--out_dir=input.txt'], "out_dir 'input.txt' is a file, not a folder", {}),
    ('missing data folder', ['--data_dir=nowhere'], "no prepared data in 'nowhere'", {}),
    ('data folder without meta.json', ['--data_dir=d_empty'], "no prepared data in 'd_empty'", {}),
    ('corrupt meta.json', ['--data_dir=d_meta'], "d_meta/meta.json is corrupt", {}),
    ('no shards', ['--data_dir=d_noshards'], "no train_*.bin shards in 'd_noshards'", {}),
    ('empty dataset (shards shorter than a row)', ['--data_dir=d_short'],
     "the train split of d_short has no shard of at least block_size + 1 = 33 tokens", {}),
    ('shard with a wrong magic number', ['--data_dir=d_magic'], "d_magic/train_000.bin is not a token shard", {}),
    ('shard shorter than its header', ['--data_dir=d_header'],
     "shard d_header/train_000.bin is truncated (100 bytes, shorter than the 1024-byte header)", {}),
    ('shard shorter than its header says', ['--data_dir=d_cut'], "shard d_cut/train_000.bin is truncated: header says",
     {}),
    ('token ids >= vocab_size', ['--data_dir=d_ids'],
     "shard d_ids/train_000.bin has token id 1000 >= the model's vocab_size 320", {}),
    ('vocab_size below the tokenizer', ['--vocab_size=100'], "vocab_size 100 is smaller than the tokenizer's", {}),
    ('init_from a missing folder', ['--init_from=nowhere'], "init_from must be 'scratch', 'resume'", {}),
    ('resume without a checkpoint', ['--init_from=resume', '--out_dir=empty_run'],
     "init_from='resume' but empty_run/ckpt.pt does not exist", {}),
    ('resume a damaged checkpoint', ['--init_from=resume', '--out_dir=damaged'],
     "cannot read damaged/ckpt.pt", {}),
    ('resume a file that is no checkpoint', ['--init_from=resume', '--out_dir=foreign'],
     "foreign/ckpt.pt is not a train.py checkpoint", {}),
    ('resume a checkpoint of another model type', ['--init_from=resume', '--out_dir=other_type'],
     "other_type/ckpt.pt holds a 'rwkv7' model, not 'llama'", {}),
    ('resume a checkpoint of another tokenizer', ['--init_from=resume', '--out_dir=other_tok'],
     "other_tok/ckpt.pt was trained with tokenizer 'gpt2', but d holds data tokenized with 'byte'", {}),
    ('fine-tune a run of another model type', ['--init_from=other_type', '--out_dir=new'],
     "other_type/ckpt.pt is a 'rwkv7' model with tokenizer 'byte'", {}),
    ('block_size beyond a pretrained model', ['--init_from=ref', '--block_size=64', '--out_dir=new'],
     "block_size 64 is longer than the model's context of 32 tokens: set --block_size=32 or less", {}),
    ('block_size beyond the resumed model', ['--init_from=resume', '--out_dir=ref', '--block_size=64'],
     "block_size 64 is longer than the model's context of 32 tokens", {}),
    ('LoRA on a full run resumed', ['--init_from=resume', '--out_dir=ref', '--lora_r=4'],
     "ref/ckpt.pt is a full-training checkpoint", {}),
    ('RWKV checkpoint for a llama', ['--init_from=rwkv:x.pth'], "set --model_type=rwkv7", {}),
    ('missing RWKV checkpoint', ['--model_type=rwkv7', '--init_from=rwkv:missing.pth'], "cannot load missing.pth",
     {}),
    ('Muon on LoRA adapters', ['--optim=muon', '--lora_r=4'], "optim='muon' trains full weight matrices without "
     "FSDP: use --optim=adamw with --lora_r", {}),
    ('qlora without lora_r', ['--qlora'], "qlora=True quantizes the frozen base under LoRA adapters: set lora_r", {}),
    ('QLoRA without bitsandbytes', ['--lora_r=4', '--qlora', '--out_dir=new'],
     "need bitsandbytes: pip install bitsandbytes", NO_BNB),
    ('8-bit AdamW without bitsandbytes', ['--optim=adamw8bit', '--out_dir=new'],
     "need bitsandbytes: pip install bitsandbytes", NO_BNB),
    ('CUDA out of memory (raised by the forward)', ['--out_dir=oom'],
     "out of memory on cpu (CUDA out of memory. Tried to allocate 20.00 GiB). Lower the memory a step needs with: "
     "--batch_size (now 4; halve it and double --gradient_accumulation_steps, now 2, to keep the tokens per step), "
     "--block_size (now 32), --grad_checkpoint=True (now False), --dtype=bfloat16 (now float32), or fine-tune "
     "adapters only: --lora_r=16 (now 0) with --qlora=True (now False) and --optim=adamw8bit",
     {'oom': True}),  # the folder it made is removed again
    ('DDP: accumulation not divisible by the processes', ['--gradient_accumulation_steps=3'],
     "gradient_accumulation_steps (3) must be a multiple of the number of processes (2)", DDP2),
    ('FSDP without torchrun', ['--fsdp'], "fsdp=True shards the model across the processes of torchrun", {}),
    ('FSDP with LoRA', ['--fsdp', '--lora_r=4'], "fsdp=True is for full fine-tuning", DDP2),
    ('FSDP in float16', ['--fsdp', '--dtype=float16'], "fsdp=True trains in bfloat16 or float32, not float16", DDP2),
    ('NaN rollback factor out of range', ['--nan_rollback=2', '--nan_lr_factor=0'], "0 < nan_lr_factor <= 1", {}),
    ('a new run over another run', ['--out_dir=ref'], "out_dir 'ref' already holds a run (ckpt.pt and best.pt): "
     "continue it with --init_from=resume, write the new run to another --out_dir, or replace it with "
     "--overwrite=True", {}),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(('CUDA asked for, absent', ['--device=cuda'],
                       "device 'cuda' asked for, but CUDA is not available here: use --device=cpu", {}))


def make_bad_inputs(tmp):
    """The broken data folders and runs the table refers to, made once beside d and ref."""
    meta = (tmp / 'd' / 'meta.json').read_text()
    for name in ('d_empty', 'd_meta', 'd_noshards', 'd_short', 'd_magic', 'd_header', 'd_cut', 'd_ids'):
        os.makedirs(tmp / name)
        if name not in ('d_empty', 'd_meta'):
            (tmp / name / 'meta.json').write_text(meta)
        if name not in ('d_empty', 'd_meta', 'd_noshards', 'd_short'):
            for split in ('train', 'val'):
                shutil.copy(tmp / 'd' / f'{split}_000.bin', tmp / name / f'{split}_000.bin')
    (tmp / 'd_meta' / 'meta.json').write_text(meta[:20])
    for split in ('train', 'val'):
        write_shard(str(tmp / 'd_short' / f'{split}_000.bin'), np.arange(10), 262)
    shard = tmp / 'd_magic' / 'train_000.bin'
    shard.write_bytes(b'\0\0\0\0' + shard.read_bytes()[4:])
    shard = tmp / 'd_header' / 'train_000.bin'
    shard.write_bytes(shard.read_bytes()[:100])
    shard = tmp / 'd_cut' / 'train_000.bin'
    shard.write_bytes(shard.read_bytes()[:-100])
    write_shard(str(tmp / 'd_ids' / 'train_000.bin'), np.r_[np.arange(200), 1000], 2000)
    (tmp / 'broken.py').write_text('batch_size = undefined_name\n')
    good = ckpt(tmp / 'ref' / 'ckpt.pt')
    for name in ('empty_run', 'damaged', 'foreign', 'other_type', 'other_tok'):
        os.makedirs(tmp / name)
    (tmp / 'damaged' / 'ckpt.pt').write_bytes((tmp / 'ref' / 'ckpt.pt').read_bytes()[:5000])
    torch.save([1, 2, 3], tmp / 'foreign' / 'ckpt.pt')
    torch.save({**good, 'model_type': 'rwkv7'}, tmp / 'other_type' / 'ckpt.pt')
    torch.save({**good, 'tokenizer': {'spec': 'gpt2', 'blob': None}}, tmp / 'other_tok' / 'ckpt.pt')


def test_bad_inputs_get_a_clear_error_and_change_nothing(tmp):
    make_bad_inputs(tmp)
    cases = [dict(script='train.py', argv=[*ARGS, *argv], **opts) for _, argv, _, opts in BAD_INPUTS]
    results = bad_input_results(cases, tmp, timeout=300)
    table = []
    for (what, argv, message, _), r in zip(BAD_INPUTS, results):
        assert r['exception'] in (None, 'OutOfMemoryError') and r['code'] == 1, (what, r)
        assert r['stderr'].startswith('train.py: error: ') and r['stderr'].count('\n') == 1, (what, r['stderr'])
        assert message in r['stderr'], (what, message, r['stderr'])
        assert r['changed'] == [], (what, r['changed'])
        table.append(f"| {what} | `{' '.join(argv)}` | {r['stderr'][len('train.py: error: '):].strip()} |")
    print('\n'.join(table))

