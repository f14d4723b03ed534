"""
Tests of the data side: tokenizer round trips with the special tokens for every kind (byte, gpt2, SentencePiece,
the RWKV World vocabulary), prepare.py on txt/json/jsonl/parquet (val split, shards, a recipe's local copy, re-run
no-op, SentencePiece), the chat format's masks and answer parsing, gsm_synth (determinism, disjoint splits, true
arithmetic, digit-by-digit working, train-only operation weights), packing chat examples into rows and length bands
(one band per batch, every example drawn equally often).

    python -m pytest test_data.py -q

The gpt2 tokenizer tests skip when tiktoken's GPT-2 files are neither cached nor downloadable (set
TIKTOKEN_CACHE_DIR); the real-data check skips without ../shared.
"""

import json
import os
import random
import re

import numpy as np
import pytest
import torch

import chat
import gsm_synth
from conftest import SHARED, corpus, gpt2_or_skip, run
from shards import load_split
from tokenizer import EOT, SPECIAL_TOKENS, get_tokenizer, tokenizer_from_state, train_sentencepiece

TEXT = corpus(tail=' Ünïcödé ✓ 😀')


# ---------------------------------------------------------------------------- tokenizers
@pytest.fixture(scope='module')
def sp_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('sp') / 'tokenizer.model')
    return train_sentencepiece([TEXT], 400, path)


@pytest.mark.parametrize('kind', ['gpt2', 'byte', 'sp', 'sp_file'])
def test_tokenizer_round_trip(kind, sp_model):
    tok = {'gpt2': gpt2_or_skip, 'byte': lambda: get_tokenizer('byte'),
           'sp': lambda: get_tokenizer('sp:400', os.path.dirname(sp_model)),
           'sp_file': lambda: get_tokenizer(sp_model)}[kind]()
    text = "<|im_start|>user\nWhat is 2+2? Ünï 😀<|im_end|>\n<|im_start|>assistant\n<think>\n2+2=4\n</think>\n4" \
           "<|im_end|><|pad|><|endoftext|>  two  spaces\tand tab\n\nend"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    for t in SPECIAL_TOKENS + [EOT]:
        assert tok.special[t] in ids and tok.encode(t) == [tok.special[t]]
        assert tok.special[t] < tok.vocab_size
    assert len(set(tok.special.values())) == len(SPECIAL_TOKENS) + 1
    assert tok.special[EOT] == tok.eot_id
    assert max(tok.encode(TEXT)) < tok.vocab_size and tok.decode(tok.encode(TEXT)) == TEXT
    tok2 = tokenizer_from_state(tok.state())
    assert tok2.encode(text) == ids and tok2.vocab_size == tok.vocab_size


def test_tokenizer_ids():
    tok = get_tokenizer('byte')
    assert tok.vocab_size == 262 and tok.eot_id == 256 and tok.encode('A<think>') == [65, 259]
    assert tok.encode('<think>', special=False) == list(b'<think>')
    gpt2 = gpt2_or_skip()
    assert gpt2.eot_id == 50256 and gpt2.special['<|im_start|>'] == 50257 and gpt2.vocab_size == 50262
    assert gpt2.encode('hello world') == [31373, 995]
    with pytest.raises(ValueError, match='unknown tokenizer'):
        get_tokenizer('gpt3')
    with pytest.raises(FileNotFoundError, match='run prepare.py'):
        get_tokenizer('sp:512', '/nonexistent')


def test_special_tokens_stay_text_in_raw_corpora(sp_model):
    for tok in (get_tokenizer(sp_model), get_tokenizer('byte')):
        ids = tok.encode('a <think> b <|endoftext|>', special=False)
        assert not set(ids) & set(tok.special.values()) and tok.decode(ids) == 'a <think> b <|endoftext|>'
        assert tok.decode(ids + [tok.vocab_size + 5]) == tok.decode(ids)  # the model's padding ids decode to nothing


def test_rwkv_world_tokenizer(tmp_path):
    vocab = [b'a', b'b', b'c', 'é'.encode(), b'ab', b'abc', b'\n\n']
    lines = [f"{i + 1} {repr(t.decode()) if i % 2 else repr(t)} {len(t)}" for i, t in enumerate(vocab)]
    (tmp_path / 'vocab.txt').write_text('\n'.join(lines) + '\n')
    tok = get_tokenizer(f"rwkv:{tmp_path / 'vocab.txt'}")
    assert tok.encode('abcab\n\nc') == [6, 5, 7, 3]  # greedy longest match
    assert tok.encode('é<think>a') == [4, tok.special['<think>'], 1] and tok.eot_id == 0
    assert tok.decode(tok.encode('cabé<|endoftext|>')) == 'cabé<|endoftext|>'
    assert tokenizer_from_state(tok.state()).encode('abc') == [6]


# ---------------------------------------------------------------------------- shards and prepare.py
def test_prepare_local_sources(tmp_path):
    (tmp_path / 'docs').mkdir()
    recs = [{'text': f"document {i}: " + 'abc ' * (i % 7)} for i in range(40)]
    (tmp_path / 'docs' / 'a.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs[:20]))
    (tmp_path / 'docs' / 'b.json').write_text(json.dumps(recs[20:30]))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({'text': [r['text'] for r in recs[30:]]}), str(tmp_path / 'docs' / 'c.parquet'))
    p = run('prepare.py', '--dataset=docs', '--tokenizer=byte', '--data_dir=d', cwd=tmp_path)
    meta = json.load(open(tmp_path / 'd' / 'meta.json'))
    assert meta['train_docs'] + meta['val_docs'] == 40 and meta['val_docs'] == 4 and meta['vocab_size'] == 262
    tok = get_tokenizer('byte')
    train = np.concatenate(load_split(str(tmp_path / 'd'), 'train'))
    assert train[0] == tok.eot_id and (train == tok.eot_id).sum() == 36
    docs = tok.decode(train.tolist()).split(EOT)[1:]
    assert docs == [r['text'] for i, r in enumerate(recs) if i % 10 != 9]
    assert len(train) == meta['train_tokens']
    p = run('prepare.py', '--dataset=docs', '--tokenizer=byte', '--data_dir=d', cwd=tmp_path)
    assert 'nothing to do' in p.stdout


def test_prepare_shards_and_recipe_source(tmp_path):
    recs = [{'story': f"story {i} " + 'la ' * i} for i in range(30)]
    (tmp_path / 'stories.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    run('prepare.py', '--dataset=tinystories', '--source=stories.jsonl', '--text_field=story', '--tokenizer=byte',
        '--shard_size=500', '--val_fraction=0.2', cwd=tmp_path)
    d = str(tmp_path / 'data' / 'tinystories_byte')
    meta = json.load(open(os.path.join(d, 'meta.json')))
    assert meta['val_docs'] == 6 and len(meta['files']) >= 4  # a local copy of a recipe carves out val_fraction
    for sp, n in (('train', 24), ('val', 6)):
        shards = load_split(d, sp)
        assert all(len(s) == 500 for s in shards[:-1])  # documents span shard boundaries, as in llm.c
        text = get_tokenizer('byte').decode(np.concatenate(shards).tolist())
        assert text.count(EOT) == n and sum(len(s) for s in shards) == meta[f'{sp}_tokens']


def test_prepare_single_text_split_and_sentencepiece(tmp_path):
    (tmp_path / 'input.txt').write_text(TEXT)
    run('prepare.py', '--dataset=shakespeare', '--source=input.txt', '--tokenizer=sp:400', cwd=tmp_path)
    d = tmp_path / 'data' / 'shakespeare_sp400'
    tok = get_tokenizer('sp:400', str(d))
    train, val = (np.concatenate(load_split(str(d), s)).tolist() for s in ('train', 'val'))
    n = int(len(TEXT) * 0.9)  # the last 10% of the characters is val, as nanoGPT splits Tiny Shakespeare
    assert tok.decode(train) == EOT + TEXT[:n] and tok.decode(val) == EOT + TEXT[n:]


SHARED_DATA = os.path.join(SHARED, 'data')


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason='real-data check: needs ../shared (CI has it)')
def test_prepare_real_shakespeare(tmp_path):
    src = os.path.join(SHARED_DATA, 'shakespeare', 'input.txt')
    run('prepare.py', '--dataset=shakespeare', f'--source={src}', '--tokenizer=byte', cwd=tmp_path)
    meta = json.load(open(tmp_path / 'data' / 'shakespeare_byte' / 'meta.json'))
    text = open(src, encoding='utf-8').read()  # ASCII: one byte per character, plus one end-of-text per split
    assert (meta['train_tokens'], meta['val_tokens']) == (int(len(text) * 0.9) + 1, len(text) - int(len(text) * 0.9) + 1)


# ---------------------------------------------------------------------------- reasoning format and gsm_synth
@pytest.mark.parametrize('kind', ['byte', 'sp_file', 'gpt2'])
def test_chat_render_mask(kind, sp_model):
    tok = {'byte': lambda: get_tokenizer('byte'), 'sp_file': lambda: get_tokenizer(sp_model), 'gpt2': gpt2_or_skip}[kind]()
    reply = chat.assistant_reply('2 + 2 = 4', '4')
    msgs = [{'role': 'user', 'content': 'What is 2+2?'}, {'role': 'assistant', 'content': reply},
            {'role': 'user', 'content': 'And 3+3?'}, {'role': 'assistant', 'content': 'Six.'}]
    ids, mask = chat.render(tok, msgs)
    assert len(ids) == len(mask)
    text = tok.decode(ids)
    assert text == (f"<|im_start|>system\n{chat.SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                    f"<|im_start|>assistant\n<think>\n2 + 2 = 4\n</think>\n\n**Final Answer:** 4<|im_end|>\n"
                    f"<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\nSix.<|im_end|>\n")
    learned = [i for i, m in zip(ids, mask) if m]  # exactly the two replies, each with its <|im_end|>
    assert tok.decode(learned) == reply + '<|im_end|>' + 'Six.<|im_end|>'
    p = chat.prompt(tok, 'What is 2+2?')
    assert tok.decode(p).endswith('What is 2+2?<|im_end|>\n<|im_start|>assistant\n') and p == ids[:len(p)]


def test_answer_parsing():
    assert chat.final_answer('<think>\nx\n</think>\n\n**Final Answer:** 1,234.<|im_end|>') == '1234'
    assert chat.final_answer('**Final Answer:** 1\n**Final Answer:** $-7.50') == '-7.5'
    assert chat.final_answer('**Final Answer:** 18.00') == '18' and chat.final_answer('no answer') is None
    assert chat.final_answer('**Final Answer:** Paris') == 'Paris'
    assert chat.gsm8k_parts('She has 48/2 = <<48/2=24>>24.\n#### 1,024') == ('She has 48/2 = 24.', '1024')
    assert chat.gsm8k_parts('x <<3-5=-2>>-2\n#### -2', keep_calc=True) == ('x <<3-5=-2>>-2', '-2')
    with pytest.raises(ValueError, match='####'):
        chat.gsm8k_parts('no final line')


def test_gsm_synth_determinism_splits_and_arithmetic():
    a, b = gsm_synth.generate('train', 300, seed=3), gsm_synth.generate('train', 300, seed=3)
    assert a == b and a != gsm_synth.generate('train', 300, seed=4)
    test = gsm_synth.generate('test', 100, seed=3)
    assert not {p['question'] for p in a} & {p['question'] for p in test}
    assert all(gsm_synth.split_of(p['question']) == 'test' for p in test)
    for p in a + test:
        assert 2 <= p['steps'] <= 4 and len(p['answer'].split('\n')) >= p['steps'] + 1
        values = []
        for expr, res in re.findall(r'<<([^=]+)=([^>]+)>>', p['answer']):
            x, op, y = re.fullmatch(r'(\d+)([-+*/])(\d+)', expr).groups()
            exact = {'+': int(x) + int(y), '-': int(x) - int(y), '*': int(x) * int(y), '/': int(x) / int(y)}[op]
            assert exact == int(res) and 0 <= int(res) <= 1000 and (op not in '*/' or min(int(x), int(y)) <= 12)
            values.append(int(res))
        reasoning, answer = chat.gsm8k_parts(p['answer'])
        assert answer == str(values[-1]) and '<<' not in reasoning
        assert all(int(n) <= 100 for n in re.findall(r'\d+', p['question']))


def test_gsm_synth_train_ops_weight_train_only(tmp_path):
    plain, heavy = ([p['answer'].count('/') for p in gsm_synth.generate('train', 300, seed=3, ops=o)]
                    for o in ('+-*/', '+-*///'))  # an operation written three times is drawn three times as often
    assert sum(heavy) > 1.5 * sum(plain)
    for d, ops in (('a', '+-*/'), ('b', '+-*///')):  # prepare.py: the train split only; val and test stay the same
        run('prepare.py', '--tokenizer=byte', f'--data_dir={d}', '--synth_train=200', '--synth_val=20',
            '--synth_test=30', f'--synth_train_ops={ops}', cwd=tmp_path)
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert (a / 'test.jsonl').read_text() == (b / 'test.jsonl').read_text()
    assert (a / 'val_000.bin').read_bytes() == (b / 'val_000.bin').read_bytes()
    assert (a / 'train_000.bin').read_bytes() != (b / 'train_000.bin').read_bytes()


def test_gsm_synth_scratch_columns_give_the_result():
    """The working is true arithmetic, one operation per `=` (`4*9=36+4=40`, `6-8=-2+10=8`, `29/6=4 r29-24=5`), and holds
    the result: + - x the last column's value, then the others' last digits right to left; / the quotient digits."""
    def check(step, op):
        if op == '/':  # `29/6=4 r29-24=5`: the digit, then the remainder as cur - digit * k; `2/6=0 r2` for a 0
            cur, k, q, c2, p, r, r0 = re.fullmatch(r'(\d+)/(\d+)=(\d+)(?: r(\d+)-(\d+)=(\d+)| r(\d+))?', step).groups()
            if q == '0':
                assert p is None and int(r0 or 0) == int(cur) < int(k)
            else:
                assert c2 == cur and int(p) == int(q) * int(k) and int(r) == int(cur) - int(p) < int(k)
            return q
        parts = step.split('=')
        for left, right in zip(parts, parts[1:]):  # each link: one operation on the previous value
            assert re.fullmatch(r'-?\d+[-+*]\d+', left) and eval(left) == int(re.match(r'-?\d+', right).group())
        assert 0 <= int(parts[-1]) < (10 if op == '-' else 10 ** 3)
        return parts[-1]

    def result(line, op):
        vals = [check(st, op) for st in line.split(': ', 1)[1].rstrip('.').split(', ')]
        return int(''.join(vals) if op == '/' else vals[-1] + ''.join(v[-1] for v in vals[-2::-1]))
    rng = random.Random(0)
    for _ in range(3000):
        a, k = rng.randint(0, 999), rng.randint(2, 12)
        b = rng.randint(0, a)
        for x, op, y, want in ((a, '+', b, a + b), (b, '+', a, a + b), (a, '-', b, a - b), (a, '*', k, a * k),
                               (k, '*', a, a * k), (a * k, '/', k, a)):
            assert result(gsm_synth.columns(x, op, y), op) == want
    assert gsm_synth.columns(105, '-', 98) == '105-98: 5-8=-3+10=7, 0-9=-9-1=-10+10=0, 1-0=1-1=0.'
    assert gsm_synth.columns(405, '+', 75) == '405+75: 5+5=10, 0+7=7+1=8, 4+0=4.'
    assert gsm_synth.columns(8, '*', 38) == '38*8: 8*8=64, 3*8=24+6=30.'  # the factor <= 12 is the multiplier
    assert gsm_synth.columns(294, '/', 6) == '294/6: 2/6=0 r2, 29/6=4 r29-24=5, 54/6=9 r54-54=0.'
    plain, scratch = gsm_synth.generate('val', 50, seed=1), gsm_synth.generate('val', 50, seed=1, scratch=True)
    assert [p['question'] for p in plain] == [p['question'] for p in scratch]
    for p, q in zip(plain, scratch):  # the same solution lines, each after its working, each step after its sentence
        lines = q['answer'].split('\n')
        work = [i for i, line in enumerate(lines) if re.match(r'\d+[-+*/]\d+: ', line)]
        assert [lines[i + 1] for i in work] + lines[-1:] == p['answer'].split('\n')
        quoted = [line for i, line in enumerate(lines[:-1]) if i not in work and i - 1 not in work]
        assert quoted == re.split(r'(?<=[.?]) ', p['question'])[1:-1] and len(quoted) == p['steps']


def test_gsm_synth_walk_quotes_every_sentence_in_order():
    """walk=True: the same questions and answers; the reasoning quotes each sentence of the question in order, each
    followed by what it does (the start, a step's computations chained on the running total, a distractor, the
    question), with the column working before each computation when scratch."""
    kw = dict(distractors=0.5, question_first=0.5, scratch=True)
    for plain, walk in ((gsm_synth.generate('val', 80, seed=2, **kw), gsm_synth.generate('val', 80, seed=2, **kw,
                                                                                        walk=True)),
                        (gsm_synth.generate('test', 40, seed=3, wording='unseen', min_steps=5, max_steps=6),
                         gsm_synth.generate('test', 40, seed=3, wording='unseen', min_steps=5, max_steps=6,
                                            walk=True))):
        for p, q in zip(plain, walk):
            lines, answer = q['answer'].split('\n')[:-1], int(q['answer'].rsplit('#### ', 1)[1])
            assert p['question'] == q['question'] and int(p['answer'].rsplit('#### ', 1)[1]) == answer
            sentences = re.split(r'(?<=[.?]) ', q['question'])
            tags = re.compile(r'(Start|Total|New): |Not a step\.$|The question\.$|\d+[-+*/]\d+: ')
            quoted = [i for i, line in enumerate(lines) if not tags.match(line)]
            assert [lines[i] for i in quoted] == sentences
            roles = [lines[i + 1].split(':')[0].rstrip('.') if not re.match(r'\d', lines[i + 1]) else 'step'
                     for i in quoted]
            assert roles.count('Start') == 1 and roles.count('The question') == 1
            assert roles.count('step') + roles.count('Total') + roles.count('New') == p['steps']
            assert lines[quoted[sentences.index(next(s for s in sentences if s.endswith('?')))] + 1] == 'The question.'
            total = None
            for i, line in enumerate(lines):
                if line.startswith('Start: '):
                    total = int(line[7:-1])
                m = re.fullmatch(r'(Total|New): (\d+) ([-+*/]) (\d+) = <<\2\3\4=(\d+)>>\5\.', line)
                if m:
                    a, op, b, r = int(m[2]), m[3], int(m[4]), int(m[5])
                    assert r == {'+': a + b, '-': a - b, '*': a * b, '/': a // b}[op] and (op != '/' or a % b == 0)
                    assert not kw['scratch'] or lines[i - 1] == gsm_synth.columns(a, op, b)
                    if m[1] == 'Total':
                        assert a == total
                        total = r
            assert total == answer
        kw['scratch'] = False


def synth_sentence_patterns():
    """{(kind, i, j): regex} of every step sentence gsm_synth can write (verb phrase i of an operation in frame j), and
    the patterns of the start, question and distractor sentences, seen and held out: built from the pools' text only,
    so that a question can be read back without the generator's code."""
    alt = lambda xs: '(?:' + '|'.join(re.escape(x) for x in xs) + ')'  # noqa: E731
    names = [n for n, _, _ in gsm_synth.NAMES + gsm_synth.TEST_NAMES]
    slots = {'n': r'(?P<n>\d+)', 'a': r'(?P<a>\d+)', 'b': r'(?P<b>\d+)', 'k': r'(?P<k>\d+)', 'age': r'\d+',
             'word': r'(?P<word>twice|three times|\d+ times)', 'name': f'(?P<name>{alt(names)})',
             'other': f'(?P<other>{alt(names)})',
             'he': '(?:he|she)', 'He': '(?:He|She)', 'his': '(?:his|her)', 'His': '(?:His|Her)',
             'item': alt(gsm_synth.ITEMS + gsm_synth.TEST_ITEMS), 'item2': alt(gsm_synth.ITEMS + gsm_synth.TEST_ITEMS),
             'friend': alt(gsm_synth.FRIENDS + gsm_synth.TEST_FRIENDS),
             'box': alt(gsm_synth.CONTAINERS + gsm_synth.TEST_CONTAINERS)}

    def pattern(template):  # a slot's second use: the same text as its first
        out, pos, done = '', 0, set()
        for m in re.finditer(r'\{(\w+)\}', template):
            out += re.escape(template[pos:m.start()]) + (f'(?P={m[1]})' if m[1] in done and '?P<' in slots[m[1]]
                                                         else slots[m[1]])
            done.add(m[1])
            pos = m.end()
        return out + re.escape(template[pos:])
    steps = {(kind, i, j): pattern(frame.replace('{vp}', vp))
             for kind, vps in gsm_synth.VERB_PHRASES.items() for i, vp in enumerate(vps)
             for j, frame in enumerate(gsm_synth.FRAMES)}
    other = {(what, held, t): pattern(t) for what, seen, test in (
        ('start', gsm_synth.STARTS, gsm_synth.TEST_STARTS), ('question', gsm_synth.QUESTIONS, gsm_synth.TEST_QUESTIONS),
        ('noise', gsm_synth.DISTRACTORS, gsm_synth.TEST_DISTRACTORS)) for held, ts in ((False, seen), (True, test))
        for t in ts}
    return steps, other


def solve_synth(question, steps, other):
    """A problem's answer read from its question text alone: each sentence matched to exactly one pattern (about the
    person the question asks about, or, for a distractor, another one), the start number, then each step's
    operation; returns (answer, [(kind, i, j) of each step], [other patterns used])."""
    sents = re.split(r'(?<=[.?]) (?=[A-Z])', question)
    asked = next(m['name'] for s in sents for k, p in other.items() if k[0] == 'question'
                 for m in [re.fullmatch(p, s)] if m)

    def fits(p, sent):
        m = re.fullmatch(p, sent)
        return m is not None and m.groupdict().get('name', asked) == asked and m.groupdict().get('other') != asked
    total, kinds, used = None, [], []
    for sent in sents:
        hits = [k for k, p in steps.items() if fits(p, sent)]
        more = [k for k, p in other.items() if fits(p, sent)]
        assert len(hits) + len(more) == 1, (sent, hits, more)
        if more:
            used.append(more[0])
            if more[0][0] == 'start':
                total = int(re.search(r'\d+', sent).group())
            continue
        m, (kind, i, j) = re.fullmatch(steps[hits[0]], sent), hits[0]
        kinds.append(hits[0])
        if kind == '+':
            total += int(m['n'])
        elif kind == 'bags':
            total += int(m['a']) * int(m['b'])
        elif kind == '-':
            total -= int(m['n'])
        elif kind == '*':
            total *= {'twice': 2, 'three times': 3}.get(m['word']) or int(m['word'].split()[0])
        else:
            assert total % int(m['k']) == 0
            total //= int(m['k'])
    return total, kinds, used


def test_gsm_synth_v4_answers_from_the_question_alone_and_held_out_factors():
    steps, other = synth_sentence_patterns()
    train = gsm_synth.generate('train', 1500, seed=5, distractors=0.3, question_first=0.3)
    assert train == gsm_synth.generate('train', 1500, seed=5, distractors=0.3, question_first=0.3)
    train_q = {p['question'] for p in train}
    suite = gsm_synth.suite(max_steps=4, digits=2)
    assert list(suite) == ['in-distribution', 'unseen wording', '+1 step', '+2 steps', '+1 digit', 'distractors',
                           'question first', 'all combined']
    held_names = {n for n, _, _ in gsm_synth.TEST_NAMES}
    held_words = held_names | set(gsm_synth.TEST_ITEMS) | set(gsm_synth.TEST_FRIENDS) | set(gsm_synth.TEST_CONTAINERS)
    for name, kw in [('train', {})] + list(suite.items()):
        probs = train if name == 'train' else gsm_synth.generate('test', 150, seed=5, **kw)
        unseen = kw.get('wording') == 'unseen'
        for p in probs:
            total, kinds, used = solve_synth(p['question'], steps, other)
            assert str(total) == p['answer'].rsplit('#### ', 1)[1] and len(kinds) == p['steps'], p
            assert all(gsm_synth.unseen_combo(i, j) == unseen for _, i, j in kinds)  # sentence shapes held out or not
            assert all(held == unseen for _, held, _ in used)
            assert any(re.search(rf'\b{w}\b', p['question']) for w in held_words) == unseen
            assert all(int(n) < 10 ** kw.get('digits', 2) for n in re.findall(r'\d+', p['question']))
            chain = re.findall(r'<<(\d+)([-+*/])(\d+)=(\d+)>>', p['answer'])  # the working's own arithmetic, checked
            assert all(int(c) == {'+': int(a) + int(b), '-': int(a) - int(b), '*': int(a) * int(b),
                                  '/': int(a) // int(b) if int(a) % int(b) == 0 else -1}[op] for a, op, b, c in chain)
            assert 0 < int(chain[-1][3]) < 10 ** (kw.get('digits', 2) + 1)
        if name == 'train':
            continue
        assert not {p['question'] for p in probs} & train_q and all(gsm_synth.split_of(p['question']) == 'test'
                                                                     for p in probs)
        n_steps = {p['steps'] for p in probs}
        assert n_steps == {'+1 step': {5}, '+2 steps': {6}, 'all combined': {5, 6}}.get(name, {2, 3, 4}), name
        if 'digit' in name or name == 'all combined':
            assert any(len(n) == 3 for p in probs for n in re.findall(r'\d+', p['question']))
        noisy = sum(any(w == 'noise' for w, _, _ in solve_synth(p['question'], steps, other)[2]) for p in probs)
        assert noisy == (len(probs) if name in ('distractors', 'all combined') else 0), name
        first = sum(p['question'].split('. ')[0].startswith(('How many', 'At the end, how', 'In the end')) for p in probs)
        assert first == (len(probs) if name in ('question first', 'all combined') else 0), name
    # training reads every verb phrase and every frame, and none of the held-out names, items or sentence shapes
    seen = {k for p in train for k in solve_synth(p['question'], steps, other)[1]}
    assert {(k, i) for k, i, _ in seen} == {(k, i) for k in gsm_synth.VERB_PHRASES
                                              for i in range(len(gsm_synth.VERB_PHRASES[k]))}
    assert {j for _, _, j in seen} == set(range(len(gsm_synth.FRAMES)))
    assert not any(re.search(rf'\b{w}\b', q) for q in train_q for w in held_words)
    with pytest.raises(ValueError, match="'unseen' for the test split"):
        gsm_synth.generate('train', 5, wording='unseen')


def test_gsm_synth_made_up_words_are_new_and_never_held_out():
    rng = random.Random(0)
    words = {gsm_synth.made_up_word(rng, 2, gsm_synth.HELD_OUT) for _ in range(20000)}
    assert len(words) > 3000 and not words & {w.lower() for w in gsm_synth.HELD_OUT}
    pools = {n for n, _, _ in gsm_synth.NAMES + gsm_synth.TEST_NAMES} | set(gsm_synth.ITEMS + gsm_synth.TEST_ITEMS)
    probs = gsm_synth.generate('train', 300, seed=2, made_up=1.0)
    assert probs == gsm_synth.generate('train', 300, seed=2, made_up=1.0)
    assert gsm_synth.generate('train', 50, seed=2) == gsm_synth.generate('train', 50, seed=2, made_up=0.0)
    for p in probs:  # 'How many <item> does <Name> have ...?': both made up
        item, name = re.search(r'How many (\w+) does (\w+) have', p['question']).groups()
        assert item not in pools and name not in pools and item[:-1].isalpha() and name.istitle(), p['question']


# ---------------------------------------------------------------------------- packing and length bands
def test_pack_examples_never_splits():
    from data import pack_examples
    lengths = [5, 3, 9, 4, 12, 2]
    starts = np.cumsum([0] + lengths[:-1])
    tokens = [np.concatenate([np.full(n, k + 1) for k, n in enumerate(lengths)])]
    masks = [np.ones_like(tokens[0])]
    ex = np.column_stack([np.zeros(6, dtype=int), starts, lengths])
    ids, learn, cut = pack_examples(tokens, masks, ex, [0, 2, 4, 5], 10, 0, lookahead=2)
    assert ids[0].tolist() == [1] * 5 + [2] * 3 + [0] * 2          # 5 + 3 fit, the 9 would not: padded
    assert ids[1].tolist() == [3] * 9 + [0]
    assert ids[2].tolist() == [5] * 10 and cut == 1                  # longer than a row: truncated, counted
    assert ids[3].tolist() == [6] * 2 + [1] * 5 + [2] * 3           # wraps around to example 0
    assert (learn == (ids != 0)).all()
    ids, learn, cut = pack_examples(tokens, masks, ex, [1, 3], 10, 0, lookahead=2)  # first fit
    assert ids[0].tolist() == [2] * 3 + [4] * 4 + [0] * 3          # 3, the 9 skipped, the 4 taken
    assert ids[1].tolist() == [4] * 4 + [6] * 2 + [0] * 4 and cut == 0  # the 12 skipped, the 2 taken; window ends
    assert (learn == (ids != 0)).all()


def test_group_by_length_draws_one_band_and_every_example_alike():
    from data import draw_by_length, length_bands
    lengths = np.array([10, 40, 33, 34, 90, 64, 65, 200, 20, 97])  # inputs of length - 1 tokens
    band_len, members = length_bands(lengths, block_size=96)
    assert band_len == [32, 64, 96] and [m.tolist() for m in members] == [[0, 2, 8], [1, 3, 5, 6], [4, 7, 9]]
    gen, seen = torch.Generator().manual_seed(0), np.zeros(len(lengths))
    for _ in range(3000):
        picks = draw_by_length(band_len, members, 8, 192, gen)  # only the first 8 (a curriculum's share)
        band = [k for k, m in enumerate(members) if np.isin(picks.numpy(), m).all()]
        assert len(band) == 1 and len(picks) == 192 // band_len[band[0]] and picks.max() < 8
        np.add.at(seen, picks.numpy(), 1)
    share = seen[:8] / seen.sum()  # each of the 8 drawn 1/8 of the time, whatever its band
    assert np.abs(share - 1 / 8).max() < 0.01 and seen[8:].sum() == 0, share
