"""
Benchmarks and evaluations that print figures as markdown tables (never timed tests). With out_dir set, every task
also appends a JSON record to out_dir/bench.jsonl.

    python bench.py --task=gsm8k --out_dir=out-sft --data=../shared/data/gsm8k/test.jsonl   # chat prompt, greedy
    python bench.py --task=gsm8k --out_dir=out-base --prompt=fewshot         # lm-eval's gsm8k, 5-shot (openai/gsm8k)
    python bench.py --task=gsm8k --out_dir=out-base --prompt=fewshot --fewshot_task=gsm8k_cot   # 8 Wei et al. shots
    python bench.py --task=gsm8k --out_dir=out-sft --num_samples=8 --temperature=0.7 ...        # maj@8
    python bench.py --task=gsm_synth --out_dir=out-reasoning-llama --limit=200
    python bench.py --task=custom --out_dir=run --data=qa.jsonl              # {question, answer}: numeric or exact
    python bench.py --task=perplexity --out_dir=run                          # val shards, or --data=file.txt
    python bench.py --task=speed --config=config/micro.py                    # train tok/s, MFU, memory, decode speed
    python bench.py --task=curves --out_dir=run                              # log.jsonl -> curves.png (matplotlib)
    python bench.py --task=distill --out_dir=run --data=train.jsonl --num_samples=4 --temperature=0.8
    python bench.py --task=wkv                                               # WKV7 implementations
    python bench.py --task=generate --model_type=rwkv7 --n_layer=12 --n_embd=512   # decode speed vs context
    python bench.py --task=generate --out_dir=out-reasoning-rwkv --vs_official=True  # vs BlinkDL's rwkv package
    python bench.py --task=memory                                            # full vs LoRA vs QLoRA step memory

GSM8K scoring (gsm8k_eval.py; score_gsm8k is importable from there or from here) gives four figures side by side:
`official` (openai/grade-school-math: the first '#### N'), lm-eval's `strict-match` and `flexible-extract` (their
regexes, group selection, regexes_to_ignore and case folding, quirks included) and `final-answer`
(chat.final_answer, our reasoning format). The performance tasks (speed, generate, wkv, memory) are in bench_perf.py,
configured from here.
"""

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter

import torch

import bench_perf
import chat
from bench_perf import MEMORY_MODES, table
from checkpoint import CheckpointError, find_checkpoint, load_model
from configurator import ConfigError, configure, pick_device
from data import perplexity, read_text
from gsm8k_eval import (  # noqa: F401 (bench.score_gsm8k and the rest stay importable from here)
    COT_SHOTS, FIGURES, FLEX, STOPS, custom_answer, custom_match, extract_gsm8k, fewshot_texts, judge_gsm8k,
    judge_samples, lm_eval_match, official_extract, regex_filter, score_gsm8k, vote, wilson)

# -----------------------------------------------------------------------------
task = 'gsm_synth'        # gsm_synth | gsm8k | custom (a jsonl of question/answer: numeric or exact match) | accuracy
                          # (= gsm8k) | perplexity | curves | distill | all (perplexity, gsm8k with --data, speed,
                          # curves); performance: speed | generate (speed's decode half) | wkv | memory
out_dir = ''              # a run: its checkpoint is evaluated; results go there (bench.jsonl; per problem:
                          # <task>_<prompt>.jsonl)
ckpt = ''                 # '' = out_dir's best.pt if there is one, else its ckpt.pt; a file name in out_dir; a path
                          # to a checkpoint file (then out_dir may be left out); or hf:<folder or hub id> |
                          # llama2c:<file.bin>
device = 'auto'
threads = 0               # torch's CPU threads; 0 = PyTorch's default (one per core); printed first on stderr
seed = 1337
# evaluation: gsm8k, gsm_synth, custom, distill
data = ''                 # jsonl of {question, answer} ('' = openai/gsm8k online; gsm_synth: the generalization
                          # splits below); perplexity: a .txt file instead of the run's val shards
limit = 0                 # 0 = every problem (perplexity: every window or example; gsm_synth splits: split_size)
split_size = 200          # gsm_synth: problems per split of the generalization table (gsm_synth.suite): in-distribution
                          # (the run's test.jsonl), unseen wording, +1 and +2 steps, +1 digit, distractors, question
                          # first, all combined; each held out from the run's data settings (its meta.json)
gsm8k_data = ''           # gsm_synth: also a row for real GSM8K from this jsonl (../shared/data/gsm8k/test.jsonl)
prompt = 'chat'           # 'chat': chat.prompt, zero-shot, reasoning format | 'fewshot': lm-eval's plain-text prompt
fewshot_task = 'gsm8k'    # fewshot: 'gsm8k' (lm-eval's "Question: ...\nAnswer:", 5 train shots drawn as lm-eval
                          # draws them, random.Random(1234)) | 'gsm8k_cot' (8 fixed Wei et al. "Q: ... A: ... The
                          # answer is N." exemplars)
fewshot_data = ''         # train jsonl of the gsm8k shots; '' = train.jsonl beside --data (else openai/gsm8k train)
num_samples = 1           # k > 1: majority vote over k samples per problem (maj@k; needs temperature > 0)
temperature = 0.0         # 0 = greedy
max_new_tokens = 256
batch_size = 16           # sequences generated (or evaluated) together; k samples of a problem count k (Llama: left
                          # padding with a mask; RWKV-7: a padded prefill that keeps padding out of the state):
                          # batched and unbatched greedy outputs are identical (tested)
data_dir = ''             # perplexity: prepared data to read val shards from; '' = the run's data_dir
# speed / generate / wkv
config = ''               # speed: a train.py config file (model shape, batch_size, block_size); else out_dir or below
model_type = 'rwkv7'      # a random model of this shape when there is neither out_dir nor config
n_layer = 12
n_embd = 512
n_head = 8
n_kv_head = 4
head_size = 64
vocab_size = 50304
block_size = 0            # a Llama's context (0 = the one it trained with; longer: RoPE past trained positions); speed:
                          # the training sequence length (0 = the config's / model's, 256 otherwise)
train_batch = 0           # speed: training micro-batch; 0 = the config's batch_size (8 otherwise)
burn_in = 3               # speed: untimed training steps
steps = 10                # speed: timed training steps
dtype = 'auto'            # speed: autocast dtype of the training step ('auto': bf16/fp16 on CUDA, fp32 elsewhere)
profile = False           # speed: write a torch.profiler trace of 3 training steps to out_dir
contexts = '64,256,1024,2048'
new_tokens = 32           # decode steps timed after each context
repeats = 5
vs_official = False       # generate, on the CPU: the same weights in the peer, side by side: RWKV-7's decode against
                          # BlinkDL's rwkv package; a Llama's sampling at batch 1 and 8 against transformers' generate
compile = False           # wkv: also the torch.compile'd chunked WKV; speed: compile the training step's model;
                          # generate and the evaluations: RWKV-7's one-token decode step (RWKV7.compile_step; a
                          # Llama's decoding is not compiled)
B = 4                     # wkv: the shape (fp32)
H = 4
N = 64
T = 1024
impls = 'naive,chunked'   # wkv and speed: WKV implementations
chunk_len = 32
# memory: peak memory of a Llama's training step, full fine-tuning vs LoRA vs QLoRA, each mode in a fresh process
memory_preset = 'small'   # a model_llama preset (small: 12 x 768, GQA 12/4) with Llama 2's 32,000-token vocabulary,
                          # tied; '' = the shape flags (n_layer, n_embd, n_head, n_kv_head, vocab_size)
memory_mode = ''          # '' = every mode, each in a subprocess; full | lora | qlora | qlora8: this one, here
# -----------------------------------------------------------------------------
TASKS = ('wkv', 'generate', 'speed', 'gsm8k', 'gsm_synth', 'custom', 'accuracy', 'perplexity', 'curves', 'distill',
         'memory', 'all')


def record(name, rec):
    """Append {'task', 'time', 'out_dir', **rec} to out_dir/bench.jsonl when out_dir is set; returns the record."""
    rec = {'task': name, 'time': time.strftime('%Y-%m-%dT%H:%M:%S'), 'out_dir': out_dir, **rec}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, 'bench.jsonl'), 'a') as f:
            f.write(json.dumps(rec) + '\n')
    return rec


def load_run(path, name=''):
    """(model, tokenizer, checkpoint dict) of the checkpoint that `name` names for the run folder `path`
    (checkpoint.find_checkpoint: '' = best.pt if present, else ckpt.pt; a name in path; a path to a file), in eval
    mode on `device` (checkpoint.load_model; a Llama's context --block_size or its own). LoRA runs: best.pt holds the
    merged model. name 'hf:<folder or hub id>' or 'llama2c:<file.bin>': a pretrained model with its own tokenizer; path
    may then be ''. --compile=True: an RWKV-7 decodes through its compiled step (RWKV7.compile_step). Raises ConfigError
    when there is nothing to load."""
    if not path and not name:
        raise ConfigError("no checkpoint: set --out_dir to a trained run (or --ckpt to a checkpoint file)")
    try:
        model, tok, ck = load_model(find_checkpoint(path, name), device, block_size or None)
    except (FileNotFoundError, CheckpointError) as e:
        raise ConfigError(str(e)) from None
    return (model.compile_step() if compile and ck['model_type'] == 'rwkv7' else model), tok, ck


# ---------------------------------------------------------------------------- GSM8K data
def read_problems(path, what='--data'):
    """[{'question', 'answer'}, ...] from a jsonl file; ConfigError naming the file (and line) when it cannot."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what}='{path}' not found: a jsonl of {{\"question\", \"answer\"}} records")
    out = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: malformed JSON ({e})") from None
            if not isinstance(rec, dict) or not {'question', 'answer'} <= rec.keys():
                raise ConfigError(f"{path}:{n}: a record needs 'question' and 'answer'")
            out.append({'question': str(rec['question']), 'answer': str(rec['answer'])})
    return out


def hf_gsm8k(split):
    try:
        from datasets import load_dataset
        return [{'question': r['question'], 'answer': r['answer']}
                for r in load_dataset('openai/gsm8k', 'main', split=split)]
    except Exception as e:  # no datasets package, offline, hub errors
        raise ConfigError(f"could not load openai/gsm8k ({type(e).__name__}: {str(e)[:120]}); offline, give "
                          f"local files: --data=../shared/data/gsm8k/test.jsonl (train.jsonl beside it: the shots)") \
            from None


def synth_settings(data_dir):
    """The gsm_synth generator settings a data folder was prepared with, from its meta.json: (its dataset, the
    generate() keyword arguments among min_steps, max_steps, digits, distractors, question_first, made_up, the
    seed); ('', {}, 0) without a meta.json (the defaults)."""
    meta = os.path.join(data_dir, 'meta.json')
    args = json.load(open(meta)).get('args', {}) if os.path.isfile(meta) else {}
    keys = ('min_steps', 'max_steps', 'digits', 'distractors', 'question_first', 'made_up')
    return (args.get('dataset', ''), {k: args[f'synth_{k}'] for k in keys if f'synth_{k}' in args},
            args.get('synth_seed', 0))


def synth_suite(data_dir):
    """{split name: problems} of the gsm_synth generalization table (gsm_synth.suite) for a run trained on data_dir:
    its generator settings from data_dir/meta.json (the defaults without one), split_size problems each (--limit if
    given); in-distribution from data_dir/test.jsonl where there is one; real GSM8K (--gsm8k_data) last."""
    import gsm_synth
    _, settings, seed = synth_settings(data_dir)
    n = limit or split_size
    sets = {name: gsm_synth.generate('test', n, seed, **kw) for name, kw in gsm_synth.suite(**settings).items()}
    if os.path.isfile(os.path.join(data_dir, 'test.jsonl')):
        sets['in-distribution'] = read_problems(os.path.join(data_dir, 'test.jsonl'))[:n]
    if gsm8k_data:
        sets['real GSM8K'] = read_problems(gsm8k_data, '--gsm8k_data')[:limit or None]
    return sets


def eval_data(kind, run_cfg):
    """({name: test problems}, train problems for gsm8k-style shots or None, where the test problems come from) of
    `kind`: one set, or gsm_synth's generalization splits (synth_suite) when no --data is given."""
    need_shots = prompt == 'fewshot' and fewshot_task == 'gsm8k'
    if kind == 'gsm_synth':
        import gsm_synth
        sets = {data: read_problems(data)[:limit or None]} if data else synth_suite(run_cfg.get('data_dir', ''))
        train = read_problems(fewshot_data, '--fewshot_data') if fewshot_data else gsm_synth.generate('train', 1000)
        return sets, train if need_shots else None, data or 'gsm_synth.suite'
    if kind == 'custom' and not data:
        raise ConfigError("--task=custom needs --data=file.jsonl of {\"question\", \"answer\"} records")
    test, src = (read_problems(data), data) if data else (hf_gsm8k('test'), 'openai/gsm8k test')
    test = {src: test[:limit or None]}
    if not need_shots:
        return test, None, src
    if fewshot_data or data:
        what = '--fewshot_data' if fewshot_data else 'train.jsonl beside --data (or --fewshot_data)'
        return test, read_problems(fewshot_data or os.path.join(os.path.dirname(data), 'train.jsonl'), what), src
    return test, hf_gsm8k('train'), src


# ---------------------------------------------------------------------------- batched generation
def generate_ids(model, tok, prompts, stop_ids, max_new, temp=0.0, gen=None, stop_strs=(), device='cpu'):
    """Completions of prompts (lists of token ids, any lengths), generated together: left padding with an attention
    mask (Llama: KV cache; RWKV-7: a batched recurrent state), one generate_stream of at most max_new tokens, sampled
    at temperature temp (0: greedy) with generator gen. A completion ends at its first stop token (kept:
    a policy learns to stop) or stop string; the batch stops once every row has. Returns (ids, finished): the
    completions' token ids (lists of int) and whether each ended on a stop (False: cut at max_new)."""
    Bn, Tn = len(prompts), max(map(len, prompts))
    idx = torch.full((Bn, Tn), tok.eot_id, dtype=torch.long)
    mask = torch.zeros(Bn, Tn, dtype=torch.bool)
    for b, p in enumerate(prompts):
        idx[b, Tn - len(p):], mask[b, Tn - len(p):] = torch.tensor(p, dtype=torch.long), True
    outs, done = [[] for _ in prompts], [False] * Bn
    stream = model.generate_stream(idx.to(device), max_new, temp, stop_tokens=stop_ids, generator=gen,
                                   vocab_limit=tok.vocab_size, attention_mask=mask.to(device))
    try:
        for nxt in stream:
            for b, t in enumerate(nxt.tolist()):
                if done[b]:
                    continue
                outs[b].append(t)
                done[b] = t in stop_ids or any(s in tok.decode(outs[b][-32:]) for s in stop_strs)
            if all(done):
                break
    finally:
        stream.close()
    return outs, done


def complete(model, tok, prompts, stop_ids, stop_strs=(), temp=0.0, gen=None, plain=False):
    """Completions (str) of prompts (token id lists) by generate_ids with max_new_tokens: each ends before its first
    stop token or stop string. plain=True drops every special token from the text, as lm-eval's decode does
    (skip_special_tokens=True); else only the stop tokens go."""
    outs, _ = generate_ids(model, tok, prompts, stop_ids, max_new_tokens, temp, gen, stop_strs=stop_strs,
                           device=device)
    drop = set(tok.special_inv) if plain else set(stop_ids)
    texts = [tok.decode([t for t in o if t not in drop]) for o in outs]
    for s in stop_strs:  # lm-eval keeps the text before the first stop string
        texts = [t.split(s)[0] for t in texts]
    return texts


def fit(model, ids):
    """The last tokens of a few-shot prompt's ids that leave max_new_tokens of room in a Llama's context (truncated on
    the left as lm-eval does; RWKV-7 has no limit). Raises ConfigError when no room is left."""
    if not hasattr(model, 'layers'):
        return ids
    L = model.config.block_size
    if L <= max_new_tokens:
        raise ConfigError(f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in block_size {L}: lower it")
    return ids[-(L - max_new_tokens):]


def chat_ids(model, tok, question, max_new):
    """The chat prompt of question (chat.prompt), cut as sample.py cuts it (chat.fit_prompt: the system prompt stays,
    the question's start goes) to a Llama's context less max_new tokens, but never below half the context (a long
    reply then runs past block_size, see Llama.generate_stream). RWKV-7 has no limit. Returns (ids, whether cut)."""
    if not hasattr(model, 'layers'):
        return chat.prompt(tok, question), False
    L = model.config.block_size
    ids, note = chat.fit_prompt(tok, question, max(L - max_new, L // 2))
    return ids, note is not None


def bench_eval(kind):
    """Evaluate the run out_dir on `kind` ('gsm8k' | 'gsm_synth' | 'custom'): generate, score, write one line per
    problem to out_dir/<kind>_<prompt>.jsonl, print the figures with 95% intervals. Returns the bench.jsonl record."""
    from tqdm import tqdm
    if prompt not in ('chat', 'fewshot') or fewshot_task not in ('gsm8k', 'gsm8k_cot'):
        raise ConfigError(f"prompt must be chat or fewshot (got '{prompt}'), fewshot_task gsm8k or gsm8k_cot (got "
                          f"'{fewshot_task}')")
    if max_new_tokens < 1 or limit < 0:
        raise ConfigError(f"need max_new_tokens >= 1 (got {max_new_tokens}) and limit >= 0 (got {limit}; 0 = all)")
    if num_samples < 1 or (num_samples > 1 and temperature <= 0) or temperature < 0 or batch_size < 1:
        raise ConfigError(f"need num_samples >= 1 (got {num_samples}), temperature > 0 for num_samples > 1 (got "
                          f"{temperature}: greedy samples are all alike) and batch_size >= 1")
    model, tok, ck = load_run(out_dir, ckpt)
    sets, train_docs, src = eval_data(kind, ck.get('config', {}))
    problems = [dict(p, split=name) for name, ps in sets.items() for p in ps]  # split: a row of the table
    if not problems:
        raise ConfigError(f"no problems to evaluate in '{src}'")
    bad = next((i for i, p in enumerate(problems) if official_extract(p['answer']) == '[invalid]'), None)
    if kind != 'custom' and bad is not None:
        raise ConfigError(f"problem {bad} of {src} has no '#### N' answer line: GSM8K-format answers are needed "
                          f"(--task=custom scores other answers)")
    scoring = 'custom' if kind == 'custom' else fewshot_task if prompt == 'fewshot' else 'gsm8k'
    figures = ('match',) if kind == 'custom' else FIGURES
    main = 'match' if kind == 'custom' else 'final-answer' if prompt == 'chat' else 'flexible-extract'
    if prompt == 'chat':
        ids, cut = zip(*[chat_ids(model, tok, p['question'], max_new_tokens) for p in problems])
        texts, stop_strs = [tok.decode(i) for i in ids], []
        if any(cut):
            print(f"note: {sum(cut)} of {len(cut)} questions cut at the start to fit the model's context",
                  file=sys.stderr)
    else:
        texts, stop_strs = fewshot_texts(problems, train_docs, fewshot_task), STOPS[fewshot_task]
        bos = [] if tok.bos_id is None else [tok.bos_id]  # as lm-eval's HF tokenizer encodes it (no end-of-text)
        ids = [bos + tok.encode(t, special=False) for t in texts]
        fitted = [fit(model, i) for i in ids]
        texts = [t if len(f) == len(i) else tok.decode(f) for t, f, i in zip(texts, fitted, ids)]  # what it saw
        ids = fitted
    stop_ids = sorted({tok.eot_id, tok.special['<|im_end|>']})
    gen = torch.Generator(device=device).manual_seed(seed)
    name = f"{kind}_{prompt}{'_cot' if prompt == 'fewshot' and fewshot_task == 'gsm8k_cot' else ''}" + \
           (f"_maj{num_samples}" if num_samples > 1 else '')
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name + '.jsonl')
    right, per = Counter(), max(1, batch_size // num_samples)
    bar = tqdm(total=len(problems), desc=name, file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    with open(path, 'w', encoding='utf-8') as f:
        for i in range(0, len(problems), per):
            outs = complete(model, tok, [x for x in ids[i:i + per] for _ in range(num_samples)], stop_ids, stop_strs,
                            temperature, gen, plain=prompt == 'fewshot')
            for j, p in enumerate(problems[i:i + per]):
                samples = outs[j * num_samples:(j + 1) * num_samples]
                preds, correct = judge_samples(samples, p['answer'], scoring)
                right.update({k: int(v) for k, v in correct.items()})
                right.update({(p['split'], k): int(v) for k, v in correct.items()})
                f.write(json.dumps({'index': i + j, **({'split': p['split']} if len(sets) > 1 else {}),
                                    'question': p['question'], 'answer': p['answer'],
                                    'prompt': texts[i + j], 'output': samples[0] if num_samples == 1 else samples,
                                    'preds': preds, 'correct': correct}) + '\n')
            bar.update(len(outs) // num_samples)
            bar.set_postfix_str(' '.join(f"{k.split('-')[0]} {right[k] / bar.n:.3f}" for k in figures))
    bar.close()
    dt, n = time.perf_counter() - t0, len(problems)
    if len(sets) > 1:  # the generalization table: one row per split, the main figure
        return suite_table(kind, sets, right, figures, main, ck, path, dt)
    rows, res = [], {}
    for k in figures:
        acc = right[k] / n
        lo, hi = wilson(right[k], n)
        stderr = math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else 0.0  # lm-eval's stderr of the mean
        rows.append([k, f"{acc:.4f}", f"{stderr:.4f}", f"[{lo:.4f}, {hi:.4f}]", f"{right[k]} / {n}"])
        res[k] = {'accuracy': acc, 'stderr': stderr, 'ci95': [lo, hi], 'right': right[k]}
    how = 'greedy' if num_samples == 1 else f"maj@{num_samples}, temperature {temperature}"
    print(f"\n{kind} ({src}), {n} problems, prompt "
          f"{prompt}{'/' + fewshot_task if prompt == 'fewshot' else ''}, {how}, {ck['path']} (iteration "
          f"{ck.get('iter_num', '?')}); {n / dt * 60:.1f} problems/min ({dt:.0f} s, batch {batch_size}); {path}\n")
    table(['figure', 'accuracy', 'stderr', '95% interval (Wilson)', 'right / problems'], rows)
    return record(kind, {'ckpt': ck['path'], 'data': src, 'problems': n, 'prompt': prompt, 'scoring': scoring,
                         'num_samples': num_samples, 'temperature': temperature, 'max_new_tokens': max_new_tokens,
                         'batch_size': batch_size, 'problems_per_min': n / dt * 60, 'results': res})


def suite_table(kind, sets, right, figures, main, ck, path, dt):
    """Print and record the generalization table of bench_eval: per split its `main` figure with n and 95% interval
    (all figures in the bench.jsonl record)."""
    what = {'in-distribution': "the training data's settings", 'unseen wording': 'held-out names, items, sentences',
            '+1 step': 'one more step than training', '+2 steps': 'two more steps than training',
            '+1 digit': 'numbers one digit longer', 'distractors': 'an irrelevant sentence with a number',
            'question first': 'the question sentence first', 'all combined': 'all of the above at once',
            'real GSM8K': gsm8k_data}
    rows, res, n = [], {}, sum(len(v) for v in sets.values())
    for name, ps in sets.items():
        k = right[(name, main)]
        lo, hi = wilson(k, len(ps))
        rows.append([name, what.get(name, ''), f"{k / len(ps):.1%}", f"[{lo:.1%}, {hi:.1%}]", f"{k} / {len(ps)}"])
        res[name] = {f: {'accuracy': right[(name, f)] / len(ps), 'ci95': list(wilson(right[(name, f)], len(ps))),
                         'right': right[(name, f)], 'problems': len(ps)} for f in figures}
    how = 'greedy' if num_samples == 1 else f"maj@{num_samples}, temperature {temperature}"
    print(f"\n{kind} generalization, {main}, prompt {prompt}, {how}, {ck['path']} (iteration {ck.get('iter_num', '?')})"
          f"; {n} problems in {dt:.0f} s (batch {batch_size}); {path}\n")
    table(['split', 'what changes', 'accuracy', '95% interval (Wilson)', 'right / problems'], rows)
    return record(kind, {'ckpt': ck['path'], 'data': 'gsm_synth.suite', 'problems': n, 'prompt': prompt,
                         'figure': main, 'num_samples': num_samples, 'temperature': temperature,
                         'max_new_tokens': max_new_tokens, 'batch_size': batch_size, 'results': res})


def bench_distill():
    """Rejection sampling (STaR-style self-distillation): num_samples chat-format replies per problem of --data, kept
    when the final answer is right (distinct replies only), written as {"messages": [...]} lines that prepare.py
    --format=chat reads, to out_dir/distill.jsonl."""
    if not data:
        raise ConfigError("--task=distill needs --data=train.jsonl (GSM8K-format problems)")
    if num_samples > 1 and temperature <= 0:
        raise ConfigError("--num_samples > 1 needs --temperature > 0 (greedy samples are all alike)")
    if max_new_tokens < 1 or limit < 0:
        raise ConfigError(f"need max_new_tokens >= 1 (got {max_new_tokens}) and limit >= 0 (got {limit}; 0 = all)")
    model, tok, ck = load_run(out_dir, ckpt)
    problems = read_problems(data)[:limit or None]
    if not problems:
        raise ConfigError(f"no problems in '{data}'")
    stop_ids, gen = sorted({tok.eot_id, tok.special['<|im_end|>']}), torch.Generator(device=device).manual_seed(seed)
    per, kept, solved, t0 = max(1, batch_size // num_samples), 0, 0, time.perf_counter()
    path = os.path.join(out_dir, 'distill.jsonl')
    from tqdm import tqdm
    with open(path, 'w', encoding='utf-8') as f:
        for i in tqdm(range(0, len(problems), per), desc='distill', file=sys.stderr):
            chunk = problems[i:i + per]
            outs = complete(model, tok, [chat_ids(model, tok, p['question'], max_new_tokens)[0] for p in chunk
                                         for _ in range(num_samples)], stop_ids, (), temperature, gen)
            for j, p in enumerate(chunk):
                gold = chat.gsm8k_parts(p['answer'])[1] if '####' in p['answer'] else p['answer']
                good = list(dict.fromkeys(o.strip() for o in outs[j * num_samples:(j + 1) * num_samples]
                                          if custom_match(chat.final_answer(o) or '', gold)))
                for reply in good:
                    f.write(json.dumps({'messages': [{'role': 'user', 'content': p['question']},
                                                     {'role': 'assistant', 'content': reply}]}) + '\n')
                kept, solved = kept + len(good), solved + bool(good)
    total = len(problems) * num_samples
    print(f"\ndistill: {path}, {time.perf_counter() - t0:.0f} s\n")
    table(['samples', 'kept (right, distinct)', 'problems with one kept'],
          [[total, f"{kept} ({kept / total:.1%})", f"{solved} / {len(problems)}"]])
    return record('distill', {'ckpt': ck['path'], 'data': data, 'samples': total, 'kept': kept, 'solved': solved,
                              'path': path})


# ---------------------------------------------------------------------------- perplexity
def bench_perplexity(text_file=''):
    """--task=perplexity: perplexity() of the run out_dir (--ckpt) on text_file, or on the val shards of data_dir
    (default the run's), its first --limit windows or examples; the record goes to out_dir/bench.jsonl."""
    model, tok, ck = load_run(out_dir, ckpt)
    rec = perplexity(model, tok, text_file or data_dir or ck.get('config', {}).get('data_dir', ''), ck['path'],
                     text=bool(text_file), batch_size=batch_size, limit=limit, device=device)
    return record('perplexity', rec)


# ---------------------------------------------------------------------------- curves
def bench_curves():
    """out_dir/log.jsonl (train.py's log) -> out_dir/curves.png: loss (train steps, eval train/val), learning rate,
    tokens/s and any accuracy the log holds (keys with 'acc'), against the iteration."""
    path = os.path.join(out_dir, 'log.jsonl')
    if not os.path.isfile(path):
        raise ConfigError(f"no {path}: --task=curves plots a run's training log (set --out_dir)")
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--task=curves needs matplotlib, an optional dependency: pip install matplotlib") from None
    recs = [json.loads(line) for line in open(path) if line.strip()]
    keys = sorted({k for r in recs for k, v in r.items() if isinstance(v, (int, float)) and k != 'iter'})
    panels = [('loss', ['loss', 'train_loss', 'val_loss']), ('learning rate', ['lr']), ('tokens/s', ['tok_per_s']),
              ('accuracy', [k for k in keys if 'acc' in k])]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    rows = []
    for ax, (title, series) in zip(axes.flat, panels):
        for key in series:
            pts = [(r['iter'], r[key]) for r in recs if 'iter' in r and isinstance(r.get(key), (int, float))]
            if pts:
                label = {'loss': 'training steps', 'train_loss': 'eval: train', 'val_loss': 'eval: val'}.get(key, key)
                ax.plot(*zip(*pts), label=label, marker='.' if len(pts) < 50 else None)
                vals = [v for _, v in pts]
                rows.append([key, len(pts), f"{vals[-1]:.4g}", f"{min(vals):.4g}", f"{max(vals):.4g}"])
        ax.set_title(title)
        ax.set_xlabel('iteration')
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, 'not in log.jsonl', ha='center', va='center', transform=ax.transAxes)
    fig.suptitle(out_dir)
    fig.tight_layout()
    png = os.path.join(out_dir, 'curves.png')
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\n{png}\n")
    table(['series', 'points', 'last', 'min', 'max'], rows)
    return record('curves', {'png': png, 'series': [r[0] for r in rows]})


# ---------------------------------------------------------------------------- speed, wkv, memory: bench_perf.py
def bench_speed(train=True):
    """Training tokens/s, MFU and peak memory, then prefill/decode tokens/s at each of `contexts` (bench_perf.speed)
    of out_dir's model, else --config's (a train.py config file), else a random one of the shape flags.
    train=False: generation only (task generate)."""
    if ckpt or out_dir and any(os.path.isfile(os.path.join(out_dir, f)) for f in ('best.pt', 'ckpt.pt')):
        model, _, ck = load_run(out_dir, ckpt)
        cfg = ck.get('config', {})
        name, kind, args, sd, bsz, blk = out_dir, ck['model_type'], ck['model_args'], model.state_dict(), \
            cfg.get('batch_size', 8), min(cfg.get('block_size', model.config.block_size), model.config.block_size)
    elif config:
        (kind, args, bsz, blk), name, sd = bench_perf.config_setup(config), config, None
    else:
        name, kind, sd, bsz, blk = 'random', model_type, None, 8, block_size or 256
        args = dict(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size, block_size=blk)
        args.update(dict(n_head=n_head, n_kv_head=n_kv_head) if kind == 'llama' else dict(head_size=head_size))
    rec = bench_perf.speed(
        name, kind, args, sd, bsz=train_batch or bsz, blk=block_size or blk, device=device, train=train,
        contexts=[int(c) for c in contexts.split(',')], new_tokens=new_tokens, repeats=repeats, burn_in=burn_in,
        steps=steps, dtype=dtype, compiled=compile, impls=impls.split(','), chunk_len=chunk_len, profile=profile,
        out_dir=out_dir, vs_official=vs_official)
    return record('speed' if train else 'generate', rec)


def bench_wkv():
    return record('wkv', bench_perf.wkv(B, H, N, T, impls=impls.split(','), chunk_len=chunk_len, compiled=compile,
                                        device=device, repeats=repeats))


def bench_memory():
    """Peak memory of a training step of one Llama (memory_preset, else the shape flags) in each of MEMORY_MODES, each
    in a fresh process (this script with --memory_mode, which runs bench_perf.memory_step), against full fine-tuning.
    Raises ConfigError where it cannot measure or a mode fails (e.g. without bitsandbytes >= 0.50)."""
    if not device.startswith('cuda') and not os.path.isfile('/proc/self/clear_refs'):
        raise ConfigError("--task=memory measures CPU memory through /proc/self (Linux); elsewhere use a CUDA device")
    batch, block = train_batch or 1, block_size or 256
    if memory_mode:
        if memory_mode not in MEMORY_MODES:
            raise ConfigError(f"unknown memory_mode '{memory_mode}': use {', '.join(MEMORY_MODES)} ('' = all)")
        from model_llama import PRESETS
        shape = dict(PRESETS[memory_preset], vocab_size=32000) if memory_preset else dict(
            n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_kv_head=n_kv_head, vocab_size=vocab_size)
        return print(json.dumps(bench_perf.memory_step(memory_mode, shape, device=device, seed=seed, batch=batch,
                                                       block=block)))
    flags = [f'--{k}={globals()[k]}' for k in ('device', 'threads', 'seed', 'memory_preset', 'n_layer', 'n_embd',
                                                'n_head', 'n_kv_head', 'vocab_size', 'block_size', 'train_batch')]
    res = {}
    for mode in MEMORY_MODES:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), '--task=memory', f'--memory_mode={mode}',
                            *flags], capture_output=True, text=True)
        if p.returncode:
            raise ConfigError(f"memory_mode={mode} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    return record('memory', bench_perf.memory_report(res, device=device, batch=batch, block=block))


def bench_accuracy():
    """The earlier task: gsm8k (chat prompt by default), then its final-answer figure in the earlier one-row table."""
    rec = bench_eval('gsm8k')
    r = rec['results']['final-answer']
    print(f"\n| run | problems | accuracy | 95% interval | problems/min |\n|---|---|---|---|---|\n| {out_dir} | "
          f"{rec['problems']} | {r['accuracy']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
          f"{rec['problems_per_min']:.0f} |")


def main(name):
    if name == 'all':  # everything that applies to the run; a part that cannot run says why and the rest goes on
        for part in [lambda: bench_perplexity()] + ([lambda: bench_eval('gsm8k')] if data else []) + \
                [lambda: bench_speed(), bench_curves]:
            try:
                part()
            except ConfigError as e:
                print(f"bench.py: skipped: {e}", file=sys.stderr)
        return
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}': use {', '.join(TASKS)}")
    {'wkv': bench_wkv, 'generate': lambda: bench_speed(train=False), 'speed': bench_speed,
     'gsm8k': lambda: bench_eval('gsm8k'), 'accuracy': bench_accuracy,
     'gsm_synth': lambda: bench_eval('gsm_synth'), 'custom': lambda: bench_eval('custom'),
     'perplexity': lambda: bench_perplexity(data), 'curves': bench_curves, 'distill': bench_distill,
     'memory': bench_memory}[name]()


if __name__ == '__main__':
    try:
        configure(globals(), verbose=False)
        device = pick_device(device)
        print(f"bench.py: {torch.get_num_threads()} threads, device {device}", file=sys.stderr)  # set by configure
        main(task)
    except ConfigError as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        sys.exit(1)
