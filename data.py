"""
Training batches from a prepared data folder (prepare.py): what train.py draws each step. It owns the sampling of
token windows (plain text) and of chat examples (curriculum, grouping by length) and the building of rows (packing
whole examples, loss masks); the on-disk format (shards, masks, example indexes) is shards.py's.

    batches = Batches(data_dir, meta, vocab_size, block_size, batch_size, curriculum=False, group_by_length=False)
    picks = batches.draw('train', generator, iter_num, tokens_per_iter)   # the random part, from a torch.Generator
    X, Y = batches.get('train', picks, device)                            # int64 (rows, length), Y = -1 unlearned

Drawing and building are split so that every DDP rank draws the same global batch (the same generator state) and
builds only its own share of it. Also here: perplexity(), a model's loss and bits per byte on a folder's val split
or a text file, as bench.py --task=perplexity and train.py --eval_only report it.
"""

import os

import numpy as np
import torch

from configurator import ConfigError
from shards import DataError, load_split, read_shard, shard_name


class Batches:
    """The train and val splits of data_dir, ready to batch. Plain data: windows of block_size + 1 tokens anywhere
    inside one shard. Chat data (meta format 'chat'): examples (shard, start, length, difficulty) with loss masks,
    sorted easiest first when curriculum is on; with group_by_length, grouped in bands of lengths (length_bands).
    Raises DataError for missing, malformed or too-short data (the message names the fix). `truncated` counts the
    training examples cut to fit a row so far."""

    def __init__(self, data_dir, meta, vocab_size, block_size, batch_size, curriculum=False, group_by_length=False):
        self.meta, self.block_size, self.batch_size = meta, block_size, batch_size
        self.curriculum, self.group_by_length = curriculum, group_by_length
        self.sft = meta.get('format') == 'chat'  # supervised examples with loss masks (prepare.py --format=chat)
        self.truncated = 0
        data = self.data = {sp: load_split(data_dir, sp, vocab_size) for sp in ('train', 'val')}
        if self.sft:
            try:
                self.masks = {sp: [read_shard(os.path.join(data_dir, shard_name(sp, i, 'mask')))
                                   for i in range(len(data[sp]))] for sp in data}
                self.examples = {sp: np.concatenate([np.column_stack([np.full(len(ix), i), ix]) for i, ix in enumerate(
                    np.load(os.path.join(data_dir, shard_name(sp, i, 'idx'))) for i in range(len(data[sp])))])
                    for sp in data}
            except FileNotFoundError as e:  # a chat data folder without its mask or index files
                raise DataError(f"{e}: prepare the data again") from None
            if curriculum:
                train = self.examples['train']
                self.examples['train'] = train[np.argsort(train[:, 3], kind='stable')]
        # a window of block_size + 1 tokens starts anywhere it fits inside one shard
        self.starts = {sp: np.array([max(len(s) - block_size, 0) for s in shards]) for sp, shards in data.items()}
        for sp in data:
            if self.starts[sp].sum() == 0 and not self.sft:
                raise DataError(f"the {sp} split of {data_dir} has no shard of at least block_size + 1 = "
                                f"{block_size + 1} tokens: lower block_size or prepare more data")
            if self.sft and not len(self.examples[sp]):
                raise DataError(f"the {sp} split of {data_dir} has no examples: prepare more data")
        self.cum_starts = {sp: np.cumsum(self.starts[sp]) for sp in self.starts}  # window starts across shards
        if self.sft and group_by_length:  # (band_len, members) of each split
            self.bands = {sp: length_bands(self.examples[sp][:, 2], block_size) for sp in self.examples}

    def draw(self, split, gen, iter_num=0, tokens_per_iter=0):
        """The random part of a batch from torch.Generator gen: batch_size window starts (token data) or first
        examples (chat data), an int64 tensor. With curriculum, the first epoch (iter_num * tokens_per_iter tokens
        of train_tokens) draws from the easiest share of the examples, a share that grows to all of them. With
        group_by_length, ~batch_size * block_size tokens of examples of one band of lengths (draw_by_length)."""
        if not self.sft:
            return torch.randint(int(self.cum_starts[split][-1]), (self.batch_size,), generator=gen)
        share = min(1.0, (iter_num + 1) * tokens_per_iter / self.meta['train_tokens']) \
            if self.curriculum and split == 'train' else 1
        n = max(self.batch_size, int(len(self.examples[split]) * share))  # examples[:n] may be drawn
        if not self.group_by_length:
            return torch.randint(n, (self.batch_size,), generator=gen)
        return draw_by_length(*self.bands[split], n, self.batch_size * self.block_size, gen)

    def get(self, split, picks, device):
        """The (X, Y) batch of picks (from draw): int64, shape (rows, length), on `device`; Y is X shifted by one
        token. Plain data: batch_size windows of block_size. Chat data: rows start at an example and pack whole
        examples one after another while they fit in block_size + 1 tokens (an example is never split; one longer
        than a row is truncated and counted), the rest padded (group_by_length: one example per row, rows as long as
        the band's longest allowed); Y is -1 wherever the mask says the token is not learned."""
        if self.sft:
            length = self.block_size + 1  # group_by_length: one example per row, to the end of the picks' band
            if self.group_by_length:
                longest = int(self.examples[split][picks.numpy(), 2].max())
                length = next((L for L in self.bands[split][0] if L >= longest - 1), self.block_size) + 1
            rows, learn, cut = pack_examples(self.data[split], self.masks[split], self.examples[split], picks.tolist(),
                                             length, self.meta['eot_id'], lookahead=0 if self.group_by_length else 8)
            self.truncated += cut if split == 'train' else 0
            x, y = torch.from_numpy(rows[:, :-1]), torch.from_numpy(np.where(learn[:, 1:], rows[:, 1:], -1))
        else:
            cum, pick = self.cum_starts[split], picks.numpy()
            shard_of = np.searchsorted(cum, pick, side='right')
            offsets = pick - (cum - self.starts[split])[shard_of]
            rows = np.stack([self.data[split][s][o:o + self.block_size + 1]
                             for s, o in zip(shard_of, offsets)]).astype(np.int64)
            x, y = torch.from_numpy(rows[:, :-1]), torch.from_numpy(rows[:, 1:])
        if str(device).startswith('cuda'):
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)


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
    counts = [int(np.searchsorted(m, n)) for m in members]
    k = int(torch.multinomial(torch.tensor([c * L for c, L in zip(counts, band_len)], dtype=torch.float64), 1,
                              generator=gen))
    rows = torch.randint(counts[k], (max(1, tokens // band_len[k]),), generator=gen)
    return torch.from_numpy(members[k][rows.numpy()])


# ---------------------------------------------------------------------------- perplexity: bench.py, train.py --eval_only
def doc_start(tok):
    """The token a document starts with, as in training: the tokenizer's BOS where it has one (Llama 2's <s>), else
    end-of-text (documents follow one another after it)."""
    return tok.eot_id if tok.bos_id is None else tok.bos_id


def read_text(path):
    """The contents of a UTF-8 text file; ConfigError naming the file when it is not UTF-8."""
    try:
        return open(path, encoding='utf-8').read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e}); convert it, e.g. iconv -t utf-8") from None


def perplexity(model, tok, where, name, *, text=False, batch_size=16, limit=0, device='cpu'):
    """Loss (nats per counted token), perplexity and bits per byte of `model` (tokenizer `tok`; `name` for the
    printed table) on a text file (text=True) or on the val shards of the data folder `where`. Plain data:
    consecutive windows of block_size tokens (every token but the first predicted once). Chat data (mask shards):
    each example on its own from its start, only its supervised tokens counted. bits/byte = total nats / ln 2 /
    UTF-8 bytes of the decoded counted tokens (special tokens as their text). limit: the first `limit` windows or
    examples (0 = all). Prints a table; returns {'ckpt', 'data', 'counted', 'tokens', 'loss', 'perplexity', 'bytes',
    'bits_per_byte'}. Raises ConfigError for missing or mismatched data (train.py --eval_only calls it too)."""
    import math
    import torch.nn.functional as F
    from bench_perf import table
    from shards import load_meta
    from tokenizer import get_tokenizer
    L = model.config.block_size
    rows = []  # (x, y, joined): y = -1 where not counted; joined: its counted tokens continue the previous row's

    def full():
        return limit and len(rows) >= limit

    def windows(tokens):
        for s in range(0, len(tokens) - 1, L):
            if full():
                return
            w = np.asarray(tokens[s:s + L + 1], dtype=np.int64)
            rows.append((w[:-1], w[1:], s > 0))
    if text:
        if not os.path.isfile(where):
            raise ConfigError(f"--data='{where}' not found: a text file to measure perplexity on")
        windows([doc_start(tok)] + tok.encode(read_text(where), special=False))
        counted = 'every token (consecutive windows of block_size)'
    else:
        try:
            meta, shards = load_meta(where), load_split(where, 'val', model.config.vocab_size)
            data_tok = get_tokenizer(meta['tokenizer'], where)
        except (DataError, FileNotFoundError, ValueError) as e:
            raise ConfigError(f"{e} (or give --data=file.txt or --data_dir)") from None
        if (data_tok.spec, data_tok.blob) != (tok.spec, tok.blob):
            raise ConfigError(f"{where} was tokenized with another tokenizer ('{data_tok.spec}') than the run's "
                              f"('{tok.spec}'{', another model' if data_tok.spec == tok.spec else ''}): prepare the "
                              f"data again with the run's tokenizer, or give --data=file.txt")
        chat_data = meta.get('format') == 'chat'
        counted = 'supervised tokens (assistant replies, mask_val_*.bin), each example from its start' if chat_data \
            else 'every token (consecutive windows of block_size)'
        for i, s in enumerate(shards):
            if not chat_data:
                windows(s)
                continue
            m = read_shard(os.path.join(where, shard_name('val', i, 'mask')))
            for start, n in np.load(os.path.join(where, shard_name('val', i, 'idx')))[:, :2].tolist():
                if full():
                    break
                ex, learn = np.asarray(s[start:start + n][:L + 1], np.int64), np.asarray(m[start:start + n][:L + 1])
                rows.append((ex[:-1], np.where(learn[1:] > 0, ex[1:], -1), False))
    runs = []  # the counted tokens as contiguous runs, decoded whole for the byte count
    for _, y, joined in rows:
        pieces = [r.tolist() for r in np.split(y, np.flatnonzero(np.diff(y == -1)) + 1) if len(r) and r[0] != -1]
        if joined and runs and pieces and y[0] != -1:
            runs[-1] += pieces.pop(0)
        runs += pieces
    nats, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = rows[i:i + batch_size]
            Tm = max(len(x) for x, _, _ in batch)
            x = torch.zeros(len(batch), Tm, dtype=torch.long)
            y = torch.full((len(batch), Tm), -1, dtype=torch.long)
            for b, (xs, ys, _) in enumerate(batch):  # right padding: a causal model's earlier positions never see it
                x[b, :len(xs)], y[b, :len(ys)] = torch.from_numpy(xs), torch.from_numpy(ys)
            logits = model(x.to(device))[0]
            nats += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), ignore_index=-1,
                                    reduction='sum').item()
            count += int((y != -1).sum())
    if count == 0:
        raise ConfigError(f"no tokens to count in {where}")
    nbytes = sum(len(tok.decode(r).encode('utf-8')) for r in runs)
    loss = nats / count
    print(f"\nperplexity of {name} on {where}: {counted}\n")
    table(['data', 'tokens', 'loss (nats/token)', 'perplexity', 'bytes', 'bits/byte'],
          [[where, f"{count:,}", f"{loss:.4f}", f"{math.exp(loss):.3f}", f"{nbytes:,}",
            f"{nats / math.log(2) / nbytes:.4f}"]])
    return {'ckpt': name, 'data': where, 'counted': counted, 'tokens': count, 'loss': loss,
            'perplexity': math.exp(loss), 'bytes': nbytes, 'bits_per_byte': nats / math.log(2) / nbytes}
