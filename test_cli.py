"""
Tests of what the scripts do on the command line, whatever the machine: which checkpoint --ckpt names, the threads
key and the first line that reports it, the hours a GPU-sized run would take on a CPU, prompts longer than the
context, and the defaults of sample.py and bench.py.

    python -m pytest test_cli.py -q

A tiny byte-level Llama trained for a few iterations on generated text; no network, no ../shared.
"""

import os
import re
import subprocess

import pytest

import chat
import conftest
from conftest import ONE_THREAD, ROOT, corpus, prepare_byte_data
from checkpoint import find_checkpoint
from tokenizer import get_tokenizer

TEXT = corpus(300)


def run(script, *args, cwd, check=True):
    """conftest.run on one thread."""
    return conftest.run(script, *args, cwd=cwd, check=check, env=ONE_THREAD)


@pytest.fixture(scope='module')
def tmp(tmp_path_factory):
    """A folder with byte data in d/ and a 4-iteration run in run/ (block_size 128: room for a chat prompt)."""
    tmp = prepare_byte_data(tmp_path_factory.mktemp('cli'), TEXT, env=ONE_THREAD)
    p = run('train.py', '--data_dir=d', '--out_dir=run', '--block_size=128', '--batch_size=2', '--n_layer=1',
            '--n_head=2', '--n_kv_head=1', '--n_embd=16', '--max_iters=4', '--eval_interval=2', '--eval_iters=1',
            '--warmup_iters=1', '--lr_decay_iters=4', '--device=cpu', '--threads=1', cwd=tmp)
    (tmp / 'train_stdout.txt').write_text(p.stdout)
    return tmp


def test_find_checkpoint_rule(tmp_path):
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'ckpt.pt').write_bytes(b'x')
    (tmp_path / 'other.pt').write_bytes(b'x')
    run_dir, here = str(tmp_path / 'run'), str(tmp_path / 'other.pt')
    assert find_checkpoint(run_dir) == os.path.join(run_dir, 'ckpt.pt')  # no best.pt yet
    (tmp_path / 'run' / 'best.pt').write_bytes(b'x')
    assert find_checkpoint(run_dir) == os.path.join(run_dir, 'best.pt')
    assert find_checkpoint(run_dir, 'ckpt.pt') == os.path.join(run_dir, 'ckpt.pt')  # a bare name: in out_dir
    assert find_checkpoint('out', here) == here  # a path to a file: that file, whatever out_dir
    assert find_checkpoint(str(tmp_path), 'run/ckpt.pt') == os.path.join(str(tmp_path), 'run/ckpt.pt')
    assert find_checkpoint('', 'hf:some/model') == 'hf:some/model'
    with pytest.raises(FileNotFoundError, match=r"no checkpoint nowhere/ckpt.pt: train first"):
        find_checkpoint('nowhere')
    with pytest.raises(FileNotFoundError, match=r"no checkpoint run/x.pt \(nor out/run/x.pt\)"):
        find_checkpoint('out', 'run/x.pt')


def test_ckpt_paths_in_sample_and_bench(tmp):
    # sample.py --ckpt=run/best.pt looks in the working directory (out_dir 'out' does not exist); bench.py takes an
    # absolute path without --out_dir; a bare name is looked up in --out_dir
    p = run('sample.py', '--ckpt=run/ckpt.pt', '--start=Line', '--max_new_tokens=5', '--num_samples=1', cwd=tmp)
    assert 'loaded run/ckpt.pt (iteration 4' in p.stderr
    p = run('bench.py', '--task=perplexity', f'--ckpt={tmp / "run" / "ckpt.pt"}', '--data=input.txt', '--limit=2',
            cwd=tmp)
    assert f'perplexity of {tmp / "run" / "ckpt.pt"}' in p.stdout
    p = run('sample.py', '--out_dir=run', '--ckpt=ckpt.pt', '--max_new_tokens=5', '--num_samples=1', cwd=tmp)
    assert 'loaded run/ckpt.pt' in p.stderr


def test_threads_key_and_first_line(tmp):
    first = (tmp / 'train_stdout.txt').read_text().splitlines()[0]
    assert first.startswith('train.py: 1 threads; config (what differs from the defaults): {"out_dir": "run", ')
    assert '"threads": 1}' in first and '"dropout"' not in first  # not the whole config
    p = run('sample.py', '--out_dir=run', '--threads=1', '--max_new_tokens=3', '--num_samples=1', cwd=tmp)
    assert p.stderr.splitlines()[0] == 'sample.py: 1 threads, device cpu'
    p = run('bench.py', '--task=perplexity', '--out_dir=run', '--data=input.txt', '--limit=1', cwd=tmp)
    assert re.fullmatch(r'bench.py: [1-9]\d* threads, device cpu', p.stderr.splitlines()[0])  # PyTorch's default
    p = run('sample.py', '--out_dir=run', '--threads=-1', cwd=tmp, check=False)
    assert p.returncode == 1 and 'threads must be 0' in p.stderr and 'Traceback' not in p.stderr



def test_a_gpu_sized_run_on_a_cpu_says_how_long_it_takes(tmp):
    assert 'GPU-sized' not in (tmp / 'train_stdout.txt').read_text()  # 4 iterations: nothing to say
    proc = subprocess.Popen(conftest.command('train.py', '--data_dir=d', '--out_dir=long', '--block_size=128',
                                             '--batch_size=2', '--n_layer=1', '--n_head=2', '--n_kv_head=1',
                                             '--n_embd=16', '--max_iters=100000000', '--eval_iters=1', '--threads=1',
                                             '--device=cpu'), cwd=tmp, stdout=subprocess.PIPE, text=True)
    try:
        line = next((s for s in proc.stdout if s.startswith(('on this CPU', 'iter '))), '')
    finally:
        proc.kill()
        proc.wait()
    assert re.fullmatch(r"on this CPU the run takes ~[\d.]+ hours \([\d.]+ s a micro-batch of 2 x 128\): a GPU-sized "
                        r"run; config/reasoning_llama.py is sized for a CPU \(~15 minutes\)\n", line), line

def test_fit_prompt_keeps_the_system_prompt_and_the_latest_question():
    tok = get_tokenizer('byte')
    history = [{'role': 'user', 'content': 'a' * 50}, {'role': 'assistant', 'content': 'b' * 50}]
    ids, note = chat.fit_prompt(tok, 'q' * 40, 1000, 'S', history)
    assert ids == chat.prompt(tok, 'q' * 40, 'S', history) and not note
    ids, note = chat.fit_prompt(tok, 'q' * 40, 100, 'S', history)  # the old exchange goes
    assert ids == chat.prompt(tok, 'q' * 40, 'S') and 'oldest exchange' in note
    ids, note = chat.fit_prompt(tok, 'the start ' + 'q' * 80, 60, 'S', history)  # then the question's start
    text = tok.decode(ids)
    assert len(ids) == 60 and 'question cut' in note and 'earlier exchange' in note
    assert text.startswith('<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n')
    assert text.endswith('q' * 20 + '<|im_end|>\n<|im_start|>assistant\n') and 'the start' not in text


def test_long_prompts_say_what_they_cut(tmp):
    question = 'Tell me ' + 'about the fox ' * 20 + 'now?'
    p = run('sample.py', '--out_dir=run', '--mode=reasoning', f'--start={question}', '--max_new_tokens=8',
            '--system_prompt=Be brief.', '--temperature=0', cwd=tmp)
    assert "the question cut from 292 to its last" in p.stderr and 'Final answer:' in p.stdout
    p = run('sample.py', '--out_dir=run', f'--start={question}', '--max_new_tokens=8', '--temperature=0', cwd=tmp)
    assert "the prompt's 292 tokens cut to their last 120" in p.stderr
    assert p.stdout.count('---------------') == 1  # greedy: one sample, not num_samples=2 copies of it


def test_defaults_and_small_errors(tmp):
    p = run('bench.py', '--out_dir=run', '--limit=2', '--max_new_tokens=4', cwd=tmp)  # the default task: gsm_synth
    assert 'gsm_synth generalization' in p.stdout and '| in-distribution |' in p.stdout and ' / 2 |' in p.stdout
    p = run('bench_perf.py', '--task=wkv', cwd=tmp, check=False)
    assert p.returncode == 1 and p.stderr.strip() == ("bench_perf.py: error: this file holds bench.py's performance "
                                                      "tasks; run them with python bench.py --task=wkv")
    p = run('train.py', os.path.join(ROOT, 'config', 'reasoning_rwkv.py'), '--device=cpu', cwd=tmp, check=False)
    assert p.returncode == 1 and 'python prepare.py --dataset=gsm_synth --tokenizer=sp:1024' in p.stderr
    assert not os.path.exists(tmp / 'out-reasoning-rwkv')


@pytest.mark.parametrize('script', ['train.py', 'sample.py', 'bench.py', 'prepare.py'])
def test_help_lists_every_key_with_its_default_and_comment(script, tmp_path):
    import configurator
    p = run(script, '--help', cwd=tmp_path)
    assert p.returncode == 0 and not os.listdir(tmp_path) and f'usage: python {script} ' in p.stdout
    g = {'__file__': os.path.join(ROOT, script)}
    src = open(g['__file__']).read()
    banner = '# ' + '-' * 77  # the config globals end at the second banner
    exec(compile(src[:src.index(banner, src.index(banner) + 1)], script, 'exec'), g)
    keys = configurator.config_keys(g)
    assert len(keys) > 8 and all(f"  --{k}={g[k]!r}" in p.stdout for k in keys)
    line = {'train.py': "--learning_rate=0.0006", 'sample.py': "--temperature=0.8", 'bench.py': "--limit=0",
            'prepare.py': "--val_fraction=0.1"}[script]
    assert re.search(re.escape(line) + r' +\S', p.stdout)  # with its comment
