"""
Token shards on disk, in llm.c's format, shared by prepare.py (writes) and train.py / bench.py (read).

A shard `train_000.bin` is a header of 256 little-endian int32 -- [0] magic 20240520, [1] version (1: uint16 tokens,
2: uint32 tokens), [2] number of tokens, the rest zero -- followed by the tokens. Every data folder has a
`meta.json` with the tokenizer spec, vocab_size, token counts and dtype. Reading checks everything it can: a wrong
magic, an unknown version, a truncated file and token ids beyond the model's vocabulary are errors that say the fix.
Also how train.py makes rows of chat examples: packed (pack_examples) or one per row, grouped by length (length_bands,
draw_by_length).
"""

import glob
import json
import os
import re

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


def pack_examples(tokens, masks, examples, picks, length, pad_id, lookahead=8):
    """Rows of `length` tokens for supervised training. Row b starts at example picks[b], then takes whole examples
    from the `lookahead` that follow it, in order, each that still fits (first fit: a short example fills the gap a
    long one leaves, ~72% -> ~79% of sp:512 gsm_synth rows used at length 513); an example longer than a row is truncated;
    the rest is pad_id with mask 0. tokens, masks: lists of shard arrays; examples: (n, >=3) int array of
    (shard, start, length) rows. Returns (ids, learn, n_truncated): int64 and bool arrays of shape
    (len(picks), length), and a count."""
    ids = np.full((len(picks), length), pad_id, dtype=np.int64)
    learn = np.zeros((len(picks), length), dtype=bool)
    truncated = 0
    for b, first in enumerate(picks):
        pos = 0
        for i in range(first, first + 1 + lookahead):
            s, start, n = examples[i % len(examples)][:3]
            if pos + n > length and pos > 0:
                continue
            take = min(n, length - pos)
            truncated += take < n
            ids[b, pos:pos + take] = tokens[s][start:start + take]
            learn[b, pos:pos + take] = masks[s][start:start + take]
            pos += take
            if pos == length:
                break
    return ids, learn, truncated


def length_bands(lengths, block_size, width=32):
    """Examples grouped by length for train.py's group_by_length: band k holds the examples whose inputs (length - 1
    tokens) fit in band_len[k] = min(width * (k + 1), block_size) tokens; longer ones go to the last band (to be
    truncated). lengths: int array (n,). Returns (band_len, members): a list of ints and, per band, the sorted int64
    indices of its examples."""
    band_len = [min(width * (k + 1), block_size) for k in range((block_size - 1) // width + 1)]
    band = np.clip((np.asarray(lengths) - 2) // width, 0, len(band_len) - 1)
    return band_len, [np.flatnonzero(band == k) for k in range(len(band_len))]


def draw_by_length(band_len, members, n, tokens, gen):
    """The examples of one batch of rows of one example each, all of one band: band k is drawn with a probability
    proportional to its examples among the first n x band_len[k], then tokens // band_len[k] of those examples
    (uniformly, with replacement): in expectation each of the first n examples is drawn equally often, whatever its
    length. gen: a torch.Generator (the draws are reproducible). Returns an int64 tensor of example indices."""
    import torch  # here only: prepare.py uses this file without torch
    counts = [int(np.searchsorted(m, n)) for m in members]
    k = int(torch.multinomial(torch.tensor([c * L for c, L in zip(counts, band_len)], dtype=torch.float64), 1,
                              generator=gen))
    rows = torch.randint(counts[k], (max(1, tokens // band_len[k]),), generator=gen)
    return torch.from_numpy(members[k][rows.numpy()])
