"""
prepare.py replaces a data folder only when the new data is complete: a re-run that fails (offline download, a
non-UTF-8 source, a malformed record, Ctrl-C mid-write) leaves the prepared folder exactly as it was (same files, bytes,
inodes and mtimes) and no temp folder beside it; a run that succeeds replaces the data completely (no stale shards)
and keeps the files prepare.py did not write; a first run that fails leaves no folder; a run killed between the two
renames of the swap is recovered by the next one. Also: a .tsv given as text names --format=chat.
python -m pytest test_prepare.py  (CPU, no network, no ../shared, ~7 s)
"""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import OFFLINE, ONE_THREAD, ROOT, command, run

# prepare.py with shards.write_shard raising KeyboardInterrupt (as Ctrl-C would) at its call number INTERRUPT_AT:
# after some shards of the new data are written
INTERRUPTED = r"""
import os, runpy, sys
sys.path.insert(0, os.environ['ROOT'])
import shards
write, calls = shards.write_shard, [0]
def write_shard(*a, **k):
    calls[0] += 1
    if calls[0] == int(os.environ['INTERRUPT_AT']):
        raise KeyboardInterrupt
    return write(*a, **k)
shards.write_shard = write_shard
sys.argv = [os.path.join(os.environ['ROOT'], 'prepare.py'), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name='__main__')
"""
DOCS = ''.join(json.dumps({'text': f"document {i}: " + 'the quick brown fox ' * (i % 5 + 1)}) + '\n' for i in range(40))


def prepare(*args, cwd, env=None, interrupt_at=0):
    """Run prepare.py (one process, byte tokenizer unless given) in cwd; interrupt_at: Ctrl-C at that shard write."""
    script = ['prepare.py'] if not interrupt_at else ['-c', INTERRUPTED]
    return run(*script, '--num_proc=1', '--tokenizer=byte', *args, cwd=cwd, check=False, timeout=120,
               env={**ONE_THREAD, 'ROOT': ROOT, 'INTERRUPT_AT': str(interrupt_at), **(env or {})})


def snapshot(folder):
    """Every file and folder below `folder` (itself included): (inode, mtime, sha256 of a file's bytes)."""
    out = {}
    for d, dirs, files in os.walk(folder):
        for name in ['.', *dirs, *files] if d == folder else [*dirs, *files]:
            p = os.path.join(d, name)
            st = os.lstat(p)
            out[os.path.relpath(p, folder)] = (st.st_ino, st.st_mtime_ns,
                                               os.path.isfile(p) and hashlib.sha256(open(p, 'rb').read()).hexdigest())
    return out


def error_line(p):
    lines = [line for line in p.stderr.split('\n') if line.strip()]
    assert 'Traceback' not in p.stderr and lines, p.stderr
    return lines[-1]


@pytest.fixture
def prepared(tmp_path):
    """A folder d prepared from docs.jsonl in shards of 400 tokens, with a user's notes beside the data; the inputs that
    make a re-run fail."""
    (tmp_path / 'docs.jsonl').write_text(DOCS)
    p = prepare('--dataset=docs.jsonl', '--data_dir=d', '--shard_size=400', cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (tmp_path / 'd' / 'notes.md').write_text('my notes\n')
    (tmp_path / 'latin.txt').write_bytes(b'caf\xe9 au lait\n')
    (tmp_path / 'broken.jsonl').write_text('{"text": "ok"}\n{"text": \n')
    (tmp_path / 'list.jsonl').write_text('[1, 2]\n')
    return tmp_path


@pytest.mark.parametrize('args, env, interrupt_at, message', [
    (['--dataset=shakespeare'], OFFLINE, 0, 'Offline? Pass a local copy: --source='),
    (['--dataset=latin.txt'], {}, 0, 'latin.txt is not UTF-8 text'),
    (['--dataset=broken.jsonl'], {}, 0, 'broken.jsonl:2: malformed JSON'),
    (['--dataset=list.jsonl', '--format=chat'], {}, 0, 'list.jsonl:1: a record must be an object'),
    (['--dataset=docs.jsonl', '--shard_size=300'], {}, 3, "prepare.py: interrupted: 'd' is as it was"),
], ids=['offline download', 'non-UTF-8 source', 'malformed jsonl record', 'malformed chat record', 'Ctrl-C mid-write'])
def test_failed_rerun_leaves_the_prepared_folder_as_it_was(prepared, args, env, interrupt_at, message):
    before, beside = snapshot(str(prepared / 'd')), sorted(os.listdir(prepared))
    p = prepare(*args, '--data_dir=d', cwd=prepared, env=env, interrupt_at=interrupt_at)
    assert p.returncode == (130 if interrupt_at else 1) and message in error_line(p), p.stderr
    assert snapshot(str(prepared / 'd')) == before
    assert sorted(os.listdir(prepared)) == beside  # no temp folder left beside it
    assert 'nothing to do' in prepare('--dataset=docs.jsonl', '--data_dir=d', '--shard_size=400', cwd=prepared).stdout


def test_ctrl_c_to_the_process_group_mid_write(prepared):
    # a real SIGINT, as a terminal sends it to prepare.py and its tokenizer processes, once the new shards are being
    # written: no traceback (the workers ignore it), exit 130, the folder as it was, no temp folder
    (prepared / 'big.jsonl').write_text(DOCS * 400)
    before, beside = snapshot(str(prepared / 'd')), sorted(os.listdir(prepared))
    p = subprocess.Popen(command('prepare.py', '--dataset=big.jsonl', '--tokenizer=byte', '--num_proc=2',
                                 '--data_dir=d', '--shard_size=500'), cwd=prepared, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         env={**os.environ, **ONE_THREAD},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 60 and sum(  # wait for new shards, wherever they are written
            f.endswith('.bin') and os.stat(os.path.join(d, f)).st_mtime > t0 for d, _, fs in os.walk(prepared)
            for f in fs) < 3:
        time.sleep(0.005)
    assert p.poll() is None, 'prepare.py finished before it could be interrupted'
    os.killpg(p.pid, signal.SIGINT)
    try:
        _, err = p.communicate(timeout=30)
    finally:  # a run that hangs after Ctrl-C (as with a pool whose workers got it too) is killed, then fails the test
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130 and 'Traceback' not in err and "interrupted: 'd' is as it was" in err, err
    assert snapshot(str(prepared / 'd')) == before and sorted(os.listdir(prepared)) == beside


def test_failed_rerun_keeps_chat_data_and_its_sentencepiece_model(tmp_path):
    # a chat folder: tokenizer.model, mask_*.bin, idx_*.npy, test.jsonl; the re-run trains another tokenizer.model
    # and is interrupted at its second shard (the first mask shard)
    synth = ['--dataset=gsm_synth', '--tokenizer=sp:400', '--synth_train=40', '--synth_val=4', '--synth_test=4',
             '--data_dir=c']
    assert prepare(*synth, cwd=tmp_path).returncode == 0
    before = snapshot(str(tmp_path / 'c'))
    assert {'tokenizer.model', 'mask_train_000.bin', 'idx_val_000.npy', 'test.jsonl'} <= set(before)
    p = prepare(*synth, '--synth_seed=1', cwd=tmp_path, interrupt_at=2)
    assert p.returncode == 130 and 'interrupted' in error_line(p)
    assert snapshot(str(tmp_path / 'c')) == before and sorted(os.listdir(tmp_path)) == ['c']


def test_successful_rerun_replaces_the_data_and_keeps_other_files(prepared):
    d = prepared / 'd'
    (d / 'extra').mkdir()
    (d / 'extra' / 'run.log').write_text('kept\n')
    kept = {k: v for k, v in snapshot(str(d)).items() if k in ('notes.md', 'extra/run.log')}
    old = json.loads((d / 'meta.json').read_text())
    assert len(old['files']) > 2  # several shards of 400 tokens
    p = prepare('--dataset=docs.jsonl', '--data_dir=d', '--shard_size=100000', cwd=prepared)
    assert p.returncode == 0, p.stderr
    meta = json.loads((d / 'meta.json').read_text())
    assert meta['files'] == ['train_000.bin', 'val_000.bin'] and meta['args']['shard_size'] == 100000
    assert sorted(os.listdir(d)) == ['extra', 'meta.json', 'notes.md', 'train_000.bin', 'val_000.bin']  # no stale
    assert meta['train_tokens'] == old['train_tokens'] and meta['val_tokens'] == old['val_tokens']
    now = snapshot(str(d))
    assert {k: now[k] for k in kept} == kept  # the user's files: the same inodes, mtimes and bytes
    assert not [f for f in os.listdir(prepared) if f.startswith('.')]


def test_rerun_through_a_symlink_replaces_the_folder_it_points_to(prepared):
    os.symlink('d', prepared / 'link')
    p = prepare('--dataset=docs.jsonl', '--data_dir=link', '--val_fraction=0.2', cwd=prepared)
    assert p.returncode == 0, p.stderr
    assert os.path.islink(prepared / 'link') and json.loads((prepared / 'd' / 'meta.json').read_text())['val_docs'] == 8


def test_failed_first_run_leaves_no_folder(tmp_path):
    (tmp_path / 'latin.txt').write_bytes(b'caf\xe9\n')
    (tmp_path / 'docs.jsonl').write_text(DOCS)
    p = prepare('--dataset=latin.txt', '--data_dir=new/deeper/d', cwd=tmp_path)
    assert p.returncode == 1 and 'not UTF-8' in error_line(p)
    p = prepare('--dataset=docs.jsonl', '--data_dir=d', '--shard_size=300', cwd=tmp_path, interrupt_at=2)
    assert p.returncode == 130 and 'interrupted' in error_line(p)
    assert sorted(os.listdir(tmp_path)) == ['docs.jsonl', 'latin.txt']


def test_a_run_killed_between_the_renames_is_recovered(prepared):
    # what a kill between swap_in's renames leaves: no d, the old data in .d.prepare-old, the new in .d.prepare-new
    before = snapshot(str(prepared / 'd'))
    os.rename(prepared / 'd', prepared / '.d.prepare-old')
    (prepared / '.d.prepare-new').mkdir()
    (prepared / '.d.prepare-new' / 'train_000.bin').write_bytes(b'half')
    p = prepare('--dataset=docs.jsonl', '--data_dir=d', '--shard_size=400', cwd=prepared)
    assert p.returncode == 0 and 'restored' in p.stdout and 'nothing to do' in p.stdout, p.stdout + p.stderr
    after = snapshot(str(prepared / 'd'))
    assert after.pop('.')[0] == before.pop('.')[0] and after == before  # (two renames may touch the folder's mtime)
    assert not [f for f in os.listdir(prepared) if f.startswith('.')]
    # killed after the second rename: only deleting the backup was left
    (prepared / '.d.prepare-old').mkdir()
    (prepared / '.d.prepare-old' / 'meta.json').write_text('{}')
    p = prepare('--dataset=docs.jsonl', '--data_dir=d', '--shard_size=400', cwd=prepared)
    assert 'nothing to do' in p.stdout and not os.path.exists(prepared / '.d.prepare-old')


def test_tsv_as_text_names_format_chat(tmp_path):
    (tmp_path / 'qa.tsv').write_text('What is 2+3?\t5\t2+3=5\n' * 10)
    p = prepare('--dataset=qa.tsv', cwd=tmp_path)
    assert p.returncode == 1 and error_line(p).startswith('prepare.py: error: ') and \
        '--format=chat' in error_line(p), p.stderr
    assert sorted(os.listdir(tmp_path)) == ['qa.tsv']
    assert prepare('--dataset=qa.tsv', '--format=chat', cwd=tmp_path).returncode == 0
