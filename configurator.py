"""
Poor man's configurator, nanoGPT style, with checks. A script declares its config as plain module globals,
then calls

    config = configure(globals())

which applies, in order, every `config/*.py` file and every `--key=value` given on the command line:

    python train.py config/shakespeare_char.py --batch_size=32 --compile=False

A config file is plain Python run in the script's globals. Every key it sets, and every `--key`, must already be
a global of the script, of the same type (an int is accepted where a float is expected). A mistake is a
ConfigError that names the key and the closest valid keys, or the expected and given types. `-h` / `--help` prints
every key with its default and the comment beside it in the script.
"""

import ast
import difflib
import json
import os
import re
import sys


class ConfigError(ValueError):
    """A bad config file, key or value; the message says what is wrong and how to fix it."""


def config_keys(g):
    """The overridable config keys of a script's globals `g`: the names of plain int/float/bool/str/None values, but
    not _private or UPPER_CASE ones (constants, some imported from other modules, like bench.py's FLEX regex); a
    one-letter capital is a key (bench.py's B, H, N, T: a WKV shape)."""
    return [k for k, v in g.items() if not k.startswith('_') and not (k.isupper() and len(k) > 1)
            and isinstance(v, (int, float, bool, str, type(None)))]


def _check_key(key, keys):
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" Valid keys: {', '.join(sorted(keys))}."
        raise ConfigError(f"unknown config key '{key}'.{hint}")


def _coerce(key, value, default):
    """Return `value` as the type of `default`; int -> float is allowed, anything else mismatched is an error (None
    too: only a key whose default is None takes any value)."""
    if default is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif type(value) is type(default):
        return value
    raise ConfigError(f"config key '{key}' expects {type(default).__name__} (default {default!r}), "
                      f"got {type(value).__name__} {value!r}")


def _parse_value(raw):
    """'1e-3' -> 1e-3, '7' -> 7, 'True' -> True, 'none' -> None; anything else stays a string."""
    if raw.lower() in ('true', 'false'):
        return raw.lower() == 'true'
    if raw.lower() == 'none':
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def configure(g, argv=None, verbose=True):
    """Apply config files and `--key=value` overrides from `argv` (default sys.argv[1:]) to the globals `g`.

    A script's `threads` key is applied at once (set_threads). Returns the effective config as a dict {key: value}
    of JSON-able values; verbose prints one line: the script, its threads, the config files and the keys that differ
    from the defaults. Raises ConfigError on an unknown key, a type mismatch, a
    missing config file or a malformed argument.
    """
    argv = sys.argv[1:] if argv is None else argv
    keys = config_keys(g)
    if '-h' in argv or '--help' in argv:
        print(help_text(g, keys))
        sys.exit(0)
    defaults, files = {k: g[k] for k in keys}, []
    for arg in argv:
        if not arg.startswith('--'):
            if not os.path.isfile(arg):
                raise ConfigError(f"config file '{arg}' not found (arguments are config files or --key=value)")
            fresh = {}
            try:
                exec(compile(open(arg).read(), arg, 'exec'), fresh)
            except Exception as e:
                raise ConfigError(f"config file '{arg}' failed to run: {type(e).__name__}: {e}") from None
            for k, v in fresh.items():
                if k.startswith('_') or k == '__builtins__' or callable(v) or type(v).__name__ == 'module':
                    continue
                _check_key(k, keys)
                g[k] = _coerce(k, v, g[k])
            files.append(arg)
        else:
            if '=' not in arg and isinstance(g.get(arg[2:]), bool):
                arg += '=True'  # a bare --flag switches a boolean on
            if '=' not in arg:
                raise ConfigError(f"malformed argument '{arg}': use --key=value (e.g. --batch_size=32)")
            k, raw = arg[2:].split('=', 1)
            _check_key(k, keys)
            default = g[k]
            value = raw if isinstance(default, str) else _parse_value(raw)
            g[k] = _coerce(k, value, default)
    config = {k: g[k] for k in keys}
    threads = set_threads(g['threads']) if 'threads' in keys else None  # before any work: it shapes all of it
    if verbose:  # only what differs from the script's defaults: the run's config.json and checkpoints hold it all
        changed = {k: v for k, v in config.items() if v != defaults[k]}
        print(f"{os.path.basename(g.get('__file__', 'script'))}: "
              + (f"{threads} threads; " if threads else '') + f"config{''.join(' ' + f for f in files)} (what differs "
              f"from the defaults): {json.dumps(changed) if changed else 'the defaults'}")
    return config


def help_text(g, keys):
    """--help of a script: its docstring's first paragraph, then every config key with its default and the comment
    written beside it in the script (a comment continued on the lines below included), read from the script's own
    source (g['__file__']): the globals are the one list of keys."""
    notes, key = {}, None
    try:
        with open(g['__file__'], encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (KeyError, OSError):
        lines = []
    for line in lines:
        m = re.match(r'(\w+)\s*=.*?#\s?(.*)$', line)
        if m and m[1] in keys:
            key, notes[m[1]] = m[1], m[2].strip()
        elif key and re.match(r'\s+#', line) and line.index('#') > len(key):  # the comment goes on below
            notes[key] += ' ' + line.strip()[1:].strip()
        else:
            key = None
    doc = (g.get('__doc__') or '').strip().split('\n\n')[0]
    width = max(len(f"--{k}={g[k]!r}") for k in keys) if keys else 0
    rows = [f"  {f'--{k}={g[k]!r}':<{min(width, 40)}}  {notes.get(k, '')}".rstrip() for k in keys]
    return f"{doc}\n\nusage: python {os.path.basename(g.get('__file__', 'script.py'))} [config/file.py ...] " \
           f"[--key=value ...]\n\n" + '\n'.join(rows)


def set_threads(threads):
    """The `threads` key of every script: threads > 0 sets torch's intra-op threads (torch.set_num_threads), 0 keeps
    PyTorch's default (one per core). With another heavy job on the same cores, the default threads spin-wait on
    each other (OpenMP): give each job its own. Returns the number of threads torch now uses; ConfigError if < 0."""
    import torch
    if threads < 0:
        raise ConfigError(f"threads must be 0 (PyTorch's default) or more, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def pick_device(device):
    """Resolve a `device` config value: 'auto' -> 'cuda' if available, else 'mps', else 'cpu'; an explicit 'cpu',
    'cuda', 'cuda:N' or 'mps' is checked to exist. Returns the device string; raises ConfigError otherwise."""
    import torch
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    kind, _, index = device.partition(':')
    if kind not in ('cpu', 'cuda', 'mps') or (index and not index.isdigit()):
        raise ConfigError(f"unknown device '{device}': use auto, cpu, cuda, cuda:N or mps")
    if kind == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' asked for, but CUDA is not available here: use --device=cpu")
    if kind == 'cuda' and index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if kind == 'mps' and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{device}' asked for, but MPS is not available here: use --device=cpu")
    return device
