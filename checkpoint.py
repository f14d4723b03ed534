"""
The checkpoint format of train.py, and the one place that reads it: which file a run resolves to, reading a file with
every check, loading the model a run or a pretrained spec names, the model a training run starts from, and the
run folder's files (the atomic write, config.json, keep_last, the RNG states a resume needs).

    path = find_checkpoint('out-run', '')          # out-run/best.pt if there is one, else out-run/ckpt.pt
    ck = read_checkpoint(path)                     # the dict, checked (damaged, foreign, unknown model type)
    model, tok, ck = load_model('out-run/best.pt') # or 'hf:<folder or hub id>', 'llama2c:<file.bin>'
    model, args, ck, lora = start_model(config, tok, vocab)  # train.py: resume, another run, hf:, scratch; LoRA
    save_run_file(ck, 'out-run', 'ckpt.pt', config)          # temp file, fsync, rename: a crash leaves the old file

A checkpoint is a dict: 'model' (a state dict: the full model, or a LoRA run's adapters in ckpt.pt), 'model_type'
('llama' | 'rwkv7'), 'model_args' (the model config as a dict), 'tokenizer' (tokenizer.Tokenizer.state()),
'iter_num', 'config' (train.py's config), 'best_val_loss'; with what resume needs in ckpt.pt ('optimizer', 'scaler',
'rng', 'log_acc', 'lr_factor'); a LoRA run's 'lora' (adapter settings and base reference) or, merged, 'merged_lora'.
Sharded (FSDP) runs write the same file (parallel.full_state); the training loop's state is train.py's.
"""

import json
import math
import os
import re

import torch

PRETRAINED = ('hf:', 'llama2c:', 'rwkv:')  # specs of pretrained models, loaded by their own readers
NUMBERED = r'ckpt_\d+\.pt'  # keep_last's copies, ckpt_<iter>.pt


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong, in one line."""


def find_checkpoint(out_dir, ckpt=''):
    """The checkpoint file that `ckpt` names for the run in `out_dir` (str paths):
    - '' : out_dir/best.pt if it exists, else out_dir/ckpt.pt;
    - a bare file name: out_dir/ckpt, else ckpt itself if that file exists (in the working directory);
    - a path (with a folder, or absolute): that file if it exists, else out_dir/ckpt;
    - a pretrained spec (hf:, llama2c:, rwkv:): returned as it is.
    Returns the path of an existing file, or the spec. Raises FileNotFoundError with a one-line message naming the
    paths it tried and the fix."""
    if ckpt.startswith(PRETRAINED):
        return ckpt
    if not ckpt:
        tried = [os.path.join(out_dir, 'best.pt'), os.path.join(out_dir, 'ckpt.pt')]
    elif os.path.basename(ckpt) == ckpt:
        tried = [os.path.join(out_dir, ckpt), ckpt]
    else:
        tried = [ckpt, os.path.join(out_dir, ckpt)]
    tried = list(dict.fromkeys(tried))  # an absolute ckpt joins out_dir as itself
    for path in tried:
        if os.path.isfile(path):
            return path
    where = tried[-1] if not ckpt else tried[0] + (f" (nor {tried[1]})" if len(tried) > 1 else '')
    raise FileNotFoundError(f"no checkpoint {where}: train first (python train.py ...), or set --out_dir to a trained "
                            f"run, or --ckpt to a checkpoint file")


def read_checkpoint(path, hint=''):
    """The dict of the train.py checkpoint file at `path` (tensors on the CPU). Raises CheckpointError when the file
    cannot be read (damaged, truncated, not a torch file: `hint` is added to that message), is no train.py checkpoint
    (no model, model_args and tokenizer) or holds another model type than llama or rwkv7."""
    try:
        ck = torch.load(path, map_location='cpu', weights_only=False)  # our own files: they hold plain Python too
    except Exception as e:  # a truncated zip, a text file, a foreign pickle: whatever torch.load cannot read
        raise CheckpointError(f"cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                              f"it is damaged or not a train.py checkpoint{hint}") from None
    if not isinstance(ck, dict) or not {'model', 'model_args', 'tokenizer'} <= ck.keys():
        raise CheckpointError(f"{path} is not a train.py checkpoint (no model, model_args and tokenizer)")
    if ck.get('model_type') not in ('llama', 'rwkv7'):
        raise CheckpointError(f"{path} holds a '{ck.get('model_type')}' model; this project runs 'llama' and 'rwkv7'")
    return ck


def model_class(kind):
    """(model class, config class) of a model_type: 'llama' or 'rwkv7'."""
    if kind == 'llama':
        from model_llama import Llama, LlamaConfig
        return Llama, LlamaConfig
    from model_rwkv7 import RWKV7, RWKV7Config
    return RWKV7, RWKV7Config


def load_model(spec, device='cpu', block_size=None):
    """(model in eval mode on `device`, tokenizer, checkpoint dict with 'path') of `spec`: a checkpoint file (a full
    model: a LoRA run's merged best.pt, not its adapters-only ckpt.pt), or a pretrained Llama 'hf:<folder or hub id>' /
    'llama2c:<file.bin>' with its own tokenizer (its dict holds model_type, model_args, iter_num 'pretrained' and an
    empty config). block_size: a Llama's context in tokens, else the one it was trained with; a longer one runs RoPE
    past the positions training saw (as llama.cpp's -c; an RWKV-7 has no context to set). Raises CheckpointError
    naming what is wrong."""
    from tokenizer import get_tokenizer, pretrained_tokenizer, tokenizer_from_state
    if spec.startswith(('hf:', 'llama2c:')):
        import dataclasses
        from model_llama import Llama, resolve_pretrained
        try:
            local = resolve_pretrained(spec.split(':', 1)[1])
            model, tok = Llama.from_pretrained(local, block_size=block_size), get_tokenizer(pretrained_tokenizer(local))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load {spec}: {e}") from None
        ck = {'path': spec, 'model_type': 'llama', 'iter_num': 'pretrained', 'config': {},
              'model_args': dataclasses.asdict(model.config)}
        return model.eval().to(device), tok, ck
    if spec.startswith('rwkv:'):
        raise CheckpointError(f"{spec}: an official RWKV-7 .pth is a starting point for train.py (--init_from={spec} "
                              f"--model_type=rwkv7); sample or evaluate the run trained from it (its out_dir)")
    if not os.path.isfile(spec):
        raise CheckpointError(f"no checkpoint {spec}")
    ck = read_checkpoint(spec)
    if 'lora' in ck:
        raise CheckpointError(f"{spec} holds only the LoRA adapters of a run: sample from its merged best.pt "
                              f"(--ckpt=best.pt)")
    Model, Config = model_class(ck['model_type'])
    if block_size and ck['model_type'] == 'llama':
        ck['model_args'] = dict(ck['model_args'], block_size=block_size)
    try:
        model = Model(Config(**ck['model_args']))
        model.load_state_dict(ck['model'])
        tok = tokenizer_from_state(ck['tokenizer'])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:  # RuntimeError: missing or misshapen weights
        raise CheckpointError(f"{spec} does not load into its model ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]})") from None
    ck['path'] = spec
    return model.eval().to(device), tok, ck


def atomic_save(obj, path):
    """torch.save `obj` to `path` atomically: into path + '.tmp', fsync, rename over path, so that a crash or a kill
    at any moment leaves either the previous file or the new one. On a failed write (a full disk: OSError, or
    torch's RuntimeError) the temp file is removed and the error raised; path is then as it was."""
    try:
        with open(path + '.tmp', 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + '.tmp', path)
    except (OSError, RuntimeError):
        if os.path.lexists(path + '.tmp'):
            os.remove(path + '.tmp')
        raise


def keep_last(path, iter_num, k):
    """Keep the checkpoint just written at `path` also as ckpt_<iter_num>.pt beside it (a hard link: no extra space)
    and delete all but the k newest such files. A file system without hard links: a warning, nothing kept."""
    folder = os.path.dirname(path)
    kept = os.path.join(folder, f'ckpt_{iter_num:06d}.pt')
    try:
        if os.path.lexists(kept):
            os.remove(kept)
        os.link(path, kept)
    except OSError as e:
        print(f"warning: could not keep {kept}: {e}")
    numbered = [f for f in os.listdir(folder) if re.fullmatch(NUMBERED, f)]
    numbered.sort(key=lambda f: (os.stat(os.path.join(folder, f)).st_mtime_ns, int(f[5:-3])))  # newest last
    for f in numbered[:-k]:
        os.remove(os.path.join(folder, f))


def rng_state(sampler, device, ddp=False):
    """Every RNG state a resume needs: this process's torch (and CUDA / MPS) generator, with ddp each rank's (an
    all-gather: every rank calls it), the data sampler's (a torch.Generator), Python's and numpy's."""
    import random
    import numpy as np
    kind = str(device).split(':')[0]
    mine = {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state(device) if kind == 'cuda' else None,
            'mps': torch.mps.get_rng_state() if kind == 'mps' else None}
    ranks = [mine]
    if ddp:
        ranks = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(ranks, mine)
    return dict(mine, ranks=ranks if ddp else None, sampler=sampler.get_state(), python=random.getstate(),
                numpy=np.random.get_state())


def set_rng_state(rng, sampler, device, rank=0, world_size=1):
    """Put back what rng_state captured: the sampler's, Python's and numpy's state, and the torch generators of
    process `rank` when the checkpoint has one for it. Returns the number of processes that wrote it; when it differs
    from world_size, prints a note: the data order goes on exactly, dropout masks differ from an unbroken run's."""
    import random
    import numpy as np
    sampler.set_state(rng['sampler'])  # the same on every rank: the data order does not depend on the world size
    random.setstate(rng['python'])
    np.random.set_state(rng['numpy'])
    saved = rng.get('ranks') or [rng]  # the torch RNG states (dropout) of each process that wrote the checkpoint
    kind = str(device).split(':')[0]
    if rank < len(saved):
        torch.set_rng_state(saved[rank]['torch'])
        if kind == 'cuda' and saved[rank].get('cuda') is not None:
            torch.cuda.set_rng_state(saved[rank]['cuda'], device)
        if kind == 'mps' and saved[rank].get('mps') is not None:
            torch.mps.set_rng_state(saved[rank]['mps'])
    if len(saved) != world_size:
        print(f"note: the checkpoint was written by {len(saved)} process(es), this run has {world_size}: the data "
              f"order goes on exactly, dropout masks differ from those of an unbroken run")
    return len(saved)


def load_base(spec, model_type, tok, data_dir, file=None, *, block_size, dropout, vocab_size, wkv_impl='chunked',
              chunk_len=32):
    """What a training run starts from (train.py's init_from, or a LoRA run's base), checked against the run:
    another run's out_dir -> (None, its checkpoint dict with 'path': `file` in it, else best.pt if present, else
    ckpt.pt, a full model of model_type trained with tokenizer tok); 'rwkv:<.pth>' -> (an RWKV7 of the official
    weights, None); 'hf:<folder or hub id>' / 'llama2c:<file.bin>' -> (a Llama, None), its own tokenizer equal to tok
    (the run's data is tokenized with it) and its vocabulary padded to vocab_size. Pretrained models get block_size
    and dropout (RWKV-7 also wkv_impl, chunk_len). Returns (model or None, checkpoint or None, a line saying what was
    loaded). Raises CheckpointError naming the problem and the fix."""
    if spec.startswith('rwkv:'):
        from model_rwkv7 import RWKV7
        try:
            model = RWKV7.from_pretrained(spec[5:], block_size=block_size, dropout=dropout, wkv_impl=wkv_impl,
                                          chunk_len=chunk_len)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load {spec[5:]}: {e}") from None
        return model, None, f"loaded {spec[5:]}"
    if spec.startswith(('hf:', 'llama2c:')):  # a pretrained Llama / Mistral / Qwen2 / llama2.c model
        from model_llama import Llama, resolve_pretrained
        from tokenizer import get_tokenizer, pretrained_tokenizer
        try:
            local = resolve_pretrained(spec.split(':', 1)[1])
            own = get_tokenizer(pretrained_tokenizer(local))
            model = Llama.from_pretrained(local, block_size=block_size, dropout=dropout, vocab_size=vocab_size)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load {spec}: {e}") from None
        if own.blob != tok.blob:
            raise CheckpointError(f"{spec} comes with its own tokenizer, but {data_dir} was tokenized with "
                                  f"'{tok.spec}': prepare the data with --tokenizer={own.spec}")
        return model, None, f"loaded {spec} ({model.get_num_params() / 1e6:.2f}M parameters)"
    try:
        name = file or os.path.basename(find_checkpoint(spec))
    except FileNotFoundError:
        name = 'ckpt.pt'
    if not os.path.isfile(os.path.join(spec, name)):
        raise CheckpointError(f"init_from='{spec}' has no {name if file else 'best.pt or ckpt.pt'}: train that run "
                              f"first" + (" (it is the base model of this LoRA run)" if file else ''))
    path = f"{spec}/{name}"
    base = read_checkpoint(os.path.join(spec, name))
    if base.get('model_type') != model_type or (base['tokenizer']['spec'], base['tokenizer']['blob']) != \
            (tok.spec, tok.blob):
        raise CheckpointError(f"{path} is a '{base.get('model_type')}' model with tokenizer "
                              f"'{base['tokenizer']['spec']}'; this run has model_type '{model_type}' and data "
                              f"tokenized with '{tok.spec}': they must match")
    if 'lora' in base:
        raise CheckpointError(f"{path} holds only LoRA adapters: start from a LoRA run's merged best.pt (written "
                              f"with merge_lora_on_save=True)")
    base['path'] = path
    return None, base, f"initialising from {path} (iteration {base.get('iter_num', '?')})"


# ---------------------------------------------------------------------------- a training run's files
def padded_vocab(n):
    """A vocabulary of n tokens rounded up to a multiple of 64: room for the chat tokens, and faster matmuls."""
    return 64 * math.ceil(n / 64)


def new_model_args(c, data_vocab):
    """model_args of a new model (train.py's init_from='scratch') from a train.py config `c` (a dict): the shape keys
    of its model_type (a Llama preset instead, if c['preset'] names one), block_size, dropout; vocab_size 0 means
    padded_vocab(data_vocab). Raises CheckpointError for an unknown preset."""
    from model_llama import PRESETS
    args = dict(block_size=c['block_size'], dropout=c['dropout'],
                vocab_size=c['vocab_size'] or padded_vocab(data_vocab))
    if c['model_type'] == 'rwkv7':
        return dict(args, n_layer=c['n_layer'], n_embd=c['n_embd'], head_size=c['head_size'], dim_ffn=c['dim_ffn'])
    if c['preset'] and c['preset'] not in PRESETS:
        raise CheckpointError(f"unknown preset '{c['preset']}': choose one of {', '.join(PRESETS)}")
    shape = PRESETS[c['preset']] if c['preset'] else {k: c[k] for k in ('n_layer', 'n_head', 'n_kv_head', 'n_embd')}
    return dict(args, **shape, intermediate_size=c['intermediate_size'], rope_theta=c['rope_theta'],
                norm_eps=c['norm_eps'], tie_embeddings=c['tie_embeddings'], qkv_bias=c['qkv_bias'])


def read_train_state(path):
    """read_checkpoint of a ckpt.pt to resume from (or roll back to); also raises CheckpointError without iter_num."""
    ck = read_checkpoint(path, hint="; with keep_last, an older ckpt_<iter>.pt copied over it resumes from there")
    if 'iter_num' not in ck:
        raise CheckpointError(f"{path} is not a train.py checkpoint (no iter_num)")
    return ck


def start_model(c, tok, data_vocab):
    """The model a training run starts from, as train.py's config `c` (a dict) says, printing what it loaded:
    init_from='resume' -> out_dir/ckpt.pt, checked against c (model type, tokenizer tok, optimizer; a LoRA run is
    rebuilt on its own base); another run's out_dir or a pretrained spec -> load_base; 'scratch' -> a new model of
    new_model_args. With lora_r > 0 (or a LoRA run resumed) the model gets its adapters (lora.setup_lora; resumed:
    their weights, the base checked). Returns (model on the CPU in train mode, model_args with derived values filled
    in, the checkpoint to resume from or None, the LoRA settings of a LoRA run or None). Raises CheckpointError naming
    the problem and the fix."""
    import dataclasses
    init_from, out_dir, model_type = c['init_from'], c['out_dir'], c['model_type']
    ck = lora_run = base = pretrained = None
    if init_from == 'resume':
        path = os.path.join(out_dir, 'ckpt.pt')
        if not os.path.isfile(path):
            raise CheckpointError(f"init_from='resume' but {path} does not exist: train from scratch first or fix "
                                  f"--out_dir")
        ck = read_train_state(path)
        if ck.get('model_type') != model_type:
            raise CheckpointError(f"{path} holds a '{ck.get('model_type')}' model, not '{model_type}': set "
                                  f"--model_type")
        model_args = ck['model_args']
        if ck['tokenizer']['spec'] != tok.spec or ck['tokenizer']['blob'] != tok.blob:
            raise CheckpointError(f"{path} was trained with tokenizer '{ck['tokenizer']['spec']}', but "
                                  f"{c['data_dir']} holds data tokenized with '{tok.spec}': resume on the run's own "
                                  f"data_dir")
        for k, default in (('optim', 'adamw'), ('muon_targets', '')):  # muon_targets shape Muon's state
            if ck['config'].get(k, default) != c[k] and (k == 'optim' or c['optim'] == 'muon'):
                raise CheckpointError(f"{path} was trained with {k}='{ck['config'].get(k, default)}': resume with it")
        lora_run = ck.get('lora')
        if lora_run and c['fsdp']:
            raise CheckpointError(f"{path} is a LoRA run: resume it without fsdp (DDP)")
        if lora_run is None and c['lora_r']:
            raise CheckpointError(f"{path} is a full-training checkpoint: to LoRA-fine-tune it, start a new run with "
                                  f"--init_from={out_dir} and another --out_dir")
        print("resuming: the model's shape comes from the checkpoint; shape keys given now are ignored"
              + ("; so do the LoRA settings and the base model" if lora_run else ''))
    base_from = lora_run['base']['init_from'] if lora_run else init_from
    if base_from not in ('scratch', 'resume'):  # a LoRA run's base is the file it was trained on
        pretrained, base, what = load_base(
            base_from, model_type, tok, c['data_dir'], lora_run['base']['file'] if lora_run else None,
            block_size=c['block_size'], dropout=c['dropout'], vocab_size=padded_vocab(data_vocab),
            wkv_impl=c['wkv_impl'], chunk_len=c['chunk_len'])
        if not lora_run:
            model_args = base['model_args'] if base else dataclasses.asdict(pretrained.config)
        print(what + ("; a fresh optimizer" if base and init_from != 'resume' else ''))
    if base_from == 'scratch' and init_from != 'resume':
        model_args = new_model_args(c, data_vocab)
    if model_args['vocab_size'] < data_vocab:
        raise CheckpointError(f"vocab_size {model_args['vocab_size']} is smaller than the tokenizer's {data_vocab} "
                              f"({c['data_dir']}): leave vocab_size=0 to size it from the data")
    if c['block_size'] > model_args['block_size']:
        raise CheckpointError(f"block_size {c['block_size']} is longer than the model's context of "
                              f"{model_args['block_size']} tokens: set --block_size={model_args['block_size']} or less")
    if model_type == 'rwkv7':  # the WKV implementation is a run-time choice, also on resume
        model_args.update(wkv_impl=c['wkv_impl'], chunk_len=c['chunk_len'])
    try:
        Model, Config = model_class(model_type)
        model = pretrained if pretrained is not None else Model(Config(**model_args))
    except (ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"bad model shape: {e}") from None
    if base is not None:
        model.load_state_dict(base['model'])
    elif ck is not None and lora_run is None:
        model.load_state_dict(ck['model'])
    model_args = dataclasses.asdict(model.config)  # with derived values (intermediate_size, LoRA ranks) filled in
    print(f"model: {model.get_num_params() / 1e6:.2f}M parameters, {json.dumps(model_args)}")
    lora = None
    if c['lora_r'] or lora_run:  # adapters on the frozen base: new ones, or the resumed run's
        from lora import LoRAError, new_settings, setup_lora
        lora = lora_run or new_settings(c, os.path.basename(base['path']) if base else None)
        try:
            print(setup_lora(model, lora, ck['model'] if lora_run else None))
        except LoRAError as e:
            raise CheckpointError(str(e)) from None
    return model, model_args, ck, lora


def check_new_run(out_dir, overwrite=False):
    """A run that does not resume writes out_dir's files afresh: raise CheckpointError if out_dir already holds
    another run's checkpoint (ckpt.pt or best.pt) and overwrite is False, so that a new run killed early never leaves
    neither run (nanoGPT replaces it silently). The message names the three ways on."""
    held = [f for f in ('ckpt.pt', 'best.pt') if os.path.isfile(os.path.join(out_dir, f))]
    if held and not overwrite:
        raise CheckpointError(f"out_dir '{out_dir}' already holds a run ({' and '.join(held)}): continue it with "
                              f"--init_from=resume, write the new run to another --out_dir, or replace it with "
                              f"--overwrite=True")


def make_out_dir(out_dir, new_run=False):
    """Create the run folder out_dir (with its parents) if it is missing and check that it is writable. Returns
    whether this call created it. new_run (a run that does not resume, after check_new_run): first delete an earlier
    run's files there (ckpt.pt, best.pt, ckpt_<iter>.pt, log.jsonl, config.json, adapter.safetensors), so that the
    folder never mixes two runs. Raises CheckpointError: cannot write into it."""
    made = not os.path.isdir(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError("not writable")
        old = [f for f in os.listdir(out_dir) if re.fullmatch(NUMBERED, f) or f in (
            'ckpt.pt', 'best.pt', 'log.jsonl', 'config.json', 'adapter.safetensors')] if new_run else []
        for f in old:
            os.remove(os.path.join(out_dir, f))
    except OSError as e:
        if made and os.path.isdir(out_dir):
            os.rmdir(out_dir)
        raise CheckpointError(f"cannot write into out_dir '{out_dir}': {e}") from None
    if old:
        print(f"a new run: deleted the earlier run's {', '.join(sorted(old))} in {out_dir}")
    return made


def drop_run_dir(out_dir):
    """Remove the run folder out_dir if it holds no checkpoint (.pt): what a run that failed early leaves behind."""
    import shutil
    if os.path.isdir(out_dir) and not any(f.endswith('.pt') for f in os.listdir(out_dir)):
        shutil.rmtree(out_dir, ignore_errors=True)


def save_run_file(ck, out_dir, name, config, keep=0, previous=None):
    """Write checkpoint dict `ck` to out_dir/name atomically, then out_dir/config.json (the effective config of the
    checkpoints beside it; also atomic); with keep > 0 the file is kept as ckpt_<iter>.pt too (keep_last).
    `previous`: the iteration of the out_dir/name this run wrote before, if any (for the message). On a failed write
    (a full disk) the temp files are removed, the previous files stay as they were, and CheckpointError says so."""
    import errno
    path, cfg = os.path.join(out_dir, name), os.path.join(out_dir, 'config.json')
    try:
        atomic_save(ck, path)
        with open(cfg + '.tmp', 'w') as f:
            json.dump(config, f, indent=2)
        os.replace(cfg + '.tmp', cfg)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as either
        if os.path.lexists(cfg + '.tmp'):
            os.remove(cfg + '.tmp')
        full = any(getattr(x, 'errno', None) == errno.ENOSPC for x in (e, e.__context__, e.__cause__))
        raise CheckpointError(
            f"{'the disk is full' if full else 'cannot write'} while saving {path} ({str(e).splitlines()[0]}): "
            f"removed the partial {path}.tmp; " + (f"the previous {path} (iteration {previous}) is kept as it was"
                                                   if previous is not None else f"no earlier {name} of this run")
            + ". Free some space and resume with --init_from=resume") from None
    if keep:
        keep_last(path, ck['iter_num'], keep)
