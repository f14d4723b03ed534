"""
Prepare a dataset for training: read text -> tokenize -> write uint16/uint32 token shards (llm.c format, see
shards.py) and meta.json into data_dir.

    python prepare.py                                                 # the default: gsm_synth (generated) with sp:1024
    python prepare.py --dataset=shakespeare --tokenizer=byte          # downloads Tiny Shakespeare
    python prepare.py --dataset=shakespeare --source=path/input.txt   # the same from a local copy
    python prepare.py --dataset=tinystories --tokenizer=sp:4096       # HF roneneldan/TinyStories, own SentencePiece
    python prepare.py --dataset=my_corpus/ --text_field=content       # local .txt/.json/.jsonl/.parquet files
    python prepare.py --dataset=HuggingFaceFW/fineweb-edu --split=train --val_fraction=0.001

Sources: a recipe name (shakespeare, tinystories), a Hugging Face dataset id (read with `datasets`, streaming), or
local .txt / .json / .jsonl / .parquet files or folders of them. A .txt file is one document; a record of the
others is one document (its `text_field`). Every document is preceded by the end-of-text token. A single-document
source (Tiny Shakespeare) is split by characters: the last `val_fraction` of the text is val, as nanoGPT does; with
many documents every (1/val_fraction)-th document goes to val, unless the source has its own val split (`val_split`).

Supervised data (--format=chat, and the gsm_synth / gsm8k recipes): conversations rendered in the format of chat.py
to token shards plus parallel loss-mask shards (mask_train_000.bin) and example indexes (idx_train_000.npy):

    python prepare.py --dataset=gsm_synth --tokenizer=byte --show_mask    # generated GSM-style problems
    python prepare.py --dataset=gsm8k --source=path/to/gsm8k              # train.jsonl + test.jsonl
    python prepare.py --format=chat --dataset=my_chats.jsonl --skip_bad   # messages / Alpaca / CoT TSV / ...

Re-running with the same arguments does nothing; another tokenizer into a folder that has data is refused. The data
is written into a temp folder beside data_dir (.<name>.prepare-new) that replaces data_dir only when complete, so a
run that fails or is interrupted leaves data_dir as it was (shards.swap_in, shards.recover).
"""

import glob
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import urllib.request

import numpy as np
from tqdm import tqdm

import gsm_synth
import chat
from chat import read_records, render, to_messages
from configurator import ConfigError, configure
from shards import (DataError, carry_over, dtype_for_vocab, read_shard, recover, shard_name, side, swap_in,
                    write_shard)
from tokenizer import SPECIAL_TOKENS, get_tokenizer, hf_tokenizer_file, tokenizer_from_state, train_sentencepiece

# -----------------------------------------------------------------------------
dataset = 'gsm_synth'     # a recipe (gsm_synth: generated reasoning problems, chat format | gsm8k | shakespeare: Tiny
                          # Shakespeare, downloaded | tinystories: HF roneneldan/TinyStories), a Hugging Face dataset
                          # id, or a local .txt/.json/.jsonl/.parquet file or folder of them
source = ''               # local file/folder to use for a recipe instead of downloading it
tokenizer = ''            # '' = the recipe's own (gsm_synth: sp:1024, shakespeare: byte), else gpt2 | gpt2 (tiktoken)
                          # | byte (UTF-8 bytes) | sp:N (a SentencePiece BPE of N pieces trained on the data; N >= 256
                          # + the distinct characters) | path/to/tokenizer.model | rwkv:<rwkv_vocab_v20230424.txt>
                          # (RWKV World: greedy longest byte match, id 0 = end of text, our specials at 65530-65534)
                          # | hf:<tokenizer.json, model folder or hub id> (a model's own, copied into the data folder)
data_dir = ''             # output folder (train.py's data_dir); '' = data/<dataset>_<tokenizer>
text_field = 'text'       # field holding the text in json/jsonl/parquet/HF records
split = 'train'           # split of a Hugging Face dataset to read
val_split = ''            # the source's own validation split (the tinystories recipe: validation); '' = carve
                          # val_fraction out of `split`
val_fraction = 0.1        # without a val split: the last 10% of a single text (as nanoGPT), or every 10th document
shard_size = 100_000_000  # tokens per shard
num_proc = 0              # tokenizer processes; 0 = one per CPU core
sp_train_chars = 200_000_000  # characters of training text used to train an sp:N tokenizer
# supervised (chat) data: --format=chat, or the gsm_synth / gsm8k recipes
format = 'text'           # 'text': documents for pretraining; 'chat': conversations with loss masks
system_prompt = chat.SYSTEM_PROMPT
keep_calc = False         # keep GSM8K's <<48/2=24>> calculator annotations in the reasoning
skip_bad = False          # skip (and count) malformed records instead of stopping at the first
show_mask = False         # print one rendered example with the supervised span marked
max_examples = 0          # chat sources: read at most this many training records (val included; 0 = all; the test
                          # file is never cut)
no_reasoning = False      # drop the <think> block from the replies: answers only (an ablation of the reasoning)
synth_train = 100000      # gsm_synth: problems per split, and the generator's knobs
synth_val = 500
synth_test = 500
synth_seed = 0
synth_min_steps = 2       # gsm_synth: operations per problem (bench.py's +1 / +2 step splits go past synth_max_steps)
synth_max_steps = 4
synth_digits = 2          # gsm_synth: numbers in a question have at most this many digits, running totals one more
synth_distractors = 0.0   # gsm_synth: irrelevant sentences with numbers per problem (0.3: one in 30% of problems)
synth_question_first = 0.0  # gsm_synth: the share of problems that ask their question first
synth_made_up = 0.0       # gsm_synth: the share of problems whose name and item are made-up words (never a held-out one)
synth_scratch = True      # gsm_synth: write each computation out digit by digit (gsm_synth.columns) in the reasoning
synth_walk = True         # gsm_synth: the reasoning quotes every sentence of the question in order (walk_lines);
                          # False: only each step's sentence, then solution lines with the name and the item
synth_train_ops = '+-*/'  # gsm_synth: the operations the train split draws from (val and test: always '+-*/');
                          # an operation written twice is drawn twice as often
# -----------------------------------------------------------------------------

RECIPES = {  # name -> (where it comes from, text field, the source's val split)
    'shakespeare': ('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt',
                    'text', ''),
    'tinystories': ('roneneldan/TinyStories', 'text', 'validation'),
    'gsm8k': ('openai/gsm8k', 'question', 'test'),  # chat format; --source=folder with train.jsonl and test.jsonl
    'gsm_synth': ('', 'question', ''),              # chat format, generated (gsm_synth.py), no download
}
CHAT_RECIPES = ('gsm8k', 'gsm_synth')
DEFAULT_TOKENIZER = {'gsm_synth': 'sp:1024', 'shakespeare': 'byte'}  # small vocabularies for small data; else gpt2
EXTENSIONS = ('.txt', '.json', '.jsonl', '.parquet')


def fail(msg):
    print(f"prepare.py: error: {msg}".replace('\n', '\\n'), file=sys.stderr)  # one line, also for values with newlines
    sys.exit(1)


def local_files(path):
    """The readable files at a path: itself, or every file with a known extension below a folder, sorted. Raises
    DataError for a folder without such files or a file of another kind (a .tsv: chat data, named as such)."""
    if os.path.isdir(path):
        found = glob.glob(os.path.join(path, '**', '*'), recursive=True)
        files = sorted(p for p in found if p.endswith(EXTENSIONS))
        if not files:
            raise DataError(f"folder '{path}' has no {'/'.join(EXTENSIONS)} files" + (
                "; its .tsv files hold chat data: add --format=chat" if any(p.endswith('.tsv') for p in found) else ''))
        return files
    if path.endswith('.tsv'):  # chat.read_records reads it as question, answer, rationale columns
        raise DataError(f"cannot read '{path}' as text: a .tsv file holds chat data (question, answer, rationale "
                        f"columns): add --format=chat")
    if not path.endswith(EXTENSIONS):
        raise DataError(f"cannot read '{path}': use a {'/'.join(EXTENSIONS)} file or a folder of them")
    return [path]


def field(rec, where):
    if not isinstance(rec, dict) or text_field not in rec:
        keys = list(rec) if isinstance(rec, dict) else type(rec).__name__
        raise DataError(f"{where}: no '{text_field}' field (has {keys}); set --text_field")
    return str(rec[text_field])


def read_local(path):
    """Yield the documents (strings) of a local file."""
    try:
        if path.endswith('.txt'):
            yield open(path, encoding='utf-8').read()
        elif path.endswith('.jsonl'):
            with open(path, encoding='utf-8') as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rec = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise DataError(f"{path}:{n}: malformed JSON ({e})") from None
                        yield field(rec, f"{path}:{n}")
        elif path.endswith('.json'):
            try:
                recs = json.load(open(path, encoding='utf-8'))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: malformed JSON ({e})") from None
            for n, rec in enumerate(recs if isinstance(recs, list) else [recs]):
                yield field(rec, f"{path} record {n}")
        else:
            import pyarrow.parquet as pq
            try:
                table = pq.read_table(path)
            except Exception as e:  # pyarrow's ArrowInvalid, OSError, ...
                raise DataError(f"{path} is not a readable parquet file ({str(e).splitlines()[0]})") from None
            if text_field not in table.column_names:
                raise DataError(f"{path}: no '{text_field}' column (has {table.column_names}); set --text_field")
            for text in table.column(text_field).to_pylist():
                yield str(text)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}); convert it, e.g. iconv -t utf-8") from None


def read_hub(name, hf_split):
    """Yield the documents of a Hugging Face dataset split, streaming (never the whole set on disk or in memory)."""
    try:
        from datasets import load_dataset
        ds = load_dataset(name, split=hf_split, streaming=True)
        for n, rec in enumerate(ds):
            yield field(rec, f"{name}[{hf_split}] record {n}")
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"could not load Hugging Face dataset '{name}' split '{hf_split}' ({type(e).__name__}: {e}). "
                        f"Offline? Pass local files: --dataset=path/to/files (or --source=... for a recipe)") from None


def download(url, path):
    if not os.path.exists(path):
        print(f"downloading {url}")
        try:
            urllib.request.urlretrieve(url, path + '.part')
        except OSError as e:
            raise DataError(f"could not download {url} ({e}). Offline? Pass a local copy: --source=path/to/file") from None
        os.replace(path + '.part', path)
    return path


# -----------------------------------------------------------------------------
def documents(which):
    """Yield (split, text) for every document of the source: split is 'train' or 'val'."""
    where, name = source or dataset, dataset
    if dataset in RECIPES and not source:
        where = RECIPES[dataset][0]
        if where.startswith('https://'):  # kept in the data folder by an earlier run, else downloaded into the new one
            cached = os.path.join(data_dir, os.path.basename(where))
            where = cached if os.path.isfile(cached) else download(where, os.path.join(_tmp, os.path.basename(where)))
    if os.path.exists(where):
        files = local_files(where)
        docs = (d for f in files for d in read_local(f))
        if len(files) == 1 and files[0].endswith('.txt'):  # one document: split the text itself, as nanoGPT
            text = next(docs)
            if not text:
                raise DataError(f"{files[0]} is empty: there is no text to prepare")
            n = int(len(text) * (1 - val_fraction))
            yield from [('train', text[:n])] + ([('val', text[n:])] if which == 'all' and val_fraction > 0 else [])
            return
    elif '/' in where and not where.startswith(('.', '/')):
        docs = read_hub(where, split)
        if val_split:  # the source's own val split
            yield from (('train', d) for d in docs)
            if which == 'all':
                yield from (('val', d) for d in read_hub(where, val_split))
            return
    else:
        raise DataError(f"dataset '{name}' is not a recipe ({', '.join(RECIPES)}), a local path or a "
                        f"Hugging Face id (owner/name)")
    for i, d in enumerate(docs):  # document i goes to val when the running share of val would fall behind
        sp = 'val' if int((i + 1) * val_fraction) > int(i * val_fraction) else 'train'
        if which == 'all' or sp == which:
            yield sp, d


def encode_doc(item):
    sp, text = item
    return sp, np.array([_tok.eot_id] + _tok.encode(text, special=False), dtype=_dtype)


def init_worker(state, dtype, worker=False):
    global _tok, _dtype
    _tok, _dtype = tokenizer_from_state(state), dtype
    if worker:  # Ctrl-C: the main process stops the pool and cleans up, without a traceback from every worker
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def chat_records():
    """Yield (split, where, record) of a supervised source; split is 'train', 'val' or 'test'."""
    if dataset == 'gsm_synth':
        for sp, n in (('train', synth_train), ('val', synth_val), ('test', synth_test)):
            ops = synth_train_ops if sp == 'train' else gsm_synth.OPS
            for i, p in enumerate(gsm_synth.generate(sp, n, synth_seed, synth_min_steps, synth_max_steps, synth_digits,
                                                     distractors=synth_distractors, question_first=synth_question_first,
                                                     ops=ops, scratch=synth_scratch, made_up=synth_made_up,
                                                     walk=synth_walk)):
                yield sp, f"gsm_synth {sp} {i}", p
        return
    def train_or_val(n):  # every (1/val_fraction)-th training record goes to val
        return 'val' if int((n + 1) * val_fraction) > int(n * val_fraction) else 'train'

    if dataset == 'gsm8k' and not source:
        from datasets import load_dataset
        try:
            for hf in ('train', 'test'):
                for i, rec in enumerate(load_dataset('openai/gsm8k', 'main', split=hf)):
                    if hf == 'train' and max_examples and i >= max_examples:
                        break
                    yield hf if hf == 'test' else train_or_val(i), f"openai/gsm8k {hf} {i}", rec
        except Exception as e:
            raise DataError(f"could not load openai/gsm8k ({type(e).__name__}: {e}). Offline? Pass a folder with "
                            f"train.jsonl and test.jsonl: --source=path") from None
        return
    where = source or dataset
    if not os.path.exists(where):
        raise DataError(f"'{where}' not found: chat data is a recipe ({', '.join(CHAT_RECIPES)}) or local files")
    files = sorted(glob.glob(os.path.join(where, '*'))) if os.path.isdir(where) else [where]
    n = 0
    for f in files:
        test_file = os.path.basename(f).startswith('test')  # GSM8K's test.jsonl is the held-out set
        try:
            for w, rec in read_records(f):
                if not test_file and max_examples and n >= max_examples:
                    break
                sp = 'test' if test_file else train_or_val(n)
                n += 0 if test_file else 1
                yield sp, w, rec
        except UnicodeDecodeError as e:
            raise DataError(f"{f} is not UTF-8 text ({e}); convert it, e.g. iconv -t utf-8") from None


def messages(rec):
    """A record as a conversation (chat.to_messages), without the thinking blocks when no_reasoning is set."""
    msgs = to_messages(rec, keep_calc)
    if no_reasoning:
        msgs = [dict(m, content=re.sub(r'<think>.*?</think>\n*', '', m['content'], flags=re.S)) for m in msgs]
    return msgs


def chat_texts():
    """The training conversations as the tokenizer will see them (system prompt, turns, thinking block and final
    answer, without the special tokens), so a trained SentencePiece model spends few pieces on the fixed frame."""
    for sp, _, rec in chat_records():
        try:
            msgs = messages(rec)
        except (ValueError, KeyError, TypeError):
            continue  # write_chat reports bad records
        if sp == 'train':
            text = '\n'.join([system_prompt or ''] + [m['content'] for m in msgs])
            yield re.sub('|'.join(re.escape(t) for t in SPECIAL_TOKENS), '', text)


def write_chat(tok, args, folder):
    """Render every conversation to (ids, mask) and write into `folder` token shards, parallel mask shards
    (mask_*.bin, same format) and example indexes (idx_*.npy: start, length, difficulty per example; examples never
    span shards). Held-out problems go to test.jsonl ({'question', 'answer'}) for accuracy evaluation. Returns (meta,
    a summary line); raises DataError for a malformed record (without skip_bad) or no training examples."""
    out = {sp: {'ids': [], 'mask': [], 'idx': [], 'shard': 0, 'examples': 0, 'tokens': 0} for sp in ('train', 'val')}
    files, bad, test = [], 0, []

    def flush(sp):
        o = out[sp]
        name, mask, idx = (shard_name(sp, o['shard'], kind) for kind in ('', 'mask', 'idx'))
        write_shard(os.path.join(folder, name), np.array(o['ids']), tok.vocab_size)
        write_shard(os.path.join(folder, mask), np.array(o['mask']), tok.vocab_size)
        np.save(os.path.join(folder, idx), np.array(o['idx'], dtype=np.int64).reshape(-1, 3))
        files.extend([name, mask])
        o.update(ids=[], mask=[], idx=[], shard=o['shard'] + 1)

    for sp, where, rec in tqdm(chat_records(), desc=f"rendering ({tokenizer})", unit=' examples'):
        try:
            msgs = messages(rec)
        except (ValueError, KeyError, TypeError) as e:
            if not skip_bad:
                raise DataError(f"{where}: {e} (--skip_bad=True skips such records)") from None
            bad += 1
            continue
        if sp == 'test':
            test.append({'question': msgs[0]['content'], 'answer': rec.get('answer', msgs[-1]['content'])})
            continue
        ids, mask = render(tok, msgs, system_prompt)
        if show_mask and not out['train']['examples'] and sp == 'train':
            marked = ''.join(('⟦' if m and not p else '⟧' if p and not m else '') + tok.decode([i])
                             for i, m, p in zip(ids, mask, [0] + mask[:-1]))
            print(f"one rendered example, the supervised tokens between ⟦ and ⟧:\n{marked}" + ('⟧' if mask[-1] else ''))
        o = out[sp]
        if len(o['ids']) + len(ids) > shard_size and o['ids']:
            flush(sp)
        o['idx'].append((len(o['ids']), len(ids), rec.get('steps', sum(mask))))  # difficulty: steps or reply length
        o['ids'].extend(ids)
        o['mask'].extend(mask)
        o['examples'] += 1
        o['tokens'] += len(ids)
    if not out['train']['examples']:
        raise DataError(f"dataset '{dataset}' gave no training examples")
    for sp in ('train', 'val'):
        if out[sp]['ids']:
            flush(sp)
    if test:
        with open(os.path.join(folder, 'test.jsonl'), 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in test)
    version, dtype = dtype_for_vocab(tok.vocab_size)
    meta = {'tokenizer': tokenizer, 'vocab_size': tok.vocab_size, 'eot_id': tok.eot_id, 'format': 'chat',
            'dtype': np.dtype(dtype).name, 'version': version, 'system_prompt': system_prompt,
            'train_tokens': out['train']['tokens'], 'val_tokens': out['val']['tokens'],
            'train_examples': out['train']['examples'], 'val_examples': out['val']['examples'],
            'test_examples': len(test), 'skipped_bad': bad, 'files': sorted(files), 'args': args}
    return meta, (f"wrote {meta['train_examples']:,} train / {meta['val_examples']:,} val examples "
                  f"({meta['train_tokens']:,} / {meta['val_tokens']:,} tokens), {len(test):,} test problems, {bad} bad "
                  f"records skipped, to {data_dir}")


def main():
    global data_dir, text_field, val_split, format, tokenizer, _created, _tmp
    format = 'chat' if dataset in CHAT_RECIPES else format
    tokenizer = tokenizer or DEFAULT_TOKENIZER.get(dataset, 'gpt2')
    if format not in ('text', 'chat'):
        raise ConfigError(f"format must be 'text' or 'chat', not '{format}'")
    if dataset in RECIPES:
        text_field = text_field if text_field != 'text' else RECIPES[dataset][1]
        val_split = val_split or (RECIPES[dataset][2] if not source else '')  # local copies carve out val_fraction
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 < shard_size < 2 ** 31:
        raise ConfigError(f"shard_size must be in [1, 2^31) tokens, got {shard_size}")
    if tokenizer.startswith('sp:') and not (tokenizer[3:].isdigit() and int(tokenizer[3:]) > 0):
        raise ConfigError(f"tokenizer '{tokenizer}': sp:N needs a number of pieces, e.g. sp:4096")
    for k in ('num_proc', 'max_examples', 'synth_train', 'synth_val', 'synth_test'):
        if globals()[k] < 0:
            raise ConfigError(f"{k} must be 0 or more, got {globals()[k]}")
    if not 0 <= synth_min_steps <= synth_max_steps:
        raise ConfigError(f"need 0 <= synth_min_steps <= synth_max_steps, got {synth_min_steps} and {synth_max_steps}")
    if not 1 <= synth_digits <= 5 or synth_distractors < 0 or not 0 <= synth_question_first <= 1 \
            or not 0 <= synth_made_up <= 1:
        raise ConfigError(f"need 1 <= synth_digits <= 5 (got {synth_digits}), synth_distractors >= 0 (got "
                          f"{synth_distractors}), 0 <= synth_question_first <= 1 (got {synth_question_first}) and "
                          f"0 <= synth_made_up <= 1 (got {synth_made_up})")
    if sorted(set(synth_train_ops)) != sorted(gsm_synth.OPS):
        raise ConfigError(f"synth_train_ops '{synth_train_ops}' must hold each of {gsm_synth.OPS} (the test mix) and "
                          f"nothing else; repeat one to draw it more often, e.g. '+-*//'")
    if not tokenizer.startswith('sp:'):  # a bad spec or a missing file fails here, before anything is written
        try:
            get_tokenizer(tokenizer)
        except (FileNotFoundError, ValueError):
            raise
        except Exception as e:  # a file that is no tokenizer: SentencePiece's RuntimeError, tokenizers' Exception
            raise ConfigError(f"cannot load tokenizer '{tokenizer}' ({type(e).__name__}: "
                              f"{(str(e).strip().splitlines() or [''])[0][:200]})") from None
    where = source or ('' if dataset in RECIPES else dataset)  # a local source is checked before anything is written
    if where and not os.path.exists(where) and (source or format == 'chat' or where.endswith(EXTENSIONS)
                                                 or where.startswith(('.', '/'))):
        raise DataError(f"{'--source' if source else '--dataset'} '{where}' not found: "
                        + (f"chat data is a recipe ({', '.join(CHAT_RECIPES)}) or local files" if format == 'chat'
                           else f"a local {'/'.join(EXTENSIONS)} file or a folder of them"))
    if where and os.path.exists(where) and format == 'text':
        local_files(where)  # a folder without data files, a file of another kind
    tag = tokenizer.replace(':', '').replace('/', '_') if not tokenizer.endswith('.model') \
        else os.path.splitext(os.path.basename(tokenizer))[0]
    data_dir = data_dir or os.path.join('data', f"{os.path.basename(dataset.rstrip('/')).split('.')[0]}_{tag}")
    args = {k: globals()[k] for k in ('dataset', 'source', 'tokenizer', 'text_field', 'split', 'val_split',
                                   'val_fraction', 'shard_size', 'sp_train_chars', 'format', 'system_prompt',
                                   'keep_calc', 'max_examples', 'no_reasoning', 'skip_bad', 'synth_train', 'synth_val',
                                   'synth_test', 'synth_seed',
                                   'synth_min_steps', 'synth_max_steps', 'synth_digits', 'synth_distractors',
                                   'synth_question_first', 'synth_made_up', 'synth_scratch', 'synth_walk',
                                   'synth_train_ops')}
    if dataset == 'gsm_synth':  # data from an older generator is prepared again
        args['synth_version'] = gsm_synth.VERSION
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError(f"data_dir '{data_dir}' is a file, not a folder: choose another --data_dir")
    target = os.path.realpath(data_dir)  # a symlink to a folder: the folder it points to is replaced, the link stays
    recover(target)
    meta_path = os.path.join(data_dir, 'meta.json')
    if os.path.exists(meta_path):
        try:
            meta = json.load(open(meta_path, encoding='utf-8'))
            why = '' if isinstance(meta, dict) else 'not a JSON object'
        except ValueError as e:  # malformed JSON, not UTF-8
            why = str(e)
        if why:
            raise DataError(f"{meta_path} is corrupt ({why}): delete the folder '{data_dir}' or choose another "
                            f"--data_dir")
        if meta.get('tokenizer') != tokenizer:
            fail(f"'{data_dir}' already holds data tokenized with '{meta.get('tokenizer')}', not '{tokenizer}': "
                 f"choose another --data_dir or delete that folder")
        if meta.get('args') == args:
            try:
                if show_mask:
                    raise DataError('--show_mask renders the data again')
                if meta['tokenizer'].startswith(('sp:', 'hf:')) or meta['tokenizer'].endswith('.model'):
                    get_tokenizer(meta['tokenizer'], data_dir)
                for f in meta['files']:
                    read_shard(os.path.join(data_dir, f))
                print(f"'{data_dir}' is already prepared with these arguments; nothing to do")
                return
            except (DataError, FileNotFoundError) as e:
                print(f"re-preparing: {e}")
    # everything is written into a temp folder beside data_dir that replaces it only when complete (swap_in): until
    # then data_dir is untouched, and a run that fails removes the temp folder and the parents it made (__main__)
    parent = os.path.dirname(target)
    _created = parent  # the outermost folder that makedirs creates
    while not os.path.exists(os.path.dirname(_created)):
        _created = os.path.dirname(_created)
    _created = '' if os.path.exists(parent) else _created
    os.makedirs(parent, exist_ok=True)
    _tmp = side(target, 'new')
    os.mkdir(_tmp)

    if tokenizer.startswith('sp:'):
        n = int(tokenizer[3:])
        print(f"training a SentencePiece BPE tokenizer of {n} pieces")

        def sample():
            total = 0
            texts = (d for _, d in documents('train')) if format == 'text' else chat_texts()
            for d in texts:
                yield d
                total += len(d)
                if total >= sp_train_chars:
                    break
        train_sentencepiece(sample(), n, os.path.join(_tmp, 'tokenizer.model'))
    elif tokenizer.startswith('hf:'):  # keep a copy of tokenizer.json with the data, so the folder is self-contained
        shutil.copyfile(hf_tokenizer_file(tokenizer[3:]), os.path.join(_tmp, 'tokenizer.json'))
    elif tokenizer.endswith('.model'):  # keep a copy with the data (also of data_dir's own copy, read before the swap)
        shutil.copyfile(tokenizer, os.path.join(_tmp, 'tokenizer.model'))
    tok = get_tokenizer(tokenizer, _tmp)
    if format == 'chat':
        meta, summary = write_chat(tok, args, _tmp)
    else:
        meta, summary = write_text(tok, args, _tmp)
    with open(os.path.join(_tmp, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=2)
    carry_over(target, _tmp)
    swap_in(_tmp, target)
    _tmp = _created = ''  # the new data is data_dir now: a failure from here on must not remove it
    shutil.rmtree(side(target, 'old'), ignore_errors=True)
    print(summary)


def write_text(tok, args, folder):
    """Tokenize every document (in num_proc processes) and write train_*.bin / val_*.bin shards of shard_size tokens
    into `folder`. Returns (meta, a summary line); raises DataError for an empty train or val split."""
    version, dtype = dtype_for_vocab(tok.vocab_size)

    buffers, counts, files, ndocs = {'train': [], 'val': []}, {'train': 0, 'val': 0}, [], {'train': 0, 'val': 0}
    filled, shard_idx = {'train': 0, 'val': 0}, {'train': 0, 'val': 0}

    def flush(sp):
        name = shard_name(sp, shard_idx[sp])
        write_shard(os.path.join(folder, name), np.concatenate(buffers[sp]), tok.vocab_size)
        files.append(name)
        buffers[sp], filled[sp] = [], 0
        shard_idx[sp] += 1

    nproc = num_proc or os.cpu_count()
    pool = mp.Pool(nproc, initializer=init_worker, initargs=(tok.state(), dtype, True)) if nproc > 1 else None
    init_worker(tok.state(), dtype)
    results = pool.imap(encode_doc, documents('all'), chunksize=16) if pool else map(encode_doc, documents('all'))
    try:
        with tqdm(desc=f"tokenizing ({tokenizer})", unit='tok', unit_scale=True) as bar:
            for sp, ids in results:
                ndocs[sp] += 1
                counts[sp] += len(ids)
                bar.update(len(ids))
                while len(ids):  # a document may span two shards, as in llm.c
                    take = ids[:shard_size - filled[sp]]
                    buffers[sp].append(take)
                    filled[sp] += len(take)
                    ids = ids[len(take):]
                    if filled[sp] == shard_size:
                        flush(sp)
    finally:  # also on an error or Ctrl-C: no worker outlives the run
        if pool:
            pool.terminate()
    if not counts['train']:
        raise DataError(f"dataset '{dataset}' gave no training text: is the source empty?")
    if val_fraction > 0 and not counts['val']:
        raise DataError(f"no document went to val ({ndocs['train']} documents, val_fraction {val_fraction}): "
                        f"raise --val_fraction or add documents")
    for sp in ('train', 'val'):
        if filled[sp]:
            flush(sp)
    meta = {'tokenizer': tokenizer, 'vocab_size': tok.vocab_size, 'eot_id': tok.eot_id,
            'dtype': np.dtype(dtype).name, 'version': version, 'train_tokens': counts['train'],
            'val_tokens': counts['val'], 'train_docs': ndocs['train'], 'val_docs': ndocs['val'],
            'files': sorted(files), 'args': args}
    return meta, (f"wrote {counts['train']:,} train and {counts['val']:,} val tokens ({ndocs['train']:,} + "
                  f"{ndocs['val']:,} documents, {meta['dtype']}, vocab {tok.vocab_size}) to {data_dir}")


if __name__ == '__main__':
    _created = _tmp = ''
    try:
        config = configure(globals())
        main()
    except BaseException as e:  # any failure, Ctrl-C included: data_dir stays as it was, the new folders go
        for path in (_tmp, _created):
            if path:
                shutil.rmtree(path, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt):
            print('prepare.py: interrupted' + (f": '{data_dir}' is as it was" if _tmp else ''), file=sys.stderr)
            sys.exit(130)
        if not isinstance(e, (ConfigError, DataError, OSError, ValueError)):  # ValueError: from the tokenizer (an
            raise                                                             # unknown spec, sp:N too small)
        fail(str(e))
