"""
Bad input: every case of prepare.py, sample.py and bench.py below (train.py's table is in test_train.py) must exit
with status 1 and one '<script>: error: ...' line on stderr, without a traceback and without changing any file;
configurator's and shards.py's errors (and random --key=value lists at configurator: no traceback, types kept); a
vocabulary above 65,536 ids (uint32 shards); and a property test that throws random bytes (as .txt/.jsonl/.json
data) and random --key=value lists at prepare.py: never a traceback, never a hang.
python -m pytest test_errors.py  (CPU, ~30 s)
"""

import dataclasses
import io
import json
import os
import runpy
import signal
import sys

import numpy as np
import pytest
import torch

import configurator
from conftest import OFFLINE, ROOT, bad_input_results, run
from model_llama import Llama, LlamaConfig
from shards import DataError, load_split, read_shard, write_shard
from tokenizer import get_tokenizer


# ---------------------------------------------------------------------------- configurator
def make_globals():
    return {'learning_rate': 6e-4, 'batch_size': 12, 'compile': False, 'out_dir': 'out', 'wandb_run_name': None}


def test_config_overrides_and_types():
    g = make_globals()
    cfg = configurator.configure(g, ['--learning_rate=1', '--batch_size=32', '--compile=True', '--out_dir=x/y',
                                     '--wandb_run_name=run1'], verbose=False)
    assert g['learning_rate'] == 1.0 and isinstance(g['learning_rate'], float)
    assert g['batch_size'] == 32 and g['compile'] is True and g['out_dir'] == 'x/y' and g['wandb_run_name'] == 'run1'
    assert cfg == {k: g[k] for k in make_globals()}
    configurator.configure(g, ['--compile=false'], verbose=False)
    assert g['compile'] is False


def test_config_errors():
    with pytest.raises(configurator.ConfigError, match="unknown config key 'learning_rte'.*learning_rate"):
        configurator.configure(make_globals(), ['--learning_rte=1e-3'], verbose=False)
    with pytest.raises(configurator.ConfigError, match="'batch_size' expects int.*got float"):
        configurator.configure(make_globals(), ['--batch_size=1.5'], verbose=False)
    with pytest.raises(configurator.ConfigError, match="'compile' expects bool"):
        configurator.configure(make_globals(), ['--compile=1'], verbose=False)
    with pytest.raises(configurator.ConfigError, match="--key=value"):
        configurator.configure(make_globals(), ['--batch_size'], verbose=False)
    with pytest.raises(configurator.ConfigError, match="not found"):
        configurator.configure(make_globals(), ['config/does_not_exist.py'], verbose=False)


def test_config_file(tmp_path):
    good, bad = tmp_path / 'good.py', tmp_path / 'bad.py'
    good.write_text("import math\nlearning_rate = 3e-4\nbatch_size = 2 ** 3\n")
    bad.write_text("batch_sise = 8\n")
    g = make_globals()
    configurator.configure(g, [str(good), '--batch_size=4'], verbose=False)
    assert g['learning_rate'] == 3e-4 and g['batch_size'] == 4  # later arguments win
    with pytest.raises(configurator.ConfigError, match="'batch_sise'.*batch_size"):
        configurator.configure(make_globals(), [str(bad)], verbose=False)


# ---------------------------------------------------------------------------- shards
def test_shard_round_trip_and_errors(tmp_path):
    p = str(tmp_path / 'train_000.bin')
    toks = np.random.default_rng(0).integers(0, 50000, 1000)
    write_shard(p, toks, 50304)
    assert read_shard(p).dtype == np.uint16 and np.array_equal(read_shard(p), toks)
    big = np.array([0, 151935, 70000])
    write_shard(p, big, 151936)  # Qwen-sized vocabulary -> uint32, version 2
    assert read_shard(p).dtype == np.uint32 and np.array_equal(read_shard(p), big)
    with pytest.raises(DataError, match='token ids must be in'):
        write_shard(p, [5, 300], 262)
    write_shard(p, toks, 50304)
    raw = open(p, 'rb').read()
    open(p, 'wb').write(raw[:-10])
    with pytest.raises(DataError, match='truncated'):
        read_shard(p)
    open(p, 'wb').write(raw[:100])
    with pytest.raises(DataError, match='truncated'):
        read_shard(p)
    open(p, 'wb').write(b'\x00' * 4 + raw[4:])
    with pytest.raises(DataError, match='not a token shard'):
        read_shard(p)
    open(p, 'wb').write(raw[:4] + (9).to_bytes(4, 'little') + raw[8:])
    with pytest.raises(DataError, match='unknown version'):
        read_shard(p)
    open(p, 'wb').write(raw)
    with pytest.raises(DataError, match="token id .* >= the model's vocab_size 1000"):
        load_split(str(tmp_path), 'train', vocab_size=1000)
    with pytest.raises(DataError, match='no val_'):
        load_split(str(tmp_path), 'val')


# ---------------------------------------------------------------------------- the scripts' bad input
# conftest.bad_input_results runs every case in one helper process (torch imported once), each stopped after
# 60 s as a hang, and compares the files under the test's folder before and after each case.
PREPARE = ['--tokenizer=byte', '--num_proc=1', '--dataset=ok.txt', '--data_dir=out_p']
SAMPLE = ['--device=cpu', '--out_dir=run', '--max_new_tokens=4', '--num_samples=1']
Q = ['--device=cpu', '--task=gsm8k', '--out_dir=run', '--data=good_q.jsonl', '--max_new_tokens=4']


# (script, what is wrong, the arguments after the script's base ones, a piece of the message, options)
CASES = [
    ('prepare.py', 'unknown config key', ['--datset=ok.txt'], "unknown config key 'datset'. Did you mean: dataset?",
     {}),
    ('prepare.py', 'value of the wrong type', ['--val_fraction=abc'], "config key 'val_fraction' expects float", {}),
    ('prepare.py', '--key without a value', ['--dataset'], "malformed argument '--dataset': use --key=value", {}),
    ('prepare.py', 'unknown dataset', ['--dataset=nothing_here'], "dataset 'nothing_here' is not a recipe", {}),
    ('prepare.py', 'missing file', ['--dataset=missing.txt'], "--dataset 'missing.txt' not found: a local", {}),
    ('prepare.py', 'missing file in a folder (no hub lookup)', ['--dataset=sub/missing.jsonl'],
     "--dataset 'sub/missing.jsonl' not found", {}),
    ('prepare.py', 'missing --source of a recipe', ['--dataset=shakespeare', '--source=missing.txt'],
     "--source 'missing.txt' not found", {}),
    ('prepare.py', 'a recipe to download, offline', ['--dataset=shakespeare', '--data_dir=data/sh'],
     "). Offline? Pass a local copy: --source=path/to/file", {'env': OFFLINE}),
    ('prepare.py', 'folder without data files', ['--dataset=emptydir'], "folder 'emptydir' has no", {}),
    ('prepare.py', 'file of another kind', ['--dataset=foo.csv'], "cannot read 'foo.csv': use a .txt/", {}),
    ('prepare.py', '.tsv without --format=chat', ['--dataset=qa.tsv'], "a .tsv file holds chat data (question, "
     "answer, rationale columns): add --format=chat", {}),
    ('prepare.py', 'non-UTF-8 .txt', ['--dataset=latin.txt'], "latin.txt is not UTF-8 text", {}),
    ('prepare.py', 'non-UTF-8 .jsonl', ['--dataset=latin.jsonl'], "latin.jsonl is not UTF-8 text", {}),
    ('prepare.py', 'non-UTF-8 .json', ['--dataset=latin.json'], "latin.json is not UTF-8 text", {}),
    ('prepare.py', 'non-UTF-8 chat data', ['--dataset=latin.jsonl', '--format=chat'], "latin.jsonl is not UTF-8",
     {}),
    ('prepare.py', 'empty text file', ['--dataset=empty.txt'], "empty.txt is empty: there is no text to prepare", {}),
    ('prepare.py', 'empty dataset', ['--dataset=empty.jsonl'], "dataset 'empty.jsonl' gave no training text", {}),
    ('prepare.py', 'malformed jsonl line', ['--dataset=broken.jsonl'], "broken.jsonl:2: malformed JSON", {}),
    ('prepare.py', 'record that is no object', ['--dataset=list.jsonl'],
     "list.jsonl:1: no 'text' field (has list); set --text_field", {}),
    ('prepare.py', 'missing text field', ['--dataset=stories.jsonl', '--text_field=body'], "no 'body' field", {}),
    ('prepare.py', 'corrupt parquet', ['--dataset=bad.parquet'], "bad.parquet is not a readable parquet file", {}),
    ('prepare.py', 'malformed chat record', ['--dataset=list.jsonl', '--format=chat'],
     "list.jsonl:1: a record must be an object, not list (--skip_bad=True skips such records)", {}),
    ('prepare.py', 'chat recipe with no training examples', ['--dataset=gsm_synth', '--synth_train=0',
                                                             '--synth_val=1', '--synth_test=1'],
     "dataset 'gsm_synth' gave no training examples", {}),
    ('prepare.py', 'unknown format', ['--format=xml'], "format must be 'text' or 'chat', not 'xml'", {}),
    ('prepare.py', 'unknown tokenizer', ['--tokenizer=gpt3'], "unknown tokenizer 'gpt3'", {}),
    ('prepare.py', 'missing SentencePiece model', ['--tokenizer=missing.model'],
     "SentencePiece model file 'missing.model' not found", {}),
    ('prepare.py', 'a file that is no tokenizer', ['--tokenizer=afile'], "cannot load tokenizer 'afile'", {}),
    ('prepare.py', 'sp:N without a number', ['--tokenizer=sp:abc'], "sp:N needs a number of pieces", {}),
    ('prepare.py', 'sp:0', ['--tokenizer=sp:0'], "sp:N needs a number of pieces", {}),
    ('prepare.py', 'sp:N too small for the data', ['--tokenizer=sp:10'],
     "SentencePiece training failed: Vocabulary size is smaller than required_chars", {}),
    ('prepare.py', 'missing RWKV vocabulary', ['--tokenizer=rwkv:missing.txt'],
     "RWKV vocabulary file 'missing.txt' not found", {}),
    ('prepare.py', 'another tokenizer into a prepared folder', ['--data_dir=prepared', '--tokenizer=sp:300'],
     "'prepared' already holds data tokenized with 'byte', not 'sp:300'", {}),
    ('prepare.py', 'data_dir is a file', ['--data_dir=afile'], "data_dir 'afile' is a file, not a folder", {}),
    ('prepare.py', 'corrupt meta.json in data_dir', ['--data_dir=dmeta'], "dmeta/meta.json is corrupt", {}),
    ('prepare.py', 'out-of-range numbers', ['--val_fraction=1.5'], "val_fraction must be in [0, 1), got 1.5", {}),
    ('prepare.py', 'shard_size 0', ['--shard_size=0'], "shard_size must be in [1, 2^31) tokens, got 0", {}),
    ('prepare.py', 'num_proc negative', ['--num_proc=-1'], "num_proc must be 0 or more, got -1", {}),
    ('prepare.py', 'synth steps the wrong way round', ['--synth_min_steps=5', '--synth_max_steps=2'],
     "need 0 <= synth_min_steps <= synth_max_steps, got 5 and 2", {}),
    ('prepare.py', 'synth_train_ops without division', ['--synth_train_ops=+-*'],
     "synth_train_ops '+-*' must hold each of +-*/ (the test mix) and nothing else", {}),

    ('sample.py', 'unknown config key', ['--temprature=0'],
     "unknown config key 'temprature'. Did you mean: temperature", {}),
    ('sample.py', 'missing out_dir', ['--out_dir=nowhere'], "no checkpoint nowhere/ckpt.pt: train first", {}),
    ('sample.py', 'missing checkpoint file', ['--ckpt=missing.pt'], "no checkpoint run/missing.pt", {}),
    ('sample.py', 'missing checkpoint path', ['--ckpt=elsewhere/best.pt'],
     "no checkpoint elsewhere/best.pt (nor run/elsewhere/best.pt): train first", {}),
    ('sample.py', 'negative threads', ['--threads=-1'], "threads must be 0 (PyTorch's default) or more, got -1", {}),
    ('sample.py', 'an official RWKV-7 .pth', ['--ckpt=rwkv:x.pth'], "rwkv:x.pth: an official RWKV-7 .pth is a "
     "starting point for train.py (--init_from=rwkv:x.pth --model_type=rwkv7)", {}),
    ('sample.py', 'a text file as checkpoint', ['--out_dir=notckpt'],
     "cannot read notckpt/ckpt.pt (UnpicklingError: ", {}),
    ('sample.py', 'truncated checkpoint', ['--out_dir=trunc'], "cannot read trunc/ckpt.pt (", {}),
    ('sample.py', 'foreign pickle', ['--out_dir=foreign'], "foreign/ckpt.pt is not a train.py checkpoint", {}),
    ('sample.py', 'checkpoint without model_args', ['--out_dir=nokeys'], "nokeys/ckpt.pt is not a train.py", {}),
    ('sample.py', 'checkpoint of an unknown model', ['--out_dir=gpt'], "gpt/ckpt.pt holds a 'gpt' model", {}),
    ('sample.py', "a LoRA run's ckpt.pt (adapters only)", ['--out_dir=lora'],
     "lora/ckpt.pt holds only the LoRA adapters of a run: sample from its merged best.pt", {}),
    ('sample.py', 'weights that do not fit model_args', ['--out_dir=misfit'],
     "misfit/ckpt.pt does not load into its model (RuntimeError", {}),
    ('sample.py', 'unknown device', ['--device=tpu'], "unknown device 'tpu'", {}),
    ('sample.py', 'unknown mode', ['--mode=poem'], "mode must be generate, reasoning or chat, not 'poem'", {}),
    ('sample.py', 'max_new_tokens 0', ['--max_new_tokens=0'], "max_new_tokens >= 1 (got 0)", {}),
    ('sample.py', 'num_samples 0', ['--num_samples=0'], "num_samples >= 1 (got 0)", {}),
    ('sample.py', 'negative temperature', ['--temperature=-1'], "need temperature >= 0 (got -1.0)", {}),
    ('sample.py', 'top_p 0', ['--top_p=0'], "0 < top_p <= 1 (got 0.0)", {}),
    ('sample.py', 'missing prompt file', ['--start=FILE:missing.txt'], "prompt file 'missing.txt' not found", {}),
    ('sample.py', 'non-UTF-8 prompt file', ['--start=FILE:latin.txt'], "prompt file 'latin.txt' is not UTF-8", {}),
    ('sample.py', 'compile a Llama', ['--compile=True'], "--compile=True compiles RWKV-7's one-token decode step", {}),
    ('sample.py', 'missing pretrained model', ['--ckpt=hf:missing_dir'], "cannot load hf:missing_dir", {}),

    ('bench.py', 'unknown task', ['--task=nope'], "unknown task 'nope'", {}),
    ('bench.py', 'missing out_dir', ['--out_dir=nowhere'], "no checkpoint nowhere/ckpt.pt", {}),
    ('bench.py', 'missing checkpoint path', ['--out_dir=', '--ckpt=/nowhere/best.pt'],
     "no checkpoint /nowhere/best.pt: train first", {}),
    ('bench.py', 'negative threads', ['--threads=-1'], "threads must be 0 (PyTorch's default) or more, got -1", {}),
    ('bench.py', 'missing --data', ['--data=missing.jsonl'], "--data='missing.jsonl' not found", {}),
    ('bench.py', 'malformed jsonl line', ['--data=broken_q.jsonl'], "broken_q.jsonl:2: malformed JSON", {}),
    ('bench.py', 'record without question/answer', ['--data=noq.jsonl'],
     "noq.jsonl:1: a record needs 'question' and 'answer'", {}),
    ('bench.py', 'unknown prompt', ['--prompt=zero'], "prompt must be chat or fewshot (got 'zero')", {}),
    ('bench.py', 'num_samples 0', ['--num_samples=0'], "need num_samples >= 1 (got 0)", {}),
    ('bench.py', 'several greedy samples', ['--num_samples=4'], "temperature > 0 for num_samples > 1", {}),
    ('bench.py', 'batch_size 0', ['--batch_size=0'], "batch_size >= 1", {}),
    ('bench.py', 'custom task without data', ['--task=custom', '--data='], "--task=custom needs --data=", {}),
    ('bench.py', 'missing perplexity text', ['--task=perplexity', '--data=missing.txt'],
     "--data='missing.txt' not found", {}),
    ('bench.py', 'empty perplexity text', ['--task=perplexity', '--data=empty.txt'], "no tokens to count in empty",
     {}),
    ('bench.py', 'missing speed config', ['--task=speed', '--out_dir=', '--config=missing.py'],
     "--config='missing.py' not found", {}),
    ('bench.py', 'curves of a run without a log', ['--task=curves', '--out_dir=nowhere'], "no nowhere/log.jsonl",
     {}),
    ('bench.py', 'unknown WKV implementation', ['--task=wkv', '--impls=fast', '--T=32'],
     "unknown WKV implementation 'fast'", {}),
    ('bench.py', 'distill without data', ['--task=distill', '--data='], "--task=distill needs --data=", {}),
    ('bench.py', 'a text file as checkpoint', ['--out_dir=notckpt'], "notckpt/ckpt.pt", {}),
    ('bench.py', 'truncated checkpoint', ['--out_dir=trunc'], "trunc/ckpt.pt", {}),
    ('bench.py', 'foreign pickle', ['--out_dir=foreign'], "foreign/ckpt.pt", {}),
    ('bench.py', 'checkpoint without model_args', ['--out_dir=nokeys'], "nokeys/ckpt.pt", {}),
    ('bench.py', 'non-UTF-8 --data', ['--data=latin_q.jsonl'], "latin_q.jsonl", {}),
    ('bench.py', 'non-UTF-8 perplexity text', ['--task=perplexity', '--data=latin.txt'], "latin.txt", {}),
    ('bench.py', 'max_new_tokens 0', ['--max_new_tokens=0'], "max_new_tokens", {}),
    ('bench.py', 'negative limit', ['--limit=-1', '--data=two_q.jsonl'], "limit", {}),

    # a few of train.py's errors (the full table is test_train.py's)
    ('train.py', 'unknown config key', ['--lerning_rate=1'], "learning_rate", {}),
    ('train.py', 'missing data folder', ['--data_dir=missing'], "run prepare.py first", {}),
    ('train.py', 'vocab_size below the tokenizer', ['--vocab_size=100'], "smaller than the tokenizer", {}),
    ('train.py', 'resume without a checkpoint', ['--out_dir=none', '--init_from=resume'], "does not exist", {}),
]
if not torch.cuda.is_available():
    CASES += [(script, 'CUDA asked for, absent', ['--device=cuda'], "device 'cuda' asked for, but CUDA is not "
               "available here: use --device=cpu", {}) for script in ('sample.py', 'bench.py')]
BASE = {'prepare.py': PREPARE, 'sample.py': SAMPLE, 'bench.py': Q,
        'train.py': ['--data_dir=d', '--block_size=32', '--batch_size=4', '--n_layer=2', '--n_head=4',
                     '--n_kv_head=2', '--n_embd=32', '--device=cpu']}


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    """The files the cases refer to, then every case run once; {case index: result}."""
    tmp = tmp_path_factory.mktemp('errors')
    files = {'ok.txt': b'hello world\n', 'latin.txt': b'caf\xe9 au lait\n', 'latin.json': b'[{"text": "\xff"}]',
             'latin.jsonl': b'{"text": "a"}\n{"text": "\xff"}\n', 'empty.txt': b'', 'empty.jsonl': b'',
             'bad.parquet': b'not parquet', 'foo.csv': b'a,b\n', 'qa.tsv': b'q\ta\tr\n', 'list.jsonl': b'[1, 2]\n', 'afile': b'x\n',
             'broken.jsonl': b'{"text": "ok"}\n{"text": \n', 'stories.jsonl': b'{"story": "once"}\n',
             'good_q.jsonl': b'{"question": "1 + 1?", "answer": "#### 2"}\n',
             'two_q.jsonl': b'{"question": "1 + 1?", "answer": "#### 2"}\n{"question": "2 + 2?", "answer": "#### 4"}\n',
             'broken_q.jsonl': b'{"question": "q", "answer": "#### 1"}\n{"question": \n',
             'latin_q.jsonl': b'{"question": "caf\xe9", "answer": "#### 1"}\n', 'noq.jsonl': b'{"q": 1}\n',
             'dmeta/meta.json': b'{"tok', 'prepared/meta.json': b'{"tokenizer": "byte"}', 'emptydir/notes.md': b''}
    for name, data in files.items():
        os.makedirs(tmp / os.path.dirname(name), exist_ok=True)
        (tmp / name).write_bytes(data)
    tok = get_tokenizer('byte')  # a prepared folder for train.py and a tiny Llama run for sample.py and bench.py
    os.makedirs(tmp / 'd')
    for split in ('train', 'val'):
        write_shard(str(tmp / 'd' / f'{split}_000.bin'), tok.encode('the quick brown fox ' * 20), tok.vocab_size)
    (tmp / 'd' / 'meta.json').write_text(json.dumps({'tokenizer': 'byte', 'vocab_size': tok.vocab_size,
                                                      'eot_id': tok.eot_id}))
    cfg = LlamaConfig(block_size=64, vocab_size=320, n_layer=1, n_head=2, n_kv_head=1, n_embd=16)
    good = {'model': Llama(cfg).state_dict(), 'model_type': 'llama', 'model_args': dataclasses.asdict(cfg),
            'tokenizer': tok.state(), 'iter_num': 0, 'config': {}}
    runs = {'run': good, 'foreign': [1, 2, 3], 'nokeys': {k: v for k, v in good.items() if k != 'model_args'},
            'gpt': {**good, 'model_type': 'gpt'}, 'lora': {**good, 'lora': {'r': 4}},
            'misfit': {**good, 'model_args': {**good['model_args'], 'n_embd': 32}}}
    for name, ck in runs.items():
        os.makedirs(tmp / name)
        torch.save(ck, tmp / name / 'ckpt.pt')
    os.makedirs(tmp / 'notckpt')
    (tmp / 'notckpt' / 'ckpt.pt').write_text('not a checkpoint\n')
    os.makedirs(tmp / 'trunc')
    (tmp / 'trunc' / 'ckpt.pt').write_bytes((tmp / 'run' / 'ckpt.pt').read_bytes()[:3000])
    cases = [dict(script=s, argv=[*BASE[s], *argv], env=opts.get('env', {})) for s, _, argv, _, opts in CASES]
    return bad_input_results(cases, tmp, timeout=600, hang_s=60)


@pytest.mark.parametrize('i', [pytest.param(i, id=f"{c[0]}: {c[1]}") for i, c in enumerate(CASES)])
def test_bad_input_gets_a_clear_error_and_changes_nothing(results, i):
    script, what, argv, message, _ = CASES[i]
    r = results[i]
    lines = [line for line in r['stderr'].split('\n') if line.strip()]
    assert r['exception'] is None and r['code'] == 1 and 'Traceback' not in r['stderr'], r
    assert lines and lines[-1].startswith(f'{script}: error: '), r['stderr']  # after progress bars, if any
    assert sum(line.count(': error: ') for line in lines) == 1 and message in lines[-1], (message, r['stderr'])
    assert r['changed'] == [], r['changed']
    print(f"| `{script}` | {what} | `{' '.join(argv)}` | {lines[-1][len(script) + 9:]} |")


def test_prepare_vocabulary_above_uint16_writes_uint32(tmp_path):
    # a tokenizer of 70,002 ids (a word-level tokenizer.json): shards of uint32 (version 2) that decode back
    tokenizers = pytest.importorskip('tokenizers')
    vocab = {'[UNK]': 0, '</s>': 1, **{f'w{i}': i + 2 for i in range(69998)}, 'hello': 70000, 'world': 70001}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token='[UNK]'))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / 'big.json'))
    (tmp_path / 'words.txt').write_text('hello world w69997 w5 hello\n' * 50)
    run('prepare.py', '--dataset=words.txt', '--tokenizer=hf:big.json', '--data_dir=d', '--num_proc=1', cwd=tmp_path,
        timeout=120)
    meta = json.loads((tmp_path / 'd' / 'meta.json').read_text())
    assert (meta['dtype'], meta['version'], meta['vocab_size']) == ('uint32', 2, 70007)  # + our 5 special tokens
    train = load_split(str(tmp_path / 'd'), 'train')[0]
    assert train.dtype == np.uint32 and train[:4].tolist() == [1, 70000, 70001, 69999]
    tok = get_tokenizer(meta['tokenizer'], str(tmp_path / 'd'))
    assert tok.decode(train[1:6].tolist()) == 'hello world w69997 w5 hello'


# ---------------------------------------------------------------------------- prepare.py, property-based
hypothesis = pytest.importorskip('hypothesis')
st = hypothesis.strategies
TEXT = st.text(max_size=60)
FLAG = st.sampled_from(['True', 'False', 'True', 'False', 'no'])
# mostly well-typed values of prepare.py's keys (so that the data gets read), sometimes junk or an unknown key
ARG = st.one_of(*[st.tuples(st.just(k), v) for k, v in {
    'text_field': st.sampled_from(['text', 'question', 'body']) | TEXT,
    'format': st.sampled_from(['text', 'chat', 'x']),
    'val_fraction': st.sampled_from(['0', '0.5', '0.25', '1', 'abc']) | st.floats(-1, 2).map(str),
    'shard_size': st.integers(-2, 300).map(str), 'max_examples': st.integers(-1, 5).map(str),
    'sp_train_chars': st.integers(-1, 10 ** 6).map(str), 'system_prompt': TEXT, 'split': TEXT, 'skip_bad': FLAG,
    'no_reasoning': FLAG, 'show_mask': FLAG, 'keep_calc': FLAG}.items()], st.tuples(st.text(max_size=8), TEXT))
RECORD = st.fixed_dictionaries({'text': TEXT}) | st.dictionaries(
    st.sampled_from(['text', 'question', 'answer', 'messages', 'prompt', 'response', 'user', 'assistant', 'rationale']),
    TEXT | st.integers() | st.lists(st.fixed_dictionaries({
        'role': st.sampled_from(['user', 'assistant', 'system', 'x']), 'content': TEXT}), max_size=3), max_size=4)
RECORDS = st.lists(RECORD, max_size=12)
DATA = {'.txt': st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
        '.jsonl': st.binary(max_size=300) | RECORDS.map(lambda rs: '\n'.join(map(json.dumps, rs)).encode()),
        '.json': st.binary(max_size=300) | RECORDS.map(lambda rs: json.dumps(rs).encode())}


def hang(signum, frame):
    raise TimeoutError('prepare.py ran over 30 s')


@hypothesis.settings(max_examples=40, deadline=None, database=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(ext=st.sampled_from(sorted(DATA)), data=st.data(),
                  args=st.lists(ARG, max_size=3),
                  tokenizer=st.sampled_from(['byte', 'byte', 'byte', 'sp:300', 'sp:x']))
def test_prepare_takes_any_data_and_arguments_without_a_traceback(tmp_path, monkeypatch, ext, data, args, tokenizer):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f'in{len(os.listdir(tmp_path))}{ext}'  # a fresh file and folder for each example
    path.write_bytes(data.draw(DATA[ext]))
    # the last arguments win: the file, a fresh folder, one process, and no source, folder or tokenizer to download
    argv = ['prepare.py', *[f'--{k}={v}' for k, v in args], f'--dataset={path}', f'--data_dir={path}.d',
            '--num_proc=1', '--source=', f'--tokenizer={tokenizer}']
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, 'argv', argv)
    monkeypatch.setattr(sys, 'stdout', out)
    monkeypatch.setattr(sys, 'stderr', err)
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(30)
    try:
        runpy.run_path(os.path.join(ROOT, 'prepare.py'), run_name='__main__')
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    hypothesis.event(' '.join(err.getvalue().rstrip().split('\n')[-1].split()[2:5]) if code else 'prepared')
    if code:
        assert code == 1 and err.getvalue().rstrip().split('\n')[-1].startswith('prepare.py: error: '), err.getvalue()
        assert not os.path.exists(f'{path}.d'), 'a failed run left its data folder behind'
    else:
        assert os.path.isfile(f'{path}.d/meta.json')


# ---------------------------------------------------------------------------- configurator, property-based
KEYS = make_globals()


@hypothesis.settings(max_examples=200, deadline=2000, database=None)
@hypothesis.given(st.lists(st.tuples(st.sampled_from(list(KEYS)) | st.text(max_size=12), st.booleans(),
                                     st.text(max_size=40) | st.from_regex(r'-?[0-9eE.+\-_]{0,12}', fullmatch=True)
                                     | st.sampled_from(['True', 'false', 'None', '1e400', '[1, 2]', '(' * 300]))))
def test_configurator_takes_any_arguments_without_a_traceback(args):
    argv = [f"--{k}={v}" if eq else f"--{k}{v}" for k, eq, v in args]
    g = dict(KEYS)
    try:
        config = configurator.configure(g, argv, verbose=False)
    except configurator.ConfigError:
        return
    assert config.keys() == KEYS.keys()
    for k, v in config.items():  # every value kept its type (an int may become a float)
        assert KEYS[k] is None or type(v) is type(KEYS[k]), (k, v)
