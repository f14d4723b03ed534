"""
Training batches from a prepared data folder (prepare.py): what train.py draws each step. It owns the sampling of
token windows (plain text) and of chat examples (curriculum, grouping by length) and the building of rows (packing
whole examples, loss masks); the on-disk format (shards, masks, example indexes) is shards.py's.

    batches = Batches(data_dir, meta, vocab_size, block_size, batch_size, curriculum=False, group_by_length=False)
    picks = batches.draw('train', generator, iter_num, tokens_per_iter)   # the random part, from a torch.Generator
    X, Y = batches.get('train', picks, device)                            # int64 (rows, length), Y = -1 unlearned

Drawing and building are split so that every DDP rank draws the same global batch (the same generator state) and
builds only its own share of it.
"""

import os

import numpy as np
import torch

from shards import DataError, draw_by_length, length_bands, load_split, pack_examples, read_shard


class Batches:
    """The train and val splits of data_dir, ready to batch. Plain data: windows of block_size + 1 tokens anywhere
    inside one shard. Chat data (meta format 'chat'): examples (shard, start, length, difficulty) with loss masks,
    sorted easiest first when curriculum is on; with group_by_length, grouped in bands of lengths (shards.py).
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
                self.masks = {sp: [read_shard(os.path.join(data_dir, f'mask_{sp}_{i:03d}.bin'))
                                   for i in range(len(data[sp]))] for sp in data}
                self.examples = {sp: np.concatenate([np.column_stack([np.full(len(ix), i), ix]) for i, ix in enumerate(
                    np.load(os.path.join(data_dir, f'idx_{sp}_{i:03d}.npy')) for i in range(len(data[sp])))])
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
