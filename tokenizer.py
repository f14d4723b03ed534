"""
Tokenizers shared by prepare.py, train.py, sample.py and bench.py. One spec string picks one:

    gpt2            GPT-2 BPE through tiktoken (50257 ids) + our special tokens appended from id 50257
    byte            raw UTF-8 bytes (ids 0..255) + <|endoftext|> (256) + our special tokens, for char-level runs
    sp:N            a SentencePiece BPE model of N pieces trained on the dataset by prepare.py (specials are
                    control symbols, byte fallback on); saved as tokenizer.model in the data folder
    path/x.model    an existing SentencePiece model (e.g. Llama 2's tokenizer.model); specials appended after it;
                    `bos_id` its <s>, which such models are trained with (not sp:N's, see below)
    rwkv:path       the RWKV World tokenizer (rwkv_vocab_v20230424.txt): greedy longest byte match, id 0 = end of
                    text, our special tokens at ids 65530..65534 (the model vocabulary is padded to 65536)
    hf:path         a Hugging Face tokenizer.json (a file, a model folder holding one, or a hub id) through the
                    `tokenizers` library (Qwen2.5, SmolLM2, Llama 3, ...): its special tokens from added_tokens, its
                    own <|im_start|>/<|im_end|>/<think>/</think> where it has them (ours appended otherwise),
                    end of text its <|endoftext|>, <|end_of_text|> or </s>, `bos_id` the token its post-processor
                    puts first (Llama's <s>), if any

A Tokenizer's `state()` (a small dict, with the SentencePiece model or vocabulary file bytes) is stored in every
checkpoint, so sample.py decodes with exactly the tokenizer the model was trained with.
"""

import ast
import json
import os
import re

SPECIAL_TOKENS = ['<|im_start|>', '<|im_end|>', '<think>', '</think>', '<|pad|>']
EOT = '<|endoftext|>'
HF_EOT = ['<|endoftext|>', '<|end_of_text|>', '</s>', '<eos>']  # the document separator of a tokenizer.json, in order


class Tokenizer:
    """encode(str) -> list[int], decode(list[int]) -> str, plus `vocab_size`, `eot_id` (document separator) and
    `special` {token string: id}. Build one with `get_tokenizer(spec)` or `tokenizer_from_state(state)`."""

    def __init__(self, spec, kind, blob=None):
        self.spec, self.kind, self.blob = spec, kind, blob
        self.bos_id = None  # the token that starts every sequence, for tokenizers that use one (chat.render)
        if kind == 'gpt2':
            import tiktoken
            try:
                base = tiktoken.get_encoding('gpt2')
            except Exception as e:  # offline, no cache: requests' ConnectionError and friends
                raise ValueError(f"could not load tiktoken's GPT-2 files ({type(e).__name__}). Offline? Point "
                                 f"TIKTOKEN_CACHE_DIR at a folder that has them, or use another tokenizer") from None
            n = base.n_vocab  # 50257, <|endoftext|> = 50256
            self.special = {EOT: base.eot_token, **{t: n + i for i, t in enumerate(SPECIAL_TOKENS)}}
            self.enc = tiktoken.Encoding(name='gpt2_tr', pat_str=base._pat_str, mergeable_ranks=base._mergeable_ranks,
                                         special_tokens=self.special)
            self.eot_id, self.vocab_size = base.eot_token, n + len(SPECIAL_TOKENS)
        elif kind == 'byte':
            self.special = {t: 256 + i for i, t in enumerate([EOT] + SPECIAL_TOKENS)}
            self.eot_id, self.vocab_size = 256, 256 + 1 + len(SPECIAL_TOKENS)
        elif kind == 'sp':
            import sentencepiece as spm
            self.sp = spm.SentencePieceProcessor(model_proto=blob)
            n = self.sp.get_piece_size()
            self.eot_id = self.sp.eos_id()
            if self.eot_id < 0:
                raise ValueError(f"SentencePiece model '{spec}' has no end-of-sentence piece; cannot separate documents")
            self.special = {EOT: self.eot_id}
            for t in SPECIAL_TOKENS:  # models trained by prepare.py have them as pieces; others get them appended
                pid = self.sp.piece_to_id(t)
                found = pid != self.sp.unk_id() and self.sp.id_to_piece(pid) == t
                self.special[t] = pid if found else n + sum(v >= n for v in self.special.values())
            self.vocab_size = max(n, max(self.special.values()) + 1)
            # a BOS as the model was trained (llama2.c's tok512, Llama 2), but not for prepare.py's sp:N models (our
            # chat tokens are their pieces): they keep SentencePiece's default <s> yet their runs never saw it
            ours = all(self.special[t] < n for t in SPECIAL_TOKENS)
            self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 and not ours else None
        elif kind == 'rwkv':
            self.vocab, self.trie = {}, {}  # id -> bytes; byte trie whose nodes hold their id under the key None
            for n, line in enumerate(blob.decode('utf-8').splitlines(), 1):
                first, last = line.index(' '), line.rindex(' ')
                tok = ast.literal_eval(line[first + 1:last])
                tok = tok.encode('utf-8') if isinstance(tok, str) else tok
                if len(tok) != int(line[last + 1:]):
                    raise ValueError(f"RWKV vocabulary '{spec}' line {n}: length {len(tok)} != {line[last + 1:]}")
                self.vocab[int(line[:first])] = tok
                node = self.trie
                for byte in tok:
                    node = node.setdefault(byte, {})
                node[None] = int(line[:first])
            n = max(self.vocab) + 1  # 65530: ids 1..65529 in the file, 0 = end of text
            self.special = {EOT: 0, **{t: n + i for i, t in enumerate(SPECIAL_TOKENS)}}
            self.eot_id, self.vocab_size = 0, n + len(SPECIAL_TOKENS)
        elif kind == 'hf':
            try:
                from tokenizers import Tokenizer as HFTokenizer
            except ImportError:
                raise ValueError(f"tokenizer '{spec}' needs Hugging Face's tokenizers: pip install tokenizers") from None
            self.hf = HFTokenizer.from_str(blob.decode('utf-8'))
            self.hf.encode_special_tokens = True  # in text they are text: encode() maps the special strings itself
            vocab = self.hf.get_vocab(with_added_tokens=True)
            eot = next((t for t in HF_EOT if t in vocab), None)
            if eot is None:
                raise ValueError(f"tokenizer '{spec}' has none of {HF_EOT}: no end-of-text token to separate documents")
            self.eot_id, n = vocab[eot], max(vocab.values()) + 1
            self.special = {EOT: vocab[eot], **{t['content']: t['id'] for t in json.loads(blob)['added_tokens']
                                                if t['special']}}
            for t in SPECIAL_TOKENS:  # the model's own chat tokens where it has them (Qwen2.5: <|im_start|>, ...)
                self.special[t] = vocab[t] if t in vocab else n + sum(v >= n for v in self.special.values())
            self.vocab_size = max(n, max(self.special.values()) + 1)
            # BOS as the post-processor adds it (Llama 2, TinyLlama: '<s> $A'; Llama 3: <|begin_of_text|>; Qwen2.5: none)
            plain, full = self.hf.encode('a', add_special_tokens=False).ids, self.hf.encode('a').ids
            self.bos_id = full[0] if full[1:1 + len(plain)] == plain else None
        else:
            raise ValueError(f"unknown tokenizer kind '{kind}'")
        self.special_inv = {v: k for k, v in self.special.items()}  # the model's own name wins over our EOT alias
        self._split = re.compile('(' + '|'.join(re.escape(t) for t in sorted(self.special, key=len, reverse=True))
                                 + ')')

    def encode(self, text, special=True):
        """Text -> token ids. With special=True the strings of `self.special` become their single ids; with
        special=False they are ordinary text (use that for raw corpora that may contain them by accident)."""
        if self.kind == 'gpt2':
            return self.enc.encode(text, allowed_special='all') if special else self.enc.encode_ordinary(text)
        ids = []
        for i, part in enumerate(self._split.split(text) if special else [text]):
            if i % 2 == 1:
                ids.append(self.special[part])
            elif part:
                ids.extend(list(part.encode('utf-8')) if self.kind == 'byte' else self._encode_rwkv(part)
                           if self.kind == 'rwkv' else self.hf.encode(part, add_special_tokens=False).ids
                           if self.kind == 'hf' else self.sp.encode(part))
        return ids

    def _encode_rwkv(self, text):
        """Greedy longest match over the byte trie (the official RWKV World tokenizer's rule)."""
        data, ids, i = text.encode('utf-8'), [], 0
        while i < len(data):
            node, j, best, best_j = self.trie, i, None, i + 1
            while j < len(data) and data[j] in node:
                node = node[data[j]]
                j += 1
                if None in node:
                    best, best_j = node[None], j
            ids.append(best)
            i = best_j
        return ids

    def decode(self, ids):
        """Token ids -> text. Special ids become their strings; ids outside the vocabulary (the model's padding)
        are dropped; invalid UTF-8 becomes U+FFFD."""
        ids = [int(i) for i in ids if 0 <= int(i) < self.vocab_size]
        if self.kind == 'gpt2':
            return self.enc.decode(ids)
        out, run = [], []
        for i in ids:  # runs of ordinary ids decode together (multi-byte characters); specials are ours to print
            if i in self.special_inv:
                out.append(self._decode_plain(run) + self.special_inv[i])
                run = []
            else:
                run.append(i)
        return ''.join(out) + self._decode_plain(run)

    def _decode_plain(self, ids):
        if self.kind == 'rwkv':
            return b''.join(self.vocab[i] for i in ids if i in self.vocab).decode('utf-8', errors='replace')
        if self.kind == 'hf':
            return self.hf.decode(ids, skip_special_tokens=False)
        return bytes(ids).decode('utf-8', errors='replace') if self.kind == 'byte' else self.sp.decode(ids)

    def state(self):
        """A picklable description that `tokenizer_from_state` turns back into this tokenizer."""
        return {'spec': self.spec, 'kind': self.kind, 'blob': self.blob}


def tokenizer_from_state(state):
    """Inverse of Tokenizer.state(); `state` comes from a checkpoint."""
    return Tokenizer(state['spec'], state['kind'], state.get('blob'))


def get_tokenizer(spec, data_dir=None):
    """Tokenizer from a spec string (see module docstring). `sp:N` needs `data_dir`, where prepare.py saved the
    trained model as tokenizer.model. Raises FileNotFoundError / ValueError with a message that says the fix."""
    if spec == 'gpt2':
        return Tokenizer(spec, 'gpt2')
    if spec == 'byte':
        return Tokenizer(spec, 'byte')
    if spec.startswith('sp:'):
        path = os.path.join(data_dir or '.', 'tokenizer.model')
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer '{spec}' is trained by prepare.py into {path}, which does not exist: "
                                    f"run prepare.py with --tokenizer={spec} first")
        return Tokenizer(spec, 'sp', open(path, 'rb').read())
    if spec.startswith('rwkv:'):
        copy = os.path.join(data_dir or '', 'rwkv_vocab.txt')
        path = copy if data_dir and os.path.isfile(copy) else spec[5:]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"RWKV vocabulary file '{spec[5:]}' not found (rwkv:path/rwkv_vocab_v20230424.txt)")
        return Tokenizer(spec, 'rwkv', open(path, 'rb').read())
    if spec.startswith('hf:'):
        copy = os.path.join(data_dir or '', 'tokenizer.json')
        if data_dir and os.path.isfile(copy):  # prepare.py keeps a copy with the data
            return Tokenizer(spec, 'hf', open(copy, 'rb').read())
        return Tokenizer(spec, 'hf', open(hf_tokenizer_file(spec[3:]), 'rb').read())
    if spec.endswith('.model') or os.path.isfile(spec):
        copy = os.path.join(data_dir or '', 'tokenizer.model')
        if data_dir and os.path.isfile(copy):  # prepare.py keeps a copy with the data
            return Tokenizer(spec, 'sp', open(copy, 'rb').read())
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"SentencePiece model file '{spec}' not found")
        return Tokenizer(spec, 'sp', open(spec, 'rb').read())
    raise ValueError(f"unknown tokenizer '{spec}': use gpt2, byte, sp:N (e.g. sp:4096), a path to a .model file, "
                     f"rwkv:path/to/rwkv_vocab_v20230424.txt or hf:path/to/tokenizer.json")


def hf_tokenizer_file(path):
    """The tokenizer.json of `path`: the file itself, the one in a model folder, or a Hugging Face hub id's
    (downloaded by huggingface_hub). Raises FileNotFoundError."""
    if os.path.isdir(path):
        path = os.path.join(path, 'tokenizer.json')
    if os.path.isfile(path):
        return path
    if path.count('/') == 1 and not path.startswith(('.', '/')):
        try:
            from huggingface_hub import hf_hub_download
            return hf_hub_download(path, 'tokenizer.json')
        except Exception as e:  # not installed, offline, no such repository or file
            raise FileNotFoundError(f"'{path}' is no local tokenizer.json or folder, and downloading it from the "
                                    f"Hugging Face hub failed ({type(e).__name__})") from None
    raise FileNotFoundError(f"tokenizer file '{path}' not found (hf:path/to/tokenizer.json, a folder or a hub id)")


def hf_files(state):
    """{file name: bytes} of a checkpoint's tokenizer `state` for a Hugging Face model folder (export.export_hf),
    so that transformers' AutoTokenizer reads it (no sentencepiece or protobuf needed) and encodes as we do:
    tokenizer.json (hf: its own; byte, gpt2, sp: built by `tokenizers_json`) with every special token of ours
    registered as an added token at our id, tokenizer_config.json (PreTrainedTokenizerFast; bos where there is one,
    eos = end of text, pad; chat.CHAT_TEMPLATE), special_tokens_map.json, generation_config.json (eos = end of text and
    <|im_end|>, so that transformers' generate stops after a reply); sp: also the original tokenizer.model; rwkv:
    generation_config.json only (greedy longest match is not written as tokenizer.json). Raises ValueError for a
    SentencePiece model that tokenizers_json cannot express."""
    from chat import CHAT_TEMPLATE
    tok = tokenizer_from_state(state)
    gen = {'eos_token_id': [tok.eot_id, tok.special['<|im_end|>']], 'pad_token_id': tok.special['<|pad|>'],
           **({'bos_token_id': tok.bos_id} if tok.bos_id is not None else {})}
    if tok.kind == 'rwkv':
        return {'generation_config.json': json.dumps(gen, indent=2).encode()}
    from tokenizers import Tokenizer as HFTokenizer
    js = json.loads(state['blob']) if tok.kind == 'hf' else tokenizers_json(tok)
    have, token = {t['id'] for t in js['added_tokens']}, HFTokenizer.from_str(json.dumps(js)).id_to_token
    # ours at our ids: appended ones and the model's own, not our <|endoftext|> alias of another name (Llama's </s>)
    js['added_tokens'] += [{'id': i, 'content': t, 'single_word': False, 'lstrip': False, 'rstrip': False,
                            'normalized': False, 'special': True} for t, i in tok.special.items()
                           if i not in have and token(i) in (None, t)]
    name = {**{t['id']: t['content'] for t in js['added_tokens']}, **{i: token(i) for i in tok.special.values()
                                                                       if token(i) is not None}}
    names = {'eos_token': name[tok.eot_id], 'pad_token': name[tok.special['<|pad|>']],
             **({'bos_token': name[tok.bos_id]} if tok.bos_id is not None else {})}
    config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'add_bos_token': tok.bos_id is not None,
              'add_eos_token': False, 'clean_up_tokenization_spaces': False, 'chat_template': CHAT_TEMPLATE, **names}
    return {'tokenizer.json': json.dumps(js, ensure_ascii=False).encode(),
            'tokenizer_config.json': json.dumps(config, indent=2).encode(),
            'special_tokens_map.json': json.dumps(names, indent=2).encode(),
            'generation_config.json': json.dumps(gen, indent=2).encode(),
            **({'tokenizer.model': state['blob']} if tok.kind == 'sp' else {})}


def _byte_chars():
    """GPT-2's byte -> printable character map (the ByteLevel alphabet of `tokenizers`), a list indexed by byte."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _protobuf(buf):
    """(field number, value) pairs of a protobuf message: int for varints, bytes otherwise. Enough to read a
    SentencePiece model's trainer and normalizer settings without the protobuf package."""
    def varint(i):
        v = shift = 0
        while True:
            v, shift, i = v | (buf[i] & 0x7f) << shift, shift + 7, i + 1
            if buf[i - 1] < 0x80:
                return v, i
    i = 0
    while i < len(buf):
        key, i = varint(i)
        n, i = varint(i) if key & 7 == 2 else (0, i)
        if key & 7 == 0:
            v, i = varint(i)
        else:  # length-delimited, fixed 64 or fixed 32 bits
            n = n if key & 7 == 2 else 8 if key & 7 == 1 else 4
            v, i = buf[i:i + n], i + n
        yield key >> 3, v


def tokenizers_json(tok):
    """tokenizer.json (a dict, Hugging Face `tokenizers` format) that encodes and decodes text as Tokenizer `tok`
    (byte, gpt2 or sp kind) does, special tokens aside (hf_files adds them). byte: ids 0..255 = the bytes
    (ByteLevel, no merges); gpt2: tiktoken's ranks as a BPE vocabulary, the merges recovered from the ranks, its split
    regex; sp: the SentencePiece model's pieces (BPE with merges ordered by piece score, or unigram), byte fallback,
    and its normalizer settings read from the .model file (extra whitespace, dummy prefix, precompiled charsmap);
    control pieces are added tokens, the BOS put first by the post-processor where `tok.bos_id` is set. Raises
    ValueError for other kinds or SentencePiece settings it cannot express."""
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, normalizers, pre_tokenizers, processors
    chars, added, hf = _byte_chars(), [], None
    if tok.kind in ('byte', 'gpt2'):
        ranks = {bytes([b]): b for b in range(256)} if tok.kind == 'byte' else tok.enc._mergeable_ranks
        merges = []
        for t, r in sorted(ranks.items(), key=lambda x: x[1]):
            parts = [t[i:i + 1] for i in range(len(t))]
            while len(parts) > 2:  # replay BPE on t with the ranks below r: the last two parts are its merge
                i = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], r))
                if ranks.get(parts[i] + parts[i + 1], r) >= r:
                    break
                parts[i:i + 2] = [parts[i] + parts[i + 1]]
            if len(parts) == 2:
                merges.append(tuple(''.join(chars[b] for b in p) for p in parts))
        vocab = {''.join(chars[b] for b in t): r for t, r in ranks.items()}
        hf = HFTokenizer(models.BPE(vocab, merges, ignore_merges=True))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.pre_tokenizer = byte_level if tok.kind == 'byte' else pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(tok.enc._pat_str), 'isolated'), byte_level])
        hf.decoder = decoders.ByteLevel()
    elif tok.kind == 'sp':
        fields = list(_protobuf(tok.blob))
        trainer, norm = ({k: v for f, m in fields if f == n for k, v in _protobuf(m)} for n in (2, 3))
        model_type, fallback, charsmap = trainer.get(3, 1), bool(trainer.get(35, 0)), norm.get(2, b'')
        if model_type not in (1, 2) or trainer.get(24, 0) or not norm.get(5, 1):
            raise ValueError(f"SentencePiece model '{tok.spec}': only BPE and unigram models with escaped, leading "
                             f"whitespace convert to tokenizer.json")
        sp, n = tok.sp, tok.sp.get_piece_size()
        pieces = [sp.id_to_piece(i) for i in range(n)]
        normal = [not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i)) for i in range(n)]
        if model_type == 2:  # BPE: SentencePiece merges the adjacent pair whose union is the best-scored piece
            vocab = {p: i for i, p in enumerate(pieces)}
            merges = sorted(((p[:k], p[k:], -sp.get_score(i)) for i, p in enumerate(pieces) if normal[i]
                             for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab),
                            key=lambda m: (m[2], vocab[m[0]], vocab[m[1]]))
            hf = HFTokenizer(models.BPE(vocab, [m[:2] for m in merges], unk_token=pieces[sp.unk_id()],
                                        byte_fallback=fallback, fuse_unk=True))
        else:
            hf = HFTokenizer(models.Unigram([(p, sp.get_score(i)) for i, p in enumerate(pieces)], sp.unk_id(),
                                            fallback))
        steps = [normalizers.Precompiled(charsmap)] if charsmap else []
        if norm.get(4, 1):  # remove_extra_whitespaces: spaces only, not tabs or newlines
            steps += [normalizers.Replace(Regex(r'\A +| +\z'), ''), normalizers.Replace(Regex(' {2,}'), ' ')]
        steps += [normalizers.Replace(' ', '\u2581')] + ([normalizers.Prepend('\u2581')] if norm.get(3, 1) else [])
        hf.normalizer = normalizers.Sequence(steps)
        hf.decoder = decoders.Sequence([decoders.Replace('\u2581', ' '), decoders.ByteFallback(), decoders.Fuse()]
                                       + ([decoders.Strip(' ', 1, 0)] if norm.get(3, 1) else []))
        if tok.bos_id is not None:
            bos = pieces[tok.bos_id]
            hf.post_processor = processors.TemplateProcessing(single=f'{bos} $A', pair=f'{bos} $A {bos} $B',
                                                              special_tokens=[(bos, tok.bos_id)])
        added = [{'id': i, 'content': p, 'single_word': False, 'lstrip': False, 'rstrip': False,
                  'normalized': False, 'special': True} for i, p in enumerate(pieces)
                 if sp.is_control(i) or sp.is_unknown(i)]
    else:
        raise ValueError(f"a '{tok.kind}' tokenizer has no tokenizer.json form (use gpt2, byte, sp or hf)")
    js = json.loads(hf.to_str())
    js['added_tokens'] = added
    return js


# llama.cpp's names for the split regexes of byte-level BPE tokenizer.json files (its LLAMA_VOCAB_PRE_TYPE_*)
GGUF_PRE = {r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+": 'gpt-2',
            r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s": 'gpt-2',  # tiktoken's
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
            r"\s+(?!\S)|\s+": 'llama-bpe',  # Llama 3
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
            r"\s+(?!\S)|\s+": 'qwen2'}


def gguf_pre(js):
    """llama.cpp's pre-tokenizer name for a tokenizer.json (a dict) of byte-level BPE: GPT-2's ByteLevel regex,
    SmolLM's single digits before it, or a Split by one of GGUF_PRE's regexes then ByteLevel without its own; None
    for anything else (a prefix space or an inverted split too: llama.cpp's pre-tokenizers have neither)."""
    pre = js.get('pre_tokenizer') or {}
    steps = pre.get('pretokenizers', []) if pre.get('type') == 'Sequence' else [pre]
    kinds = [p.get('type') for p in steps]
    if any(p.get('add_prefix_space') or p.get('invert') for p in steps):  # llama.cpp's pre-tokenizers do neither
        return None
    if kinds == ['ByteLevel'] and steps[0].get('use_regex', True):
        return 'gpt-2'
    if kinds == ['Digits', 'ByteLevel'] and steps[0].get('individual_digits') and steps[1].get('use_regex', True):
        return 'smollm'
    if kinds == ['Split', 'ByteLevel'] and not steps[1].get('use_regex', True) and \
            steps[0].get('behavior') == 'Isolated':
        return GGUF_PRE.get(steps[0].get('pattern', {}).get('Regex'))
    return None


def gguf_vocab(state, n_vocab):
    """A checkpoint's tokenizer `state` as llama.cpp's GGUF tokenizer keys (llama.cpp's convert_hf_to_gguf.py writes
    the same): a dict of model ('llama': SentencePiece, with scores; 'gpt2': byte-level BPE, with merges, 'gpt-2'
    pre-tokenizer), tokens, scores, types (1 normal, 2 unknown, 3 control: our special tokens, 4 user-defined added
    tokens, 5 unused, 6 byte), merges, pre, bos / eos (end of text) / eot (<|im_end|>) / unk / pad ids (None where
    there is none), add_bos and add_space_prefix. Ids past the tokenizer's own, up to n_vocab (the model's padding),
    are '[PAD<id>]', unused; ids past n_vocab are left out (a model smaller than the tokenizer: llama2.c's 512 pieces
    without our chat tokens).
    hf: tokenizers of byte-level BPE are 'gpt2' with llama.cpp's name for their pre-tokenizer (gguf_pre). Raises
    ValueError for byte (llama.cpp refuses a gpt2 vocabulary without merges), rwkv: and other hf: tokenizers."""
    tok = tokenizer_from_state(state)
    out = dict(scores=None, merges=None, pre=None, unk=None, add_space_prefix=False, bos=tok.bos_id,
               eos=tok.eot_id, eot=tok.special['<|im_end|>'], pad=tok.special['<|pad|>'], add_bos=tok.bos_id is not None)
    if tok.kind == 'sp':
        sp, n = tok.sp, tok.sp.get_piece_size()
        norm = {k: v for f, m in _protobuf(tok.blob) if f == 3 for k, v in _protobuf(m)}
        out.update(model='llama', tokens=[sp.id_to_piece(i) for i in range(n)], scores=[sp.get_score(i) for i in range(n)],
                   types=[2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else
                          5 if sp.is_unused(i) else 1 for i in range(n)], unk=sp.unk_id(),
                   add_space_prefix=bool(norm.get(3, 1)))
    elif tok.kind in ('gpt2', 'hf'):
        js = tokenizers_json(tok) if tok.kind == 'gpt2' else json.loads(tok.blob)
        pre = 'gpt-2' if tok.kind == 'gpt2' else gguf_pre(js)
        if js['model'].get('type') != 'BPE' or not js['model'].get('merges') or pre is None:
            raise ValueError(f"the tokenizer '{tok.spec}' has no GGUF form here: of tokenizer.json files, byte-level "
                             f"BPE with GPT-2's, Llama 3's, Qwen2's or SmolLM's pre-tokenizer does")
        added = js.get('added_tokens', [])
        n = max([*js['model']['vocab'].values(), *(t['id'] for t in added)]) + 1
        tokens, types = [f'[PAD{i}]' for i in range(n)], [5] * n
        for t, i in js['model']['vocab'].items():
            tokens[i], types[i] = t, 1
        for t in added:  # llama.cpp: control (special) or user-defined
            tokens[t['id']], types[t['id']] = t['content'], 3 if t['special'] else 4
        out.update(model='gpt2', pre=pre, tokens=tokens, types=types,
                   merges=[' '.join(m) if isinstance(m, list) else m for m in js['model']['merges']])
    else:
        raise ValueError(f"the '{tok.spec}' tokenizer has no GGUF form here (sp:N, a SentencePiece .model, gpt2 and "
                         f"byte-level BPE tokenizer.json files do; llama.cpp's byte-level BPE needs merges, which the "
                         f"byte tokenizer has none of)")
    own = len(out['tokens'])  # padded up to the model's vocabulary and our special tokens' ids
    pad = range(own, max(n_vocab, max(tok.special.values()) + 1))
    out['tokens'] += [f'[PAD{i}]' for i in pad]
    out['types'] += [5] * len(pad)
    if out['scores'] is not None:
        out['scores'] += [-1e9] * len(pad)
    for t, i in tok.special.items():  # control tokens; ours named where they come after the tokenizer's own pieces
        out['tokens'][i] = t if i >= own else out['tokens'][i]
        out['types'][i] = 3
    for k in ('tokens', 'types', 'scores'):
        out[k] = out[k] if out[k] is None else out[k][:n_vocab]
    for k in ('bos', 'eos', 'eot', 'unk', 'pad'):
        out[k] = out[k] if out[k] is not None and out[k] < n_vocab else None
    return out


def pretrained_tokenizer(path):
    """The tokenizer spec of a pretrained model (a local folder or a llama2.c .bin; see Llama.from_pretrained): a
    folder's tokenizer.json ('hf:<folder>/tokenizer.json', what --tokenizer=hf:<folder or hub id> reads too), else its
    tokenizer.model; for a .bin file, the tokenizer.model or the one .model file beside it (llama2.c's tok512.model).
    Raises FileNotFoundError."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and os.path.isfile(os.path.join(folder, 'tokenizer.json')):
        return 'hf:' + os.path.join(folder, 'tokenizer.json')
    models = sorted(f for f in os.listdir(folder) if f.endswith('.model'))
    if 'tokenizer.model' in models or len(models) == 1 and not os.path.isdir(path):
        return os.path.join(folder, 'tokenizer.model' if 'tokenizer.model' in models else models[0])
    raise FileNotFoundError(f"no tokenizer for {path}: expected tokenizer.json or tokenizer.model beside it")


def train_sentencepiece(texts, vocab_size, path):
    """Train a SentencePiece BPE model of `vocab_size` pieces on an iterable of strings and save it to `path`.
    Settings follow llama2.c's train_vocab (identity normalisation, byte fallback, split digits); no dummy prefix, so
    encoding pieces of a text and joining them equals encoding it. The special tokens are control symbols (single
    pieces that SentencePiece never produces from text: Tokenizer.encode maps them itself, and only when asked to,
    so a literal '<think>' in a raw corpus stays text)."""
    import io
    import sentencepiece as spm

    def lines():
        for t in texts:
            for line in t.split('\n'):
                if line.strip():
                    yield line

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines(), model_writer=model, model_type='bpe', vocab_size=vocab_size,
            self_test_sample_size=0, character_coverage=1.0, num_threads=os.cpu_count(), split_digits=True,
            allow_whitespace_only_pieces=True, byte_fallback=True, normalization_rule_name='identity',
            add_dummy_prefix=False, remove_extra_whitespaces=False, input_sentence_size=2_000_000,
            shuffle_input_sentence=True, control_symbols=SPECIAL_TOKENS, max_sentence_length=16384,
            unk_surface=r' ⁇ ', minloglevel=2)
    except RuntimeError as e:  # e.g. fewer pieces than the 256 bytes + the characters of the text
        raise ValueError(f"SentencePiece training failed: {str(e).split('] ')[-1]}") from None
    with open(path, 'wb') as f:
        f.write(model.getvalue())
    return path
