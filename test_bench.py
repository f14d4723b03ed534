"""
Tests of bench.py: GSM8K scoring as openai/grade-school-math and lm-evaluation-harness do it (quirks included),
lm-eval's prompts, batched generation equal to one prompt at a time (Llama and RWKV-7), and the eval, perplexity,
speed, curves and distill tasks on tiny random models (documents start with the tokenizer's BOS where it has one).
CPU, no network, nothing from ../shared (a test that reads the real GSM8K file skips without it).

    OMP_NUM_THREADS=1 python -m pytest test_bench.py -x -q
"""

import dataclasses
import importlib.util
import json
import math
import os
import random
import re
import sys

import numpy as np
import pytest
import torch

import bench
import chat
import gsm_synth
from configurator import ConfigError
from conftest import SHARED, run as run_script  # (`run` here: the fixture of a saved run)
from model_llama import Llama, LlamaConfig
from model_rwkv7 import RWKV7, RWKV7Config
from shards import write_shard
from tokenizer import get_tokenizer

GOLD = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at the "
        "farmer's market.\n#### 18")
# GSM8K-format solutions with the answer shapes GSM8K has: commas, negatives, decimals, money
SAMPLE = [{'question': 'q', 'answer': a} for a in (
    GOLD, "He has 1,200 + 34 = <<1200+34=1234>>1,234 coins.\n#### 1,234", "It is 3 - 5 = -2 degrees.\n#### -2",
    "Each costs 7 / 2 = $<<7/2=3.5>>3.50.\n#### 3.5", "She pays $20 + $5 = $<<20+5=25>>25.\n#### 25",
    "Total 0.5 * 10 = 5.\n#### 5")] + gsm_synth.generate('test', 40)


def tiny(kind, block_size=64, vocab_size=320, noise=0.1, **kw):
    """A 2-layer, 64-wide random model with noise on its matrices (RWKV-7's zero-initialised outputs too), so its
    greedy continuations vary; eval mode."""
    torch.manual_seed(0)
    if kind == 'llama':
        m = Llama(LlamaConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=4, n_kv_head=2,
                              n_embd=64))
    else:
        m = RWKV7(RWKV7Config(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_embd=64, head_size=16, **kw))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.add_(torch.randn_like(p) * noise)
    return m.eval()


# ---------------------------------------------------------------------------- scoring
def test_lm_eval_quirks_exact_strings():
    # gsm8k_cot strict-match: 'The answer is (...).' needs a character after the number, so at the very end of a
    # completion the group gives back its last digit to the final '.': '1', wrong
    s = bench.score_gsm8k("Janet makes 9 * 2 = 18 dollars. The answer is 18", GOLD, 'gsm8k_cot')
    assert s['strict-match_pred'] == '1' and not s['strict-match']
    assert s['flexible-extract_pred'] == '18' and s['flexible-extract']
    s = bench.score_gsm8k("The answer is 18.", GOLD, 'gsm8k_cot')
    assert s['strict-match_pred'] == '18' and s['strict-match'] and s['flexible-extract_pred'] == '18.'
    assert s['flexible-extract']  # '\.$' drops the final period
    # '$18.00': only ',', '$' and a final '.' are removed, so '18.00' != '18'
    s = bench.score_gsm8k("She makes $18.00", GOLD, 'gsm8k')
    assert s['flexible-extract_pred'] == '$18.00' and not s['flexible-extract']
    assert s['official_pred'] == s['strict-match_pred'] == '[invalid]' and not s['official'] and not s['strict-match']
    # '####18' without the space: the official and strict-match regexes need '#### '
    s = bench.score_gsm8k("9 * 2 = 18\n####18", GOLD, 'gsm8k')
    assert s['official_pred'] == '[invalid]' and s['strict-match_pred'] == '[invalid]'
    assert not s['official'] and not s['strict-match'] and s['flexible-extract']
    s = bench.score_gsm8k("####18", GOLD, 'gsm8k_cot')
    assert s['official_pred'] == '[invalid]' and s['flexible-extract']
    # official: the FIRST '#### N' (re.search), commas removed; strict-match's '1,8' loses its comma when compared
    s = bench.score_gsm8k("#### 1,8 and later #### 7", GOLD)
    assert s['official_pred'] == '18' and s['official'] and s['strict-match_pred'] == '1,8' and s['strict-match']
    s = bench.score_gsm8k("#### 7\n#### 18", GOLD)
    assert s['official_pred'] == '7' and not s['official'] and not s['strict-match']
    # flexible-extract: the last match; a tuple takes its non-empty group; a lone digit matches the second group
    assert bench.regex_filter("a 12, then 3", bench.FLEX, -1) == '3'
    assert bench.regex_filter("costs $1,234.", bench.FLEX, -1) == '$1,234.'
    assert bench.regex_filter("no number", bench.FLEX, -1) == '[invalid]'
    # case folding and the gsm8k reference: the whole solution with everything up to '#### ' removed
    assert bench.lm_eval_match('18', GOLD) and not bench.lm_eval_match('18', '18.5')
    # final-answer: our format, numbers normalised
    s = bench.score_gsm8k("<think>\n9 * 2 = 18\n</think>\n\n**Final Answer:** $18.00", GOLD)
    assert s['final-answer'] and s['final-answer_pred'] == '18' and not s['flexible-extract']  # '18.00' again
    assert bench.score_gsm8k("18", GOLD)['final-answer_pred'] is None
    with pytest.raises(ValueError, match="'#### N'"):
        bench.score_gsm8k("18", "no answer line")
    with pytest.raises(ValueError, match="task"):
        bench.score_gsm8k("18", GOLD, 'mmlu')


def test_gold_answers_score_100_percent():
    for task in ('gsm8k', 'gsm8k_cot'):
        scores = [bench.score_gsm8k(p['answer'], p['answer'], task) for p in SAMPLE]
        assert all(s['official'] and s['flexible-extract'] for s in scores), task
    assert all(bench.score_gsm8k(p['answer'], p['answer'])['strict-match'] for p in SAMPLE)  # gsm8k: '#### N'


def test_gold_answers_real_gsm8k():
    path = os.path.join(SHARED, 'data', 'gsm8k', 'test.jsonl')
    if not os.path.isfile(path):
        pytest.skip("../shared/data/gsm8k/test.jsonl not present")
    probs = bench.read_problems(path)
    assert len(probs) == 1319
    for task in ('gsm8k', 'gsm8k_cot'):
        assert all((s := bench.score_gsm8k(p['answer'], p['answer'], task))['official'] and s['flexible-extract']
                   for p in probs)


def test_custom_match_vote_interval():
    assert bench.custom_match('1,234', '1234') and bench.custom_match('$5.00', '5') and bench.custom_match('7', '7.0')
    assert not bench.custom_match('8', '7') and bench.custom_match(' Paris ', 'paris')
    assert bench.custom_match('18', GOLD) and not bench.custom_match('Lyon', 'Paris')
    assert bench.custom_answer("<think>\nx\n</think>\n\n**Final Answer:** 42") == '42'
    assert bench.custom_answer(" Paris\n\nQuestion: next") == 'Paris'
    assert bench.vote(['3', '5', '5', '3', '[invalid]']) == '3'  # a tie goes to the first seen
    preds, correct = bench.judge_samples(["#### 18", "#### 7", "#### 18", "**Final Answer:** 7"], GOLD)  # maj@4
    assert preds['official'] == '18' and correct['official'] and preds['final-answer'] == '7'  # (the one that has one)
    assert not correct['final-answer']
    assert bench.judge_samples(['Lyon', 'paris'], 'Paris', 'custom') == ({'match': 'Lyon'}, {'match': False})
    lo, hi = bench.wilson(0, 10)
    assert lo == 0 and 0.25 < hi < 0.35
    lo, hi = bench.wilson(50, 100)
    assert math.isclose(lo + hi, 1.0) and 0.40 < lo < 0.41


def test_fewshot_prompts_as_lm_eval():
    train = [{'question': f"tq{i}", 'answer': f"ta{i}\n#### {i}"} for i in range(30)]
    probs = [{'question': 'Q1?', 'answer': '#### 1'}, {'question': 'Q2?', 'answer': '#### 2'}]
    texts = bench.fewshot_texts(probs, train, 'gsm8k')
    rnd = random.Random(1234)  # one generator for the whole run, drawn per problem in order
    for p, t in zip(probs, texts):
        shots = rnd.sample(train, 5)
        assert t == ''.join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots) + \
            f"Question: {p['question']}\nAnswer:"
    assert texts[0].split('\n\n')[0] != texts[1].split('\n\n')[0]  # other shots for the next problem
    cot = bench.fewshot_texts(probs, None, 'gsm8k_cot')[0]
    assert cot.count('Q: ') == 9 and cot.startswith("Q: There are 15 trees in the grove.") and cot.endswith(
        "The answer is 8.\n\nQ: Q1?\nA:")
    assert len(bench.COT_SHOTS) == 8 and all(a.endswith(f"The answer is {a.split()[-1]}") for _, a in bench.COT_SHOTS)


# ---------------------------------------------------------------------------- batched generation
def padded(prompts, pad=0):
    T = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), T), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.bool)
    for b, p in enumerate(prompts):
        idx[b, T - len(p):], mask[b, T - len(p):] = torch.tensor(p), True
    return idx, mask


@pytest.mark.parametrize('kind,impl,block', [('llama', '', 64), ('llama', '', 24), ('rwkv7', 'chunked', 64),
                                             ('rwkv7', 'naive', 64)])
def test_batched_greedy_equals_unbatched(kind, impl, block):
    model = tiny(kind, block, **({'wkv_impl': impl} if impl else {}))
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (5, 17, 1, 11, 17, 3)]
    idx, mask = padded(prompts, pad=7)
    n = 30  # block 24: the longest rows run past block_size and crop
    batched = model.generate(idx, n, temperature=0, attention_mask=mask)[:, idx.size(1):]
    alone = [model.generate(torch.tensor([p]), n, temperature=0)[0, len(p):] for p in prompts]
    assert all(torch.equal(a, b) for a, b in zip(alone, batched))
    assert len({tuple(a.tolist()) for a in alone}) == len(prompts)  # the rows really differ
    # with stop tokens: a finished row repeats its stop token, the others go on as alone
    stop = [int(alone[0][3])]
    batched = model.generate(idx, n, temperature=0, stop_tokens=stop, attention_mask=mask)[:, idx.size(1):]
    for a, b, p in zip(alone, batched, prompts):
        a2 = model.generate(torch.tensor([p]), n, temperature=0, stop_tokens=stop)[0, len(p):]
        cut = a2.tolist().index(stop[0]) + 1 if stop[0] in a2.tolist() else len(a2)
        assert b[:cut].tolist() == a2[:cut].tolist()


def test_llama_padded_logits_match_rows():
    model = tiny('llama')
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    idx, mask = padded(prompts)
    logits, _ = model(idx, attention_mask=mask)
    for b, p in enumerate(prompts):
        alone, _ = model(torch.tensor([p]))
        torch.testing.assert_close(logits[b, -len(p):], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.isnan(logits).any()  # pad queries attend themselves: no empty softmax


def test_rwkv_prefill_padded():
    model = tiny('rwkv7')
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12]]
    idx, mask = padded(prompts)
    logits, state = model.prefill_padded(idx, mask)
    for b, p in enumerate(prompts):
        lg, st = model.step(torch.tensor([p]))
        torch.testing.assert_close(logits[b, 0], lg[0, -1])
        for k in st:
            torch.testing.assert_close(state[k][:, b], st[k][:, 0])
    with pytest.raises(ValueError, match='left padding'):
        model.prefill_padded(idx, mask.flip(1))


class Scripted:
    """A stand-in model whose generate_stream yields the given rows of tokens (to test stop handling alone)."""

    def __init__(self, rows):
        self.rows, self.steps = rows, 0

    def generate_stream(self, idx, n, *args, **kw):
        for t in range(min(n, max(map(len, self.rows)))):
            self.steps += 1
            yield torch.tensor([r[t] if t < len(r) else 0 for r in self.rows])


def test_chat_prompts_are_cut_as_sample_cuts_them():
    # a question too long for a Llama's context loses its start; the system prompt and the question's end stay
    tok, question = get_tokenizer('byte'), 'the start ' + 'q' * 900 + ' the end?'
    llama = Llama(LlamaConfig(n_layer=1, n_head=2, n_kv_head=1, n_embd=16, vocab_size=320, block_size=512))
    ids, cut = bench.chat_ids(llama, tok, question, 32)
    assert cut and ids == chat.fit_prompt(tok, question, 512 - 32)[0] and len(ids) == 480
    text = tok.decode(ids)
    assert text.startswith(tok.decode(chat.prompt(tok, 'x')[:40])) and 'the start' not in text
    assert text.endswith(' the end?<|im_end|>\n<|im_start|>assistant\n')
    assert bench.chat_ids(llama, tok, 'short?', 32) == (chat.prompt(tok, 'short?'), False)
    rwkv = RWKV7(RWKV7Config(n_layer=1, n_embd=32, head_size=16, vocab_size=320, block_size=64))
    assert bench.chat_ids(rwkv, tok, question, 32) == (chat.prompt(tok, question), False)  # no context limit


def test_complete_stop_strings_and_tokens(monkeypatch):
    monkeypatch.setattr(bench, 'device', 'cpu')
    tok = get_tokenizer('byte')
    rows = [list(b" 9 * 2 = 18\n#### 18\n\nQuestion: next one and more text") + [1] * 40,
            list(b" 5") + [tok.eot_id] + [65] * 60]
    m = Scripted(rows)
    out = bench.complete(m, tok, [[1, 2, 3], [4]], [tok.eot_id], bench.STOPS['gsm8k'])
    assert out == [" 9 * 2 = 18\n#### 18\n\n", " 5"]
    assert m.steps == len(" 9 * 2 = 18\n#### 18\n\nQuestion:")  # stopped once every row had stopped
    # few-shot text as lm-eval decodes it: special tokens dropped, not only the stop tokens
    think = tok.special['<think>']
    rows = [list(b" 7") + [think] + list(b"\n#### 7") + [tok.eot_id] * 5]
    assert bench.complete(Scripted(rows), tok, [[1]], [tok.eot_id]) == [" 7<think>\n#### 7"]
    assert bench.complete(Scripted(rows), tok, [[1]], [tok.eot_id], plain=True) == [" 7\n#### 7"]


# ---------------------------------------------------------------------------- tasks on a saved tiny run
@pytest.fixture
def run(tmp_path, monkeypatch):
    """A run folder with a tiny Llama checkpoint (byte tokenizer), a test set and a train set beside it."""
    tok = get_tokenizer('byte')
    model = tiny('llama', block_size=128)
    d = tmp_path / 'run'
    d.mkdir()
    torch.save({'model': model.state_dict(), 'model_type': 'llama', 'model_args': dataclasses.asdict(model.config),
                'config': {'data_dir': str(tmp_path / 'data'), 'batch_size': 4, 'block_size': 32},
                'tokenizer': tok.state(), 'iter_num': 7}, d / 'best.pt')
    probs = gsm_synth.generate('test', 6)
    for name, rows in (('test.jsonl', probs), ('train.jsonl', gsm_synth.generate('train', 12))):
        (tmp_path / name).write_text(''.join(json.dumps({'question': p['question'], 'answer': p['answer']}) + '\n'
                                             for p in rows))
    for k, v in dict(out_dir=str(d), data=str(tmp_path / 'test.jsonl'), device='cpu', max_new_tokens=12, limit=0,
                     prompt='chat', fewshot_task='gsm8k', fewshot_data='', num_samples=1, temperature=0.0, ckpt='',
                     batch_size=16, data_dir='', seed=1337).items():
        monkeypatch.setattr(bench, k, v)
    return d


def test_eval_batched_equals_unbatched_and_outputs(run, monkeypatch, capsys):
    results = {}
    for prompt in ('chat', 'fewshot'):
        monkeypatch.setattr(bench, 'prompt', prompt)
        for bs in (1, 4):
            monkeypatch.setattr(bench, 'batch_size', bs)
            rec = bench.bench_eval('gsm8k')
            lines = [json.loads(x) for x in open(run / f'gsm8k_{prompt}.jsonl')]
            results[prompt, bs] = [x['output'] for x in lines]
        assert results[prompt, 1] == results[prompt, 4]
        assert len(lines) == 6 and set(lines[0]) == {'index', 'question', 'answer', 'prompt', 'output', 'preds',
                                                     'correct'}
        assert set(lines[0]['correct']) == set(bench.FIGURES) and rec['problems'] == 6 and rec['prompt'] == prompt
        assert rec['problems_per_min'] > 0 and set(rec['results']) == set(bench.FIGURES)
    # the 5-shot prompt is longer than block_size 128 - max_new_tokens 12: cut on the left, as lm-eval does
    assert lines[0]['prompt'].endswith('\nAnswer:') and len(lines[0]['prompt'].encode()) == 128 - 12
    out = capsys.readouterr().out
    assert '| official |' in out and '| final-answer |' in out and 'problems/min' in out
    recs = [json.loads(x) for x in open(run / 'bench.jsonl')]
    assert len(recs) == 4 and recs[0]['task'] == 'gsm8k'
    # gsm8k_cot, maj@k with sampling, custom and a limit
    monkeypatch.setattr(bench, 'fewshot_task', 'gsm8k_cot')
    monkeypatch.setattr(bench, 'limit', 2)
    monkeypatch.setattr(bench, 'num_samples', 3)
    monkeypatch.setattr(bench, 'temperature', 1.0)
    rec = bench.bench_eval('gsm8k')
    lines = [json.loads(x) for x in open(run / 'gsm8k_fewshot_cot_maj3.jsonl')]
    assert rec['problems'] == 2 and len(lines) == 2 and len(lines[0]['output']) == 3
    assert lines[0]['prompt'].endswith(f"{lines[0]['question'][-20:]}\nA:")
    monkeypatch.setattr(bench, 'prompt', 'chat')
    monkeypatch.setattr(bench, 'num_samples', 1)
    rec = bench.bench_eval('custom')
    assert set(rec['results']) == {'match'} and os.path.isfile(run / 'custom_chat.jsonl')


def test_gsm_synth_generalization_table(run, monkeypatch, tmp_path, capsys):
    # no --data: one row per split of gsm_synth.suite, held out from the run's data settings (its meta.json), the
    # in-distribution row from its test.jsonl, and real GSM8K when --gsm8k_data is given
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    (data_dir / 'meta.json').write_text(json.dumps({'args': {'synth_seed': 3, 'synth_min_steps': 1,
                                                             'synth_max_steps': 2, 'synth_digits': 1}}))
    inside = gsm_synth.generate('test', 4, seed=3, min_steps=1, max_steps=2, digits=1)
    (data_dir / 'test.jsonl').write_text(''.join(json.dumps(p) + '\n' for p in inside))
    for k, v in dict(data='', split_size=3, gsm8k_data=str(tmp_path / 'test.jsonl')).items():
        monkeypatch.setattr(bench, k, v)
    sets = bench.synth_suite(str(data_dir))
    assert list(sets) == list(gsm_synth.suite()) + ['real GSM8K']
    assert [p['question'] for p in sets['in-distribution']] == [p['question'] for p in inside[:3]]
    assert len(sets['real GSM8K']) == 6
    assert {p['steps'] for p in sets['+1 step']} == {3} and {p['steps'] for p in sets['+2 steps']} == {4}
    assert max(int(n) for p in sets['+1 digit'] for n in re.findall(r'\d+', p['question'])) >= 10
    assert sets['+1 digit'] == gsm_synth.generate('test', 3, seed=3, min_steps=1, max_steps=2, digits=2)
    rec = bench.bench_eval('gsm_synth')
    assert rec['figure'] == 'final-answer' and rec['problems'] == 7 * 3 + 3 + 6 and list(rec['results']) == list(sets)
    assert all(r['final-answer']['problems'] == len(sets[k]) for k, r in rec['results'].items())
    lines = [json.loads(x) for x in open(run / 'gsm_synth_chat.jsonl')]
    assert [x['split'] for x in lines] == [k for k, ps in sets.items() for _ in ps]
    out = capsys.readouterr().out
    assert '| split | what changes | accuracy |' in out and '| +2 steps | two more steps than training |' in out
    assert '| real GSM8K |' in out


def test_eval_errors(run, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, 'data', str(tmp_path / 'missing.jsonl'))
    with pytest.raises(ConfigError, match='not found'):
        bench.bench_eval('gsm8k')
    monkeypatch.setattr(bench, 'data', '')
    with pytest.raises(ConfigError, match='--data'):
        bench.bench_eval('custom')
    monkeypatch.setattr(bench, 'out_dir', str(tmp_path / 'nothing'))
    with pytest.raises(ConfigError, match='no checkpoint'):
        bench.bench_eval('gsm_synth')
    monkeypatch.setattr(bench, 'out_dir', str(run))
    monkeypatch.setattr(bench, 'num_samples', 4)
    with pytest.raises(ConfigError, match='temperature > 0'):
        bench.bench_eval('gsm8k')


def test_cli_errors_are_one_line(tmp_path):
    for args, msg in ((['--task=nope'], "unknown task 'nope'"),
                      (['--task=gsm8k', f'--out_dir={tmp_path}', '--data=x.jsonl'], 'no checkpoint')):
        p = run_script('bench.py', *args, cwd=tmp_path, check=False, timeout=120)
        lines = p.stderr.splitlines()  # the first says the threads it runs on, then one error line
        assert p.returncode == 1 and lines[0].startswith('bench.py: ') and ' threads, device ' in lines[0], p.stderr
        assert len(lines) == 2 and lines[1].startswith('bench.py: error: ') and msg in lines[1], p.stderr


def test_perplexity_text_and_chat_shards(run, monkeypatch, tmp_path, capsys):
    tok = get_tokenizer('byte')
    text = "Ünïcödé text, ✓ 😀. " * 20
    (tmp_path / 'a.txt').write_text(text, encoding='utf-8')
    rec = bench.bench_perplexity(str(tmp_path / 'a.txt'))
    ids = [tok.eot_id] + tok.encode(text)
    assert rec['tokens'] == len(ids) - 1 and rec['bytes'] == len(text.encode('utf-8'))
    model, _, _ = bench.load_run(str(run))
    with torch.no_grad():  # the same windows of block_size, by hand
        ws = [ids[s:s + 129] for s in range(0, len(ids) - 1, 128)]
        nats = sum(model(torch.tensor([w[:-1]]), torch.tensor([w[1:]]))[1].item() * (len(w) - 1) for w in ws)
    assert math.isclose(rec['loss'], nats / rec['tokens'], rel_tol=1e-5)
    assert math.isclose(rec['bits_per_byte'], nats / math.log(2) / rec['bytes'], rel_tol=1e-5)
    # chat val shards: only the supervised tokens count, each example from its start
    d = tmp_path / 'data'
    d.mkdir()
    toks, masks, idx = [], [], []
    for q, a in (('2+2?', '4'), ('Say hi', 'hi there')):
        ex, m = chat.render(tok, [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': a}])
        idx.append((len(toks), len(ex) + 1, 0))
        toks += [tok.eot_id] + ex
        masks += [0] + m
    write_shard(str(d / 'val_000.bin'), toks, 320)
    write_shard(str(d / 'mask_val_000.bin'), masks, 2)
    np.save(d / 'idx_val_000.npy', np.array(idx, dtype=np.int64))
    (d / 'meta.json').write_text(json.dumps({'tokenizer': 'byte', 'vocab_size': tok.vocab_size, 'format': 'chat'}))
    rec = bench.bench_perplexity()
    assert rec['tokens'] == sum(masks) and 'supervised' in rec['counted']
    assert rec['bytes'] == len('4<|im_end|>'.encode()) + len('hi there<|im_end|>'.encode())
    assert 'bits/byte' in capsys.readouterr().out


def test_documents_start_with_bos_where_the_tokenizer_has_one(run, monkeypatch, tmp_path):
    # perplexity windows start with BOS, else end-of-text; an hf: tokenizer whose post-processor puts <s> first (Llama 2's '<s> $A'), and the byte one (no BOS)
    tokenizers = pytest.importorskip('tokenizers')
    tk = tokenizers.Tokenizer(tokenizers.models.BPE())
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.train_from_iterator(["Question: how many apples? Answer: 18"] * 5, tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=['<unk>', '<s>', '</s>'], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = tokenizers.processors.TemplateProcessing(single='<s> $A', special_tokens=[('<s>', 1)])
    tk.save(str(tmp_path / 'tokenizer.json'))
    text = "Question: how many apples? Answer: 18. " * 8
    (tmp_path / 'a.txt').write_text(text)
    monkeypatch.setattr(bench, 'prompt', 'fewshot')
    for tok, first in ((get_tokenizer('hf:' + str(tmp_path / 'tokenizer.json')), 1), (get_tokenizer('byte'), 256)):
        assert first == (tok.eot_id if tok.bos_id is None else tok.bos_id)
        model = tiny('rwkv7', vocab_size=tok.vocab_size)  # no context limit: few-shot prompts are not cut
        monkeypatch.setattr(bench, 'load_run', lambda *a: (model, tok, {'path': 'm', 'config': {}}))
        prompts = []
        monkeypatch.setattr(bench, 'complete', lambda m, t, ps, *a, **k: prompts.extend(ps) or [''] * len(ps))
        bench.bench_eval('gsm8k')
        # few-shot prompts as lm-eval's HF tokenizer encodes them: BOS where there is one, no end-of-text
        lead = [] if tok.bos_id is None else [tok.bos_id]
        assert len(prompts) == 6 and all(p[:len(lead)] == lead and tok.decode(p[len(lead):]).startswith('Question: ')
                                         and first not in p[len(lead):] for p in prompts)
        rec = bench.bench_perplexity(str(tmp_path / 'a.txt'))
        ids = [first] + tok.encode(text, special=False)
        with torch.no_grad():  # windows of block_size 64 after the first token, by hand
            ws = [ids[s:s + 65] for s in range(0, len(ids) - 1, 64)]
            nats = sum(model(torch.tensor([w[:-1]]), torch.tensor([w[1:]]))[1].item() * (len(w) - 1) for w in ws)
        assert rec['tokens'] == len(ids) - 1 and math.isclose(rec['loss'], nats / rec['tokens'], rel_tol=1e-5)


def test_speed_and_generate_tasks(monkeypatch, tmp_path, capsys):
    for k, v in dict(out_dir=str(tmp_path), config='', device='cpu', n_layer=2, n_embd=64, n_head=4, n_kv_head=2,
                     head_size=16, vocab_size=320, block_size=32, train_batch=2, burn_in=1, steps=1, repeats=1,
                     contexts='8,40', new_tokens=2, impls='naive,chunked', profile=True, compile=False,
                     dtype='auto').items():
        monkeypatch.setattr(bench, k, v)
    for kind in ('llama', 'rwkv7'):
        monkeypatch.setattr(bench, 'model_type', kind)
        rec = bench.bench_speed()
        train = [r for r in rec['results'] if 'tok_per_s' in r]
        gen = [r for r in rec['results'] if 'context' in r]
        assert len(train) == (1 if kind == 'llama' else 2) and all(r['tok_per_s'] > 0 and r['peak_mem_bytes'] > 0
                                                                     for r in train)
        assert {r['context'] for r in gen} == {8, 40} and all(r['decode_tok_per_s'] > 0 for r in gen)
    assert os.path.isfile(tmp_path / 'trace_llama_sdpa.json') and os.path.isfile(tmp_path / 'trace_rwkv7_naive.json')
    monkeypatch.setattr(bench, 'profile', False)
    rec = bench.bench_speed(train=False)
    assert rec['task'] == 'generate' and all('context' in r for r in rec['results'])
    monkeypatch.setattr(bench, 'vs_official', True)  # the rwkv7 model: against BlinkDL's package on its weights
    if importlib.util.find_spec('rwkv') is None:
        with pytest.raises(ConfigError, match='pip install rwkv'):
            bench.bench_speed(train=False)
    else:
        rec = bench.bench_speed(train=False)
        assert {r['context'] for r in rec['results'] if r.get('official_decode_tok_per_s', 0) > 0} == {8, 40}
        assert '| context | ours | rwkv package | ours / package |' in capsys.readouterr().out
    monkeypatch.setattr(bench, 'model_type', 'llama')  # a Llama: sampling against transformers' generate
    if importlib.util.find_spec('transformers') is not None:
        rec = bench.bench_speed(train=False)
        rows = [r for r in rec['results'] if 'transformers_tok_per_s' in r]
        assert [r['batch'] for r in rows] == [1, 8] and all(r['ours_tok_per_s'] > 0 for r in rows)
        assert '| batch | ours | transformers | ours / transformers |' in capsys.readouterr().out
    monkeypatch.setattr(bench, 'vs_official', False)
    # a train.py config file: its shape, batch and block
    cfg = tmp_path / 'c.py'
    cfg.write_text("model_type = 'llama'\nn_layer = 1\nn_head = 2\nn_kv_head = 1\nn_embd = 32\nblock_size = 16\n"
                   "batch_size = 3\nlearning_rate = 1e-3\ndata_dir = 'nowhere'\n")
    monkeypatch.setattr(bench, 'config', str(cfg))
    monkeypatch.setattr(bench, 'out_dir', '')
    monkeypatch.setattr(bench, 'train_batch', 0)
    monkeypatch.setattr(bench, 'block_size', 0)
    rec = bench.bench_speed()
    assert rec['batch'] == 3 and rec['block'] == 16 and rec['model_type'] == 'llama'
    assert '| train tok/s |' in capsys.readouterr().out


def test_curves(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, 'out_dir', str(tmp_path))
    with pytest.raises(ConfigError, match='log.jsonl'):
        bench.bench_curves()
    (tmp_path / 'log.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in (
        {'iter': 0, 'train_loss': 5.0, 'val_loss': 5.1, 'lr': 0.0},
        {'iter': 10, 'loss': 4.0, 'lr': 1e-3, 'tok_per_s': 1000.0, 'mfu': None},
        {'iter': 20, 'train_loss': 3.0, 'val_loss': 3.2, 'lr': 9e-4, 'gsm8k_acc': 0.1})))
    with monkeypatch.context() as m:
        m.setitem(sys.modules, 'matplotlib', None)  # as if it were not installed
        with pytest.raises(ConfigError, match='pip install matplotlib'):
            bench.bench_curves()
    pytest.importorskip('matplotlib')
    rec = bench.bench_curves()
    assert os.path.getsize(tmp_path / 'curves.png') > 1000 and 'gsm8k_acc' in rec['series']


def test_distill_keeps_right_answers(run, monkeypatch):
    probs = [json.loads(x) for x in open(bench.data)][:2]
    golds = [chat.gsm8k_parts(p['answer'])[1] for p in probs]
    replies = [f"<think>\nok\n</think>\n\n**Final Answer:** {golds[0]}", "**Final Answer:** -1",
               f"<think>\nok\n</think>\n\n**Final Answer:** {golds[0]}",  # a duplicate: kept once
               "**Final Answer:** -1", "no answer", "**Final Answer:** -2"]
    monkeypatch.setattr(bench, 'complete', lambda model, tok, prompts, *a: replies[:len(prompts)])
    monkeypatch.setattr(bench, 'num_samples', 3)
    monkeypatch.setattr(bench, 'temperature', 0.8)
    monkeypatch.setattr(bench, 'limit', 2)
    monkeypatch.setattr(bench, 'batch_size', 6)
    rec = bench.bench_distill()
    assert (rec['samples'], rec['kept'], rec['solved']) == (6, 1, 1)
    msgs = [json.loads(x)['messages'] for x in open(run / 'distill.jsonl')]
    assert msgs == [[{'role': 'user', 'content': probs[0]['question']}, {'role': 'assistant', 'content': replies[0]}]]
    assert chat.to_messages({'messages': msgs[0]}) == msgs[0]  # what prepare.py --format=chat reads


def test_memory_task(monkeypatch, tmp_path, capsys):
    bnb = pytest.importorskip('bitsandbytes')
    if tuple(int(x) for x in bnb.__version__.split('.')[:2]) < (0, 50):
        pytest.skip('QLoRA on CPU needs bitsandbytes >= 0.50')
    monkeypatch.setattr(bench, 'memory_mode', 'nf5')
    with pytest.raises(ConfigError, match='unknown memory_mode'):
        bench.bench_memory()
    # 2 x 256, no GQA: every adapter has >= 4096 elements, so 8-bit AdamW keeps all its moments in 8 bits
    for k, v in dict(out_dir=str(tmp_path), device='cpu', memory_preset='', memory_mode='', n_layer=2, n_embd=256,
                     n_head=4, n_kv_head=4, vocab_size=320, block_size=32, train_batch=1).items():
        monkeypatch.setattr(bench, k, v)
    rec = bench.bench_memory()  # each mode in its own process
    out = capsys.readouterr().out
    assert '| mode | trainable params | peak MiB | ratio to full |' in out and '| QLoRA, 8-bit AdamW | 157,696 |' in out
    r = rec['results']
    assert r['full']['params'] == r['full']['trainable'] == 1_688_832 and r['lora']['trainable'] == 157_696
    assert 0.5 < rec['nf4_bytes_per_weight'] < 0.55 and 2.0 < rec['adamw8bit_state_bytes_per_trainable'] < 2.1
    assert r['full']['state_bytes_per_trainable'] == pytest.approx(8.0, abs=1e-3)  # AdamW: two fp32 moments
    full = r['full']['peak_bytes']
    assert full > 16 * 1_688_832  # at least weights, gradients and the two moments in fp32
    assert r['qlora']['peak_bytes'] < 0.6 * full and r['qlora8']['peak_bytes'] < 0.6 * full
    assert json.loads(open(tmp_path / 'bench.jsonl').readlines()[-1])['task'] == 'memory'
