"""
rl.py: the objective against hand-computed values, the reward against bench.py's scoring, a toy task where RL must
raise the reward (it fails if the update's sign is wrong), exact resume after a SIGKILL, 1 vs 2 processes, bad input.
"""
import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import time

import pytest
import torch

import chat
import rl
from conftest import ONE_THREAD, bad_input_results, command, run
from gsm8k_eval import judge_samples
from model_llama import Llama, LlamaConfig
from tokenizer import get_tokenizer


def test_group_advantages_by_hand():
    r = torch.tensor([[1., 0., 0., 1.], [0., 0., 0., 0.], [1., 1., 1., 0.]])
    want = torch.tensor([[.5, -.5, -.5, .5], [0., 0., 0., 0.], [.25, .25, .25, -.75]])
    assert torch.allclose(rl.group_advantages(r), want)
    std = torch.tensor([[math.sqrt(1 / 3)], [0.], [.5]])  # unbiased: sum of squares / (G - 1)
    assert torch.allclose(rl.group_advantages(r, scale=True), want / (std + 1e-4))


def test_policy_loss_and_normalisation_by_hand():
    logp = torch.log(torch.tensor([[.5, .9, .3], [.2, .6, .1]]))
    old = torch.log(torch.tensor([[.25, .9, .3], [.4, .6, .2]]))  # ratios 2, 1, 1 and .5, 1, .5
    adv, mask = torch.tensor([1., -2.]), torch.tensor([[1., 1., 0.], [1., 1., 1.]])
    terms, clipped, kl = rl.policy_loss(logp, old, adv, mask, clip_eps=0.2)
    # A = 1: -min(2, 1.2) = -1.2, -min(1, 1) = -1, masked; A = -2: -min(-1, -1.6) = 1.6, 2, 1.6
    assert torch.allclose(terms, torch.tensor([[-1.2, -1., 0.], [1.6, 2., 1.6]])) and kl is None
    assert clipped.tolist() == [[True, False, False], [True, False, True]]
    assert math.isclose(rl.normalize(terms, mask, 'token', 5, 2, 10).item(), 3.0 / 5, rel_tol=1e-6)
    assert math.isclose(rl.normalize(terms, mask, 'sequence', 5, 2, 10).item(), (-2.2 / 2 + 5.2 / 3) / 2, rel_tol=1e-6)
    assert math.isclose(rl.normalize(terms, mask, 'constant', 5, 2, 10).item(), 3.0 / 20, rel_tol=1e-6)
    with pytest.raises(ValueError, match='loss_norm'):
        rl.normalize(terms, mask, 'mean', 5, 2, 10)
    # KL (k3): exp(ref - logp) - (ref - logp) - 1; at p = .5, ref .25: .5 + log 2 - 1
    ref = torch.log(torch.tensor([[.25, .9, .3], [.2, .6, .1]]))
    terms_kl, _, kl = rl.policy_loss(logp, old, adv, mask, 0.2, ref, kl_coef=0.5)
    assert math.isclose(kl[0, 0].item(), .5 + math.log(2) - 1, rel_tol=1e-5) and kl[1].abs().max() < 1e-6
    assert torch.allclose(terms_kl - terms, 0.5 * kl * mask)
    # at ratio 1 (the first pass) the gradient is the policy gradient: d/d logp = -A on every counted token
    lp = logp.clone().requires_grad_(True)
    rl.policy_loss(lp, lp.detach(), adv, mask, 0.2)[0].sum().backward()
    assert torch.allclose(lp.grad, -adv[:, None] * mask)


def test_reward_is_bench_scoring():
    cases = [("<think>\n2 + 3 = 5\n</think>\n\n**Final Answer:** 5", "2 + 3 = <<2+3=5>>5\n#### 5"),
             ("**Final Answer:** 1,234", "#### 1234"), ("**Final Answer:** $12.00", "#### 12"),
             ("**Final Answer:** 12", "#### 13"), ("The answer is 5.", "#### 5"), ("#### 5", "#### 5"),
             ("**Final Answer:** 4\n**Final Answer:** 5", "#### 5"), ("**Final Answer:** -3", "#### -3")]
    for text, answer in cases:
        preds, correct = judge_samples([text], answer)
        r, c = rl.reward(text, answer, True)
        assert c == correct['final-answer'] and r == float(c), text
        assert rl.reward(text, answer, True, malformed=-0.5)[0] == (-0.5 if preds['final-answer'] is None else r)
        assert rl.reward(text, answer, False, malformed=-0.5) == (-0.5, False)  # cut at max_new_tokens


def test_problem_order_and_step_seed():
    steps = [rl.problem_order(10, 3, it, 4) for it in range(5)]  # 20 draws: two epochs of 10
    flat = sum(steps, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20] and steps == [rl.problem_order(10, 3, it, 4) for it in range(5)]
    assert len({rl.step_seed(1, it, j) for it in range(50) for j in range(8)}) == 400


# ---------------------------------------------------------------------------- rl.py runs on a toy task
@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """A tiny chat Llama trained (in seconds) to answer '**Final Answer:** k' with k in 1..4 whatever the question,
    and problems that all want 3: the reward starts near a quarter and only RL can raise it."""
    d = tmp_path_factory.mktemp('toy')
    torch.manual_seed(0)
    rng, tok = random.Random(0), get_tokenizer('byte')
    model = Llama(LlamaConfig(n_layer=2, n_head=2, n_kv_head=1, n_embd=48, vocab_size=320, block_size=192))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        rows = [chat.render(tok, [{'role': 'user', 'content': f"Say {rng.randint(1, 2)}."},
                                  {'role': 'assistant', 'content': chat.assistant_reply('', rng.randint(1, 4))}])
                for _ in range(16)]
        x, y = torch.zeros(16, 128, dtype=torch.long), torch.full((16, 128), -1)
        for b, (ids, m) in enumerate(rows):
            x[b, :len(ids)] = torch.tensor(ids)
            y[b, :len(ids) - 1] = torch.tensor([t if k else -1 for t, k in zip(ids[1:], m[1:])])
        loss = model(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save({'model': model.state_dict(), 'model_type': 'llama', 'model_args': dataclasses.asdict(model.config),
                'config': {}, 'tokenizer': tok.state(), 'iter_num': 100}, d / 'sft.pt')
    (d / 'say.jsonl').write_text(''.join(json.dumps({'question': 'Say 3.', 'answer': '#### 3'}) + '\n'
                                         for _ in range(4)))
    return d


ARGS = ['--init_from=sft.pt', '--data=say.jsonl', '--eval_data=say.jsonl', '--max_new_tokens=24', '--group_size=8',
        '--learning_rate=1e-3', '--threads=1', '--device=cpu']


def rewards(folder):
    return [r['reward'] for r in map(json.loads, open(folder / 'log.jsonl')) if 'reward' in r]


def test_rl_raises_the_reward_on_a_toy_task(toy):
    # 3e-4: at ARGS' 1e-3 this toy's format breaks within a step on some seeds (1 of 6 tried); at 3e-4 the reward rose
    # by 0.29-0.46 on each of 6 seeds
    run('rl.py', *ARGS, '--out_dir=up', '--prompts_per_step=2', '--max_iters=20', '--eval_interval=10',
        '--learning_rate=3e-4', cwd=toy, env=ONE_THREAD)
    r = rewards(toy / 'up')
    assert len(r) == 20 and sum(r[-5:]) / 5 > sum(r[:5]) / 5 + 0.15, r
    ck = torch.load(toy / 'up' / 'best.pt', weights_only=False)  # a full model: bench.py and sample.py read it
    assert ck['best_acc'] > 0 and 'optimizer' not in ck and ck['model_type'] == 'llama'
    ev = [r for r in map(json.loads, open(toy / 'up' / 'log.jsonl')) if 'eval_accuracy' in r]
    assert [e['iter'] for e in ev] == [0, 10, 20]


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGINT])
def test_resume_after_a_kill_or_ctrl_c_equals_an_unbroken_run(toy, sig):
    """SIGKILL after the step-2 checkpoint; Ctrl-C after step 3's log line (it saves that step and exits 0)."""
    args, cut = [*ARGS, '--prompts_per_step=1', '--max_iters=6', '--eval_interval=2'], f'cut{int(sig)}'
    if not (toy / 'whole').exists():
        run('rl.py', *args, '--out_dir=whole', cwd=toy, env=ONE_THREAD)
    p = subprocess.Popen(command('rl.py', *args, f'--out_dir={cut}'), cwd=toy, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, **ONE_THREAD})
    deadline, log = time.time() + 120, toy / cut / 'log.jsonl'
    ready = (lambda: (toy / cut / 'ckpt.pt').exists()) if sig == signal.SIGKILL else \
        (lambda: log.exists() and len(rewards(toy / cut)) >= 3)
    while not ready() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(sig)
    assert p.wait() == (-9 if sig == signal.SIGKILL else 0)
    n = torch.load(toy / cut / 'ckpt.pt', weights_only=False)['iter_num']
    assert n >= 2 and (sig == signal.SIGKILL or n < 6)
    run('rl.py', *args, f'--out_dir={cut}', '--init_from=resume', cwd=toy, env=ONE_THREAD)
    a, b = (torch.load(toy / f / 'ckpt.pt', weights_only=False) for f in ('whole', cut))
    assert a['iter_num'] == b['iter_num'] == 6
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert rewards(toy / 'whole') == rewards(toy / cut)  # the steps after the checkpoint are logged once


def test_two_processes_update_as_one(toy):
    args = [*ARGS, '--prompts_per_step=2', '--gen_prompts=1', '--max_iters=2', '--eval_interval=2']
    run('rl.py', *args, '--out_dir=one', cwd=toy, env=ONE_THREAD)
    run('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', command('rl.py')[1], *args,
        '--out_dir=two', cwd=toy, env=ONE_THREAD)
    a, b = (torch.load(toy / f / 'ckpt.pt', weights_only=False) for f in ('one', 'two'))
    assert rewards(toy / 'one') == rewards(toy / 'two')  # the same replies: sampling is seeded per generation batch
    assert all(torch.allclose(a['model'][k], b['model'][k], atol=1e-6) for k in a['model'])


def test_lora_run_resumes_and_saves_a_merged_model(toy):
    from checkpoint import load_model
    args = [*ARGS, '--prompts_per_step=1', '--eval_interval=1', '--lora_r=4', '--learning_rate=1e-2', '--out_dir=lora']
    run('rl.py', *args, '--max_iters=2', cwd=toy, env=ONE_THREAD)
    ck = torch.load(toy / 'lora' / 'ckpt.pt', weights_only=False)
    assert ck['lora']['r'] == 4 and all(k.endswith(('lora_A', 'lora_B')) for k in ck['model'])
    p = run('rl.py', *args, '--max_iters=3', '--init_from=resume', cwd=toy, env=ONE_THREAD)
    assert 'resuming' in p.stdout and torch.load(toy / 'lora' / 'ckpt.pt', weights_only=False)['iter_num'] == 3
    model, _, best = load_model(str(toy / 'lora' / 'best.pt'))  # merged: a plain model for bench.py and sample.py
    assert 'lora' not in best and not any('lora' in k for k in model.state_dict())
    p = run('rl.py', *args, '--max_iters=4', '--init_from=resume', '--lora_r=0', cwd=toy, env=ONE_THREAD, check=False)
    assert p.returncode == 1 and 'is a LoRA run: resume it with its --lora_r=4' in p.stderr


def test_a_longer_context_than_sft_gave(toy):
    """--block_size: a Llama samples and learns in a longer context than its SFT run's (192 here: RoPE runs on past
    the trained positions); the run's checkpoints carry it, and a resume keeps it without the flag."""
    from checkpoint import load_model
    short, _, _ = load_model(str(toy / 'sft.pt'))
    long, _, ck = load_model(str(toy / 'sft.pt'), block_size=320)
    x = torch.randint(0, 256, (2, 150))
    assert long.config.block_size == ck['model_args']['block_size'] == 320 and short.config.block_size == 192
    assert torch.equal(short(x)[0], long(x)[0])  # the positions both have: the same logits
    assert long(torch.randint(0, 256, (1, 300)))[0].isfinite().all()
    args = [*ARGS, '--prompts_per_step=1', '--eval_interval=1', '--max_new_tokens=200', '--out_dir=long']
    p = run('rl.py', *args, '--max_iters=1', cwd=toy, env=ONE_THREAD, check=False)
    assert p.returncode == 1 and 'max_new_tokens (200) must be less than the context' in p.stderr
    run('rl.py', *args, '--max_iters=1', '--block_size=320', cwd=toy, env=ONE_THREAD)
    run('rl.py', *args, '--max_iters=2', '--init_from=resume', cwd=toy, env=ONE_THREAD)
    ck = torch.load(toy / 'long' / 'ckpt.pt', weights_only=False)
    assert ck['iter_num'] == 2 and ck['model_args']['block_size'] == 320
    assert load_model(str(toy / 'long' / 'best.pt'))[0].config.block_size == 320


def test_bad_input(toy):
    (toy / 'words.jsonl').write_text(json.dumps({'question': 'Name a color.', 'answer': '#### blue'}) + '\n')
    cases = [(['--group_size=1'], 'group_size must be at least 2'),
             (['--data=words.jsonl'], "no problem in words.jsonl has a numeric"),
             (['--init_from=nowhere'], 'no checkpoint nowhere'),
             (['--init_from=resume', '--out_dir=fresh'], "needs an rl.py checkpoint fresh/ckpt.pt"),
             (['--prompts_per_step=3', '--gen_prompts=2'], 'must be a multiple of gen_prompts'),
             (['--loss_norm=mean'], 'loss_norm must be token, sequence or constant'),
             (['--max_new_tokens=192'], 'max_new_tokens (192) must be less than the context'),
             (['--eval_problems=0'], 'eval_problems, eval_interval and synth_problems >= 1'),
             (['--warmup_iters=-1'], 'warmup_iters, gen_prompts, kl_coef and block_size >= 0'),
             (['--block_size=-1'], 'kl_coef and block_size >= 0'),
             (['--clip_eps=0'], 'clip_eps > 0'),
             (['--eval_data=empty.jsonl'], 'no held-out problems in empty.jsonl'),
             (['--init_from=resume', '--out_dir=whole', '--lora_r=4'], 'trains every weight: resume it without'),
             (['--out_dir=whole'], "out_dir 'whole' already holds a run (ckpt.pt and best.pt): continue it with")]
    (toy / 'empty.jsonl').write_text('')
    if not (toy / 'whole').exists():  # a full-weight run to resume
        run('rl.py', *ARGS, '--prompts_per_step=1', '--max_iters=2', '--eval_interval=2', '--out_dir=whole', cwd=toy,
            env=ONE_THREAD)
    out = bad_input_results([{'script': 'rl.py', 'argv': [a for a in ARGS if not a.startswith(tuple(
        x.split('=')[0] for x in argv))] + argv} for argv, _ in cases], cwd=toy, timeout=300)
    for (argv, msg), r in zip(cases, out):
        assert r['code'] == 1 and r['exception'] is None and msg in r['stderr'], (argv, r)
        assert len(r['stderr'].strip().splitlines()) == 1 and not r['changed'], (argv, r)
