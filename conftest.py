"""
What the test files share (pytest loads this file first; the test files import from it: `from conftest import ...`):
the repository's folder and ../shared beside it, a small text corpus, the gpt2 tokenizer or a skip, one way to run a
script of the repository in a subprocess (`run`, `command`), a byte-tokenized data folder made by prepare.py, and the
runner of the bad-input tables of test_errors.py and test_train.py (`bad_input_results`).

    python -m pytest test_*.py  (the whole suite; `python -m pytest test_data.py` runs one file)
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(ROOT, '..', 'shared')  # real data and reference outputs; the tests that need it skip without it
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # the environment of scripts that would otherwise take every core of a busy CI
OFFLINE = {'https_proxy': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9'}  # a refused connection, at once

try:  # hypothesis keeps its files outside the repository (the tests turn its example database off)
    import hypothesis
    hypothesis.configuration.set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), 'hypothesis-tiny-reasoner'))
except ImportError:
    pass


def corpus(lines=400, tail=''):
    """`lines` numbered lines of the quick brown fox, each ending in tail: a text a tiny model learns in a few steps."""
    return ''.join(f"Line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times.{tail}\n"
                   for i in range(lines))


TEXT = corpus()


def gpt2_or_skip():
    """The gpt2 tokenizer, or skip the test where tiktoken's GPT-2 files are neither cached nor downloadable."""
    from tokenizer import get_tokenizer
    try:
        return get_tokenizer('gpt2')
    except ValueError as e:  # offline with no tiktoken cache
        pytest.skip(f"GPT-2 BPE files unavailable (set TIKTOKEN_CACHE_DIR): {e}")


# ---------------------------------------------------------------------------- running the scripts
def command(script, *args):
    """python running `script` with args: a file of the repository (train.py, ...) or an option of python itself
    ('-c', code or '-m', module) followed by its arguments."""
    return [sys.executable, script if script.startswith('-') else os.path.join(ROOT, script), *args]


def run(script, *args, cwd, check=True, timeout=300, env=None, input=None):
    """Run command(script, *args) in cwd and return the CompletedProcess, its output as text. env: variables set on
    top of this process's environment (e.g. ONE_THREAD); input: text for its stdin; check: fail the test, with the
    end of the output, unless it exits with status 0."""
    p = subprocess.run(command(script, *args), cwd=cwd, capture_output=True, text=True, timeout=timeout, input=input,
                       env=None if env is None else {**os.environ, **env})
    if check and p.returncode != 0:
        name = next((os.path.basename(a) for a in (script, *args) if a.endswith('.py')), script)
        raise AssertionError(f"{name} {args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def prepare_byte_data(folder, text, env=None):
    """folder/input.txt holding text, prepared by prepare.py with the byte tokenizer into folder/d; returns folder."""
    (folder / 'input.txt').write_text(text)
    run('prepare.py', '--dataset=input.txt', '--tokenizer=byte', '--data_dir=d', cwd=folder, env=env)
    return folder


# ---------------------------------------------------------------------------- bad input: a clear error, nothing changed
# All the cases of a table run in one helper process, so torch is imported once: each script as __main__ (runpy) with
# its arguments and environment. The exit status is that of SystemExit; any other exception counts as a traceback
# (it goes to sys.excepthook, as in the interpreter: train.py's prints one line, the default the traceback). Files
# and folders under cwd are compared (inode, size, mtime) before and after each case.
RUNNER = r"""
import io, json, os, runpy, signal, sys
sys.path.insert(0, os.environ['ROOT'])
import torch


def tree():
    out = {}
    for d, dirs, files in os.walk('.'):
        for f in dirs + files:
            st = os.lstat(os.path.join(d, f))
            out[os.path.join(d, f)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def hang(signum, frame):
    raise TimeoutError(f'over {hang_s} s')


def oom(*args, **kwargs):
    raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')


cases_file, results_file, hang_s = sys.argv[1], sys.argv[2], int(sys.argv[3])
signal.signal(signal.SIGALRM, hang)
results = []
for case in json.load(open(cases_file)):
    env, hidden = dict(os.environ), {m: sys.modules.get(m) for m in case.get('hide', [])}
    os.environ.update(case.get('env', {}))
    sys.modules.update({m: None for m in hidden})  # import of a hidden module raises ImportError
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding='utf-8', write_through=True) for _ in range(2))
    sys.argv, sys.stdout, sys.stderr = [case['script'], *case['argv']], out, err
    if case.get('oom'):  # what CUDA raises when a step does not fit (there is no GPU here)
        import model_llama
        forward, model_llama.Llama.forward = model_llama.Llama.forward, oom
    before, code, exc = tree(), None, None
    signal.alarm(hang_s)
    try:
        runpy.run_path(os.path.join(os.environ['ROOT'], case['script']), run_name='__main__')
        code = 0
    except SystemExit as e:
        code = e.code
    except BaseException as e:  # uncaught: the interpreter would call sys.excepthook and exit with 1
        sys.excepthook(type(e), e, e.__traceback__)
        code, exc = 1, type(e).__name__
    signal.alarm(0)
    if case.get('oom'):
        model_llama.Llama.forward = forward
    sys.stdout, sys.stderr, sys.excepthook = sys.__stdout__, sys.__stderr__, sys.__excepthook__
    os.environ.clear()
    os.environ.update(env)
    for m, mod in hidden.items():
        sys.modules.pop(m)
        if mod is not None:
            sys.modules[m] = mod
    after = tree()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
                     and not k.startswith(tuple(case.get('may_write', []))))
    results.append(dict(code=code, exception=exc, stderr=err.buffer.getvalue().decode(errors='replace'),
                        changed=changed))
json.dump(results, open(results_file, 'w'))
"""


def bad_input_results(cases, cwd, timeout, hang_s=0):
    """Run every case in cwd (see RUNNER above) and return, for each, dict(code, exception, stderr, changed): its exit
    status, the name of an exception that escaped it (None if none did), its stderr and the paths below cwd it
    changed. A case is a dict of script, argv and, optionally, env (variables set for it), hide (modules whose import
    fails), oom (True: Llama's forward raises CUDA's out of memory) and may_write (path prefixes it may change);
    hang_s: an alarm that stops a case after that many seconds (0: none)."""
    with tempfile.TemporaryDirectory() as d:
        cases_file, results_file = os.path.join(d, 'cases.json'), os.path.join(d, 'results.json')
        with open(cases_file, 'w') as f:
            json.dump(cases, f)
        run('-c', RUNNER, cases_file, results_file, str(hang_s), cwd=cwd, timeout=timeout,
            env={**ONE_THREAD, 'ROOT': ROOT})
        with open(results_file) as f:
            return json.load(f)
