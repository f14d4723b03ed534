"""
bench.py against lm-evaluation-harness itself (pip install lm-eval; these tests skip without it).

- GSM8K scoring: gsm8k_eval's extraction and exact match against lm-eval's own RegexFilter and exact_match, set up
  from its installed gsm8k.yaml and gsm8k-cot.yaml (patterns, group selection, ignored regexes, the jinja target).
- The whole path: `lm_eval --model hf --model_args pretrained=<export.py's HF folder> --tasks gsm8k,gsm8k_cot
  --log_samples` on a tiny Llama gives, problem by problem, bench.py --prompt=fewshot's prompt text, generation,
  extracted answers and scores. No network: the data is a local folder named openai/gsm8k in the working directory,
  which datasets.load_dataset finds before the hub (with an empty HF_HOME: no cached copy of the real one).

    python -m pytest test_lm_eval.py -q
"""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

import gsm_synth
from conftest import ROOT, run
from gsm8k_eval import fewshot_texts, score_gsm8k
from model_llama import Llama, LlamaConfig
from tokenizer import get_tokenizer

lm_eval = pytest.importorskip('lm_eval')
TASKS = {'gsm8k': 'gsm8k.yaml', 'gsm8k_cot': 'gsm8k-cot.yaml'}
GOLDS = ["Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18",
         "He has 1,200 + 34 = <<1200+34=1234>>1,234 coins.\n#### 1,234", "It is 3 - 5 = -2 degrees.\n#### -2",
         "Each costs 7 / 2 = $<<7/2=3.5>>3.50.\n#### 3.5"]
COMPLETIONS = ["#### 18", " 9 * 2 = 18\n#### 18\n\n", "####18", "#### 1,8 and later #### 7", "#### 7\n#### 18",
               "The answer is 18.", "The answer is 18", "She makes $18.00", "costs $1,234.", "#### 1,234",
               "#### 1234", "It is -2 degrees. The answer is -2.", "#### -2", "The answer is 3.5.", "#### 3.50",
               "no number", "", "a 12, then 3", "9 * 2 = 18 dollars. THE ANSWER IS 18.", "#### $18", "1.8",
               "The answer is 1,234 coins."] + GOLDS


def task_config(task):
    """lm-eval's installed yaml of a task, as a dict."""
    import yaml
    return yaml.safe_load(open(os.path.join(os.path.dirname(lm_eval.__file__), 'tasks', 'gsm8k', TASKS[task])))


@pytest.mark.parametrize('task', list(TASKS))
def test_scoring_equals_lm_eval_filters(task):
    import jinja2
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter
    cfg = task_config(task)
    metric = cfg['metric_list'][0]
    assert metric['metric'] == 'exact_match'
    names = set()
    for f in cfg['filter_list']:
        names.add(f['name'])
        regex = f['filter'][0]
        flt = RegexFilter(regex_pattern=regex['regex_pattern'], group_select=regex.get('group_select', 0))
        for gold in GOLDS:
            ref = jinja2.Template(cfg['doc_to_target']).render(answer=gold)
            for c in COMPLETIONS:
                pred = flt.apply([[c]], [None])[0][0]
                em = exact_match_hf_evaluate([pred], [ref], regexes_to_ignore=metric['regexes_to_ignore'],
                                             ignore_case=metric['ignore_case'],
                                             ignore_punctuation=metric['ignore_punctuation'])['exact_match']
                ours = score_gsm8k(c, gold, task)
                assert (ours[f"{f['name']}_pred"], ours[f['name']]) == (pred, bool(em)), (task, f['name'], c, gold)
    assert names == {'strict-match', 'flexible-extract'}


def test_lm_eval_on_our_export_equals_bench(tmp_path):
    # a tiny random Llama (byte tokenizer, 16 new tokens, 4 problems) with a 1024-token context: the gsm8k prompts
    # (short shots) fit and start with no BOS or end-of-text, the gsm8k_cot ones (8 long shots) are cut on the left
    # to 1024 - 16 tokens by both; the special token <think> outscores the model's favourite byte, so generations hold
    # special tokens, which both drop from the text
    tok = get_tokenizer('byte')
    data = tmp_path / 'openai' / 'gsm8k'
    (data / 'main').mkdir(parents=True)
    train = [{'question': f"What is {i} + 1?", 'answer': f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}.\n#### {i + 1}"}
             for i in range(12)]
    test = gsm_synth.generate('test', 4)
    for split, rows in (('train', train), ('test', test)):
        (data / 'main' / f'{split}.jsonl').write_text(''.join(
            json.dumps({'question': p['question'], 'answer': p['answer']}) + '\n' for p in rows))
    (data / 'README.md').write_text("---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: "
                                    "main/train.jsonl\n  - split: test\n    path: main/test.jsonl\n---\n")
    torch.manual_seed(0)
    model = Llama(LlamaConfig(block_size=1024, vocab_size=tok.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                              tie_embeddings=False))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn_like(p) * 0.1)
        outs = [model.generate(torch.tensor([tok.encode(t)]), 16, temperature=0)[0, -16:]
                for t in fewshot_texts(test, train, 'gsm8k')]
        w = model.lm_head.weight
        w[tok.special['<think>']] = 1.02 * w[torch.mode(torch.cat(outs)).values]
    (tmp_path / 'run').mkdir()
    torch.save({'model': model.state_dict(), 'model_type': 'llama', 'model_args': dataclasses.asdict(model.config),
                'config': {}, 'tokenizer': tok.state(), 'iter_num': 1}, tmp_path / 'run' / 'best.pt')
    run('export.py', str(tmp_path / 'run'), str(tmp_path / 'hf'), cwd=tmp_path)
    env = {**os.environ, 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1',
           'HF_HOME': str(tmp_path / 'hf_home')}  # not a cached copy of the real openai/gsm8k
    p = subprocess.run([sys.executable, '-m', 'lm_eval', '--model', 'hf', '--model_args',
                        f"pretrained={tmp_path / 'hf'}", '--tasks', 'gsm8k,gsm8k_cot', '--limit', '4', '--log_samples',
                        '--gen_kwargs', 'max_gen_toks=16', '--device', 'cpu', '--output_path', str(tmp_path / 'lme')],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for task in TASKS:
        run('bench.py', '--task=gsm8k', f"--out_dir={tmp_path / 'run'}", '--prompt=fewshot', f'--fewshot_task={task}',
            f"--data={data / 'main' / 'test.jsonl'}", '--max_new_tokens=16', '--device=cpu', cwd=tmp_path,
            env={'OMP_NUM_THREADS': '1'})
        ours = [json.loads(x) for x in open(tmp_path / 'run' / f"gsm8k_fewshot{'_cot' if task != 'gsm8k' else ''}.jsonl")]
        rows = {}
        for r in map(json.loads, open(glob.glob(str(tmp_path / 'lme' / '*' / f'samples_{task}_2*.jsonl'))[0])):
            rows.setdefault(r['doc_id'], {})[r['filter']] = r
        assert len(ours) == len(rows) == 4
        for o, text in zip(ours, fewshot_texts(ours, train, task)):
            theirs = rows[o['index']]
            s = theirs['strict-match']
            assert s['arguments']['gen_args_0']['arg_0'] == text  # the prompt before either cuts it
            assert s['resps'][0][0] == o['output']
            assert 0 < len(o['output']) <= 16  # a byte (or a bad one's U+FFFD) per token, at most 16
            cut = len(tok.encode(text)) > 1024 - 16
            assert cut == (task == 'gsm8k_cot') and o['prompt'] == (text[-(1024 - 16):] if cut else text)
            for fig in ('strict-match', 'flexible-extract'):
                assert theirs[fig]['filtered_resps'][0] == o['preds'][fig]
                assert theirs[fig]['exact_match'] == float(o['correct'][fig])
        assert len({o['output'] for o in ours}) > 1  # the problems' generations differ
    ids = tok.encode(fewshot_texts(test, train, 'gsm8k')[0], special=False)  # a special token was generated
    assert tok.special['<think>'] in model.generate(torch.tensor([ids]), 16, temperature=0)[0, len(ids):].tolist()
