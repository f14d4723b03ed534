"""
Poor man's configurator, nanoGPT style, with checks. A script declares its config as plain module globals,
then calls

    config = configure(globals())

which applies, in order, every `config/*.py` file and every `--key=value` given on the command line:

    python train.py config/shakespeare_char.py --batch_size=32 --compile=False

A config file is plain Python run in the script's globals. Every key it sets, and every `--key`, must already be
a global of the script, of the same type (an int is accepted where a float is expected). A mistake is a
ConfigError that names the key and the closest valid keys, or the expected and given types. `-h` / `--help` prints
every key with its default and the comment beside it in the script. Also here: the keys every script resolves alike
(`threads`, `device`, `dtype`), the checks of train.py's config that are not about types (check_train_config), and
another script's defaults read from its source (script_defaults: bench.py's --config reads train.py's).
"""

import ast
import difflib
import importlib
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


def script_defaults(path):
    """The config of another script as its defaults (e.g. train.py's, for bench.py's --config): the module-level
    assignments of plain literals in its source, read without running it (a script is not imported). Returns
    {key: value}."""
    out = {}
    for node in ast.parse(open(path, encoding='utf-8').read()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


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


def pick_dtype(dtype, device_type):
    """Resolve a `dtype` config value: 'auto' -> bfloat16 on CUDA GPUs that have it natively (Ampere and later),
    float16 on older ones (train.py adds a GradScaler), float32 on the CPU and MPS; float32, bfloat16 and float16 stay
    as they are. Returns the dtype's name; raises ConfigError for anything else."""
    import torch
    if dtype == 'auto':
        return ('bfloat16' if torch.cuda.is_bf16_supported(including_emulation=False) else 'float16') \
            if device_type == 'cuda' else 'float32'
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, not '{dtype}'")
    return dtype


def check_train_config(c, ddp, world_size):
    """Raise ConfigError, naming the key and the fix, for a train.py config `c` (a dict of its keys, with device and
    dtype resolved) that cannot run: under torchrun (ddp, world_size processes) or alone. wandb_log imports wandb."""
    device_type = c['device'].split(':')[0]
    if ddp and c['gradient_accumulation_steps'] % world_size:
        raise ConfigError(f"gradient_accumulation_steps ({c['gradient_accumulation_steps']}) must be a multiple of the "
                          f"number of processes ({world_size}): each runs an equal share of the micro-batches")
    if ddp and device_type == 'mps':
        raise ConfigError("DDP runs on CUDA GPUs (NCCL) or on the CPU (gloo), not on MPS: use --device=cpu")
    if c['fsdp'] and not ddp:
        raise ConfigError("fsdp=True shards the model across the processes of torchrun: launch it with torchrun "
                          "--standalone --nproc_per_node=N train.py ...")
    if c['fsdp'] and (c['lora_r'] or c['qlora']):
        raise ConfigError("fsdp=True is for full fine-tuning; LoRA/QLoRA runs train few weights: use DDP (fsdp=False)")
    if c['fsdp'] and c['dtype'] == 'float16':  # a GradScaler would see only this rank's shard of the gradients
        raise ConfigError("fsdp=True trains in bfloat16 or float32, not float16: set --dtype=bfloat16 or float32")
    if c['nan_rollback'] < 0 or not 0 < c['nan_lr_factor'] <= 1:
        raise ConfigError(f"need nan_rollback >= 0 (got {c['nan_rollback']}), 0 < nan_lr_factor <= 1 "
                          f"(got {c['nan_lr_factor']})")
    if c['lr_schedule'] not in ('cosine', 'linear'):
        raise ConfigError(f"lr_schedule must be 'cosine' or 'linear', not '{c['lr_schedule']}'")
    init_from, model_type = c['init_from'], c['model_type']
    if init_from != 'resume' and not c['eval_only']:  # a new run: never over another run's checkpoint unless told to
        from checkpoint import check_new_run
        check_new_run(c['out_dir'], c['overwrite'])
    if init_from not in ('scratch', 'resume') and not init_from.startswith(('hf:', 'llama2c:', 'rwkv:')) \
            and not os.path.isdir(init_from):
        raise ConfigError(f"init_from must be 'scratch', 'resume', 'rwkv:<file.pth>', 'hf:<folder or hub id>', "
                          f"'llama2c:<file.bin>' or a run's out_dir, not '{init_from}' (no such folder)")
    if model_type not in ('llama', 'rwkv7'):
        raise ConfigError(f"model_type must be 'llama' or 'rwkv7', not '{model_type}'")
    if init_from.startswith('rwkv:') and model_type != 'rwkv7':
        raise ConfigError(f"init_from='{init_from}' loads an RWKV-7 checkpoint: set --model_type=rwkv7")
    if init_from.startswith(('hf:', 'llama2c:')) and model_type != 'llama':
        raise ConfigError(f"init_from='{init_from}' loads a Llama-family model: set --model_type=llama")
    if c['lora_r'] < 0 or not 0 <= c['lora_dropout'] < 1:
        raise ConfigError(f"need lora_r >= 0 (0 = off; got {c['lora_r']}) and 0 <= lora_dropout < 1 "
                          f"(got {c['lora_dropout']})")
    if c['qlora'] and not c['lora_r']:
        raise ConfigError("qlora=True quantizes the frozen base under LoRA adapters: set lora_r (e.g. --lora_r=16)")
    if c['optim'] not in ('adamw', 'adamw8bit', 'paged_adamw8bit', 'muon'):
        raise ConfigError(f"optim must be 'adamw', 'adamw8bit', 'paged_adamw8bit' or 'muon', not '{c['optim']}'")
    if c['optim'] == 'muon' and (c['lora_r'] or c['fsdp']):
        raise ConfigError("optim='muon' trains full weight matrices without FSDP: use --optim=adamw with "
                          + ("--lora_r" if c['lora_r'] else "--fsdp=True"))
    if c['keep_last'] < 0:
        raise ConfigError(f"keep_last must be 0 (off) or more, got {c['keep_last']}")
    if os.path.exists(c['out_dir']) and not os.path.isdir(c['out_dir']):
        raise ConfigError(f"out_dir '{c['out_dir']}' is a file, not a folder: choose another --out_dir")
    for k in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval', 'eval_iters',
              'log_interval', 'max_bad_steps'):
        if c[k] < 1:
            raise ConfigError(f"{k} must be at least 1, got {c[k]}")
    if c['decay_lr'] and not c['warmup_iters'] <= c['lr_decay_iters']:
        raise ConfigError(f"warmup_iters ({c['warmup_iters']}) must not exceed lr_decay_iters ({c['lr_decay_iters']})")
    if c['wandb_log']:
        try:
            importlib.import_module('wandb')  # a broken install fails here too, before any work
        except ImportError:
            raise ConfigError("wandb_log=True needs wandb: pip install wandb (or leave wandb_log off)") from None
