"""
Token shards on disk, in llm.c's format, shared by prepare.py (writes) and train.py / bench.py (read).

A shard `train_000.bin` is a header of 256 little-endian int32 -- [0] magic 20240520, [1] version (1: uint16 tokens,
2: uint32 tokens), [2] number of tokens, the rest zero -- followed by the tokens. Every data folder has a
`meta.json` with the tokenizer spec, vocab_size, token counts and dtype. Reading checks everything it can: a wrong
magic, an unknown version, a truncated file and token ids beyond the model's vocabulary are errors that say the fix.
Chat data adds per shard a loss mask and an example index (shard_name). How rows are made of them is data.py's.
A data folder is replaced atomically (side, swap_in, recover, carry_over): prepare.py's re-runs never lose data.
"""

import glob
import json
import os
import re
import shutil

import numpy as np

MAGIC, HEADER_INTS = 20240520, 256
VERSIONS = {1: np.uint16, 2: np.uint32}


class DataError(ValueError):
    """Bad or missing data on disk; the message names the file and the fix."""


def dtype_for_vocab(vocab_size):
    """(version, numpy dtype) of the smallest token type that holds ids < vocab_size."""
    return (1, np.uint16) if vocab_size <= 2 ** 16 else (2, np.uint32)


def write_shard(path, tokens, vocab_size):
    """Write tokens (1-D int array) to `path` atomically (temp file + rename)."""
    version, dtype = dtype_for_vocab(vocab_size)
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise DataError(f"token ids must be in [0, {vocab_size}), got [{tokens.min()}, {tokens.max()}]")
    header = np.zeros(HEADER_INTS, dtype='<i4')
    header[:3] = MAGIC, version, len(tokens)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.dtype(dtype).newbyteorder('<'), copy=False).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_shard(path):
    """Memory-map a shard: a read-only 1-D numpy array (uint16 or uint32). Raises DataError if the file is not a
    shard, has an unknown version, or is shorter or longer than its header says."""
    if not os.path.isfile(path):
        raise DataError(f"shard {path} not found: run prepare.py to create it")
    size = os.path.getsize(path)
    if size < HEADER_INTS * 4:
        raise DataError(f"shard {path} is truncated ({size} bytes, shorter than the 1024-byte header): "
                        f"delete its folder and run prepare.py again")
    header = np.fromfile(path, dtype='<i4', count=HEADER_INTS)
    if header[0] != MAGIC:
        raise DataError(f"{path} is not a token shard (magic {header[0]}, expected {MAGIC}): "
                        f"was it written by prepare.py? Run prepare.py again")
    if header[1] not in VERSIONS:
        raise DataError(f"shard {path} has unknown version {header[1]} (known: {sorted(VERSIONS)})")
    dtype = np.dtype(VERSIONS[int(header[1])]).newbyteorder('<')
    expected = HEADER_INTS * 4 + int(header[2]) * dtype.itemsize
    if size != expected:
        raise DataError(f"shard {path} is {'truncated' if size < expected else 'too long'}: header says "
                        f"{header[2]} tokens ({expected} bytes), file has {size} bytes. Run prepare.py again")
    return np.memmap(path, dtype=dtype, mode='r', offset=HEADER_INTS * 4, shape=(int(header[2]),))


def prepare_command(data_dir):
    """The prepare.py command that writes `data_dir` when it has prepare.py's default name data/<dataset>_<tokenizer
    tag> ('data/gsm_synth_sp512' -> 'python prepare.py --dataset=gsm_synth --tokenizer=sp:512'), else an example."""
    m = re.fullmatch(r'(?:\./)?data/([\w.-]+?)_(sp\d+|byte|gpt2)', data_dir.rstrip('/'))
    if not m:
        return "e.g. python prepare.py --dataset=shakespeare --tokenizer=byte --data_dir=" + data_dir
    tokenizer = f"sp:{m[2][2:]}" if m[2].startswith('sp') else m[2]
    return f"python prepare.py --dataset={m[1]} --tokenizer={tokenizer}"


def load_meta(data_dir):
    """The data folder's meta.json as a dict. Raises DataError if the folder or file is missing."""
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        raise DataError(f"no prepared data in '{data_dir}' ({path} missing): run prepare.py first, "
                        f"{prepare_command(data_dir)}, or set --data_dir")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is corrupt ({e}): run prepare.py again") from None


def shard_name(split, i, kind=''):
    """The file name of shard i of split ('train' | 'val') in a data folder: kind '' its tokens (train_000.bin),
    'mask' the chat data's parallel loss mask (mask_train_000.bin: 1 where the token is learned), 'idx' its example
    index (idx_train_000.npy: int64 rows of start, length, difficulty; examples never span shards)."""
    return {'': f'{split}_{i:03d}.bin', 'mask': f'mask_{split}_{i:03d}.bin', 'idx': f'idx_{split}_{i:03d}.npy'}[kind]


def load_split(data_dir, split, vocab_size=None):
    """All shards of `split` ('train' or 'val') in data_dir as a list of memmaps. With vocab_size, checks that every
    token id is < vocab_size (the model's vocabulary) and raises DataError naming the shard otherwise."""
    paths = sorted(glob.glob(os.path.join(data_dir, f'{split}_*.bin')))
    if not paths:
        raise DataError(f"no {split}_*.bin shards in '{data_dir}': run prepare.py (with a val split for 'val')")
    shards = [read_shard(p) for p in paths]
    if vocab_size is not None:
        for p, s in zip(paths, shards):
            top = int(s.max()) if len(s) else -1
            if top >= vocab_size:
                raise DataError(f"shard {p} has token id {top} >= the model's vocab_size {vocab_size}: the data was "
                                f"prepared with another tokenizer than this model's; prepare it again or set vocab_size")
    return shards


# the entries of a data folder that prepare.py writes (shard_name's, meta.json, tokenizer, test.jsonl): a re-run
# replaces them and keeps everything else
OWN = re.compile(r'meta\.json|tokenizer\.(model|json)|test\.jsonl|(mask_|idx_)?(train|val)_.*\.(bin|npy)|.*\.tmp')


# ---------------------------------------------------------------------------- replacing a data folder
# prepare.py writes new data into side(target, 'new'), then swaps it in by two renames: a failure never leaves a
# folder missing or mixed
def side(target, kind):
    """The temp ('new') or backup ('old') folder beside target: same parent, so renames stay on one filesystem."""
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.prepare-{kind}")


def recover(target):
    """Clean up after a run that was killed (SIGKILL, power loss) before it could: remove its temp folder; if it died
    between swap_in's two renames, move the old data back (target missing) or finish deleting it (target present)."""
    old = side(target, 'old')
    if os.path.isdir(old) and not os.path.exists(target):
        os.rename(old, target)
        print(f"restored '{target}' from '{old}', left by a run that was killed while replacing it")
    for path in (old, side(target, 'new')):
        shutil.rmtree(path, ignore_errors=True)


def carry_over(old, new):
    """Hard-link (or copy) into folder `new` what folder `old` (if any) holds besides prepared data (OWN, the files
    prepare.py writes): a user's files, a downloaded source. What the new run wrote wins over an entry of the same
    name."""
    def link(src, dst):
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:  # no hard links here (another filesystem below, FAT, ...)
            shutil.copy2(src, dst, follow_symlinks=False)
    for name in os.listdir(old) if os.path.isdir(old) else []:
        src, dst = os.path.join(old, name), os.path.join(new, name)
        if OWN.fullmatch(name) or os.path.lexists(dst):
            continue
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True, copy_function=link)
        else:
            link(src, dst)


def fsync_path(path):
    if os.name == 'posix' or os.path.isfile(path):  # folders cannot be opened for fsync on Windows
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def swap_in(new, target):
    """Replace folder target by folder new (beside it): fsync new's files and folders, rename target to the backup,
    new to target. A crash between the renames leaves no target and both folders beside it: recover() puts the old
    data back. The caller deletes the backup. Raises OSError; target is then as it was."""
    for d, _, files in os.walk(new):
        for path in [os.path.join(d, f) for f in files if not os.path.islink(os.path.join(d, f))] + [d]:
            fsync_path(path)
    old = side(target, 'old')
    if os.path.exists(target):
        os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        if os.path.exists(old) and not os.path.exists(target):
            os.rename(old, target)
        raise
    fsync_path(os.path.dirname(target))
