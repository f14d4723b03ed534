"""
Reinforcement learning with verifiable rewards (GRPO) on a chat-format run: each step samples group_size replies to
each of prompts_per_step problems, rewards the correct final answers, and pushes the policy toward the replies that
did better than their group. The model learns from its own attempts; it never sees a worked solution.

    python rl.py config/rl_gsm_synth.py                                   # from the README main job's SFT run
    python rl.py config/rl_gsm_synth.py --init_from=resume                # go on exactly where it stopped
    python rl.py --init_from=out-reasoning-llama --data=problems.jsonl    # any {question, answer} jsonl, numeric
    python rl.py config/rl_gsm_synth.py --lora_r=8                        # adapters on a frozen start model
    torchrun --standalone --nproc_per_node=2 rl.py config/rl_gsm_synth.py # each process samples its share

The objective (policy_loss) is GRPO's clipped surrogate (Shao et al. 2024, DeepSeekMath eq. 3, the PPO clip of
Schulman et al. 2017) over group-relative advantages (group_advantages), with the choices later papers argue about
as flags: advantages divided by the group's std (GRPO) or not (Dr. GRPO, Liu et al. 2025: scale_rewards), the loss
averaged over all tokens of the step (DAPO, Yu et al. 2025), over each reply then the replies (GRPO), or divided by
a constant (Dr. GRPO) (loss_norm), a KL penalty to the start model (kl_coef, k3 estimator; 0 as in DAPO and
Dr. GRPO), and groups whose replies all got the same reward left out of the update (skip_uniform, after DAPO's
dynamic sampling). The reward is bench.py's scoring (gsm8k_eval.judge_samples, its final-answer figure) on prompts
rendered as bench.py renders them (bench.chat_ids). Sampling is seeded by (seed, step, generation batch), so a
resumed run and a run on any number of processes draw the same replies as one unbroken process.

Files in out_dir: ckpt.pt (weights or LoRA adapters, optimizer, step: --init_from=resume), best.pt (the best
held-out accuracy's full model: bench.py and sample.py read it), log.jsonl, config.json.
"""
import copy
import json
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
out_dir = 'out-rl'          # ckpt.pt (to resume), best.pt (best held-out accuracy), config.json, log.jsonl
overwrite = False           # a new run into an out_dir that holds another run's checkpoint: delete it (else an error)
init_from = ''              # the start: a run folder (its best.pt, else ckpt.pt), a checkpoint file, 'hf:<folder>',
                            # 'llama2c:<file.bin>' (a tokenizer with the chat tokens), or 'resume' (out_dir/ckpt.pt)
data_dir = ''               # the start run's data folder ('' = the one in its config): gsm_synth settings, test.jsonl
data = ''                   # jsonl of {question, answer: '... #### N'}; '' = gsm_synth train problems (data_dir's)
synth_problems = 20000      # data='': how many gsm_synth train problems
synth_min_steps = 0         # data='': steps per problem (0 = data_dir's settings; more than the SFT data had: RL
synth_max_steps = 0         # beyond the demonstrations, rewarded on final answers only)
synth_digits = 0            # data='': digits of the numbers (0 = data_dir's)
eval_data = ''              # held-out jsonl ('' = data_dir/test.jsonl); greedy, bench.py's final-answer scoring
eval_problems = 200         # the first N of eval_data, at every eval
eval_interval = 10          # steps between evals and checkpoints
max_iters = 200             # steps
max_minutes = 0.0           # also stop (and save) after this many minutes of running (resumes included); 0 = no limit
wandb_log = False
wandb_project = 'tiny-reasoner'
wandb_run_name = 'rl'
# sampling
prompts_per_step = 8        # problems per step
group_size = 8              # replies sampled per problem (a group: advantages are relative to it)
gen_prompts = 0             # problems per generation batch (0 = prompts_per_step); torchrun: each process whole batches
max_new_tokens = 512        # per reply (a Llama's also end at its context); a reply cut gets malformed_reward
block_size = 0              # a Llama's context while sampling and learning (0 = the start model's); longer lets replies
                            # run past the positions SFT trained (RoPE goes on), and RL then trains them
temperature = 1.0
# objective
learning_rate = 1e-4        # AdamW, constant after warmup_iters
warmup_iters = 0
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0             # 0 = off
ppo_epochs = 1              # optimizer steps over each step's replies (> 1: the ratio and the clip come into play)
clip_eps = 0.2              # the PPO clip of the importance ratio
kl_coef = 0.0               # KL penalty to the start model (> 0 keeps a frozen copy of it)
scale_rewards = False       # divide advantages by the group's std (GRPO) or not (Dr. GRPO)
loss_norm = 'token'         # 'token' (DAPO: all tokens of the step) | 'sequence' (GRPO: each reply, then the replies) |
                            # 'constant' (Dr. GRPO: divided by replies x max_new_tokens)
skip_uniform = False        # leave groups whose replies all got the same reward (no signal) out of the update
malformed_reward = 0.0      # the reward of a reply without '**Final Answer:**' or cut at max_new_tokens (< 0 penalises)
micro_batch = 16            # replies per forward / backward
# LoRA: adapters on the frozen start model (lora.py; no dropout: the update is a function of the replies)
lora_r = 0
lora_alpha = 16.0
lora_targets = ''
rslora = False
# system
device = 'auto'
dtype = 'auto'              # float32 on the CPU; bfloat16 (autocast) on GPUs that have it
threads = 0
seed = 1337
# -----------------------------------------------------------------------------


def step_seed(seed, it, batch):
    """The seed of generation batch `batch` of step `it`: the same on any process count and after a resume."""
    return (seed * 1_000_003 + it * 1009 + batch) % (2 ** 63)


def problem_order(n, seed, it, per_step):
    """The problem indices of step `it` (per_step of them): epochs of seeded permutations of range(n)."""
    out = []
    while len(out) < per_step:
        epoch, at = divmod(it * per_step + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919 * epoch))
        out += perm[at:at + per_step - len(out)].tolist()
    return out


def reward(text, answer, finished, malformed=0.0):
    """(reward, correct) of one reply `text` (str, without the stop token) to a problem whose GSM8K-format answer is
    `answer`: bench.py's final-answer figure (gsm8k_eval.judge_samples) -> 1.0 right, 0.0 wrong; `malformed` when the
    reply has no '**Final Answer:**' or was cut at max_new_tokens (finished False)."""
    from gsm8k_eval import judge_samples
    preds, correct = judge_samples([text], answer)
    if not finished or preds['final-answer'] is None:
        return malformed, False
    return float(correct['final-answer']), bool(correct['final-answer'])


def group_advantages(rewards, scale=False, eps=1e-4):
    """GRPO's advantages (Shao et al. 2024, sec. 4.1.2): rewards (P, G) float, G replies per problem -> (P, G), each
    reward minus its group's mean; scale: also divided by the group's std (unbiased, + eps, as TRL's GRPOTrainer)."""
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    return adv / (rewards.std(dim=1, keepdim=True) + eps) if scale else adv


def token_logprobs(model, seqs, starts, temperature=1.0, vocab_limit=None):
    """Log-probabilities of each token after the first under the model: seqs a list of B token id lists (a prompt then
    its reply), starts the prompts' lengths. Logits divided by temperature (the sampling distribution; ids >=
    vocab_limit impossible, as the sampler has them). Returns (logp, mask), both (B, T-1) float32: logp[b, t] of token
    t+1; mask 1.0 on the reply's tokens."""
    T = max(map(len, seqs))
    dev = next(model.parameters()).device
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T - 1)
    for b, (s, p) in enumerate(zip(seqs, starts)):
        x[b, :len(s)] = torch.tensor(s)
        mask[b, p - 1:len(s) - 1] = 1.0
    x = x.to(dev)
    logits = model(x)[0][:, :-1].float()
    if vocab_limit is not None:
        logits[..., vocab_limit:] = float('-inf')
    logp = F.log_softmax(logits / temperature, dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
    return logp, mask.to(dev)


def policy_loss(logp, old_logp, adv, mask, clip_eps, ref_logp=None, kl_coef=0.0):
    """The per-token terms of GRPO's objective (DeepSeekMath eq. 3), to be summed and normalised (normalize):
    -min(ratio * A, clip(ratio, 1 - clip_eps, 1 + clip_eps) * A) with ratio = exp(logp - old_logp), plus kl_coef times
    the k3 estimate of KL(policy || reference) (exp(ref - logp) - (ref - logp) - 1, Schulman 2020). logp, old_logp,
    ref_logp, mask (B, T) float; adv (B,). Returns (terms (B, T) zero off the mask, clipped (B, T) bool: the tokens
    whose ratio the clip held, kl (B, T) or None)."""
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    loss = -torch.min(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    clipped = ((ratio < 1 - clip_eps) & (a < 0)) | ((ratio > 1 + clip_eps) & (a > 0))
    kl = None
    if ref_logp is not None and kl_coef:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        loss = loss + kl_coef * kl
    return loss * mask, clipped & (mask > 0), kl


def normalize(terms, mask, how, n_tokens, n_replies, max_new):
    """The loss of per-token terms (B, T) of some replies of a step whose replies hold n_tokens tokens in all
    (n_replies replies): 'token' sum / n_tokens (DAPO), 'sequence' the sum of each reply's mean / n_replies (GRPO),
    'constant' sum / (n_replies * max_new) (Dr. GRPO). Summed over the step's micro-batches (and processes) it is the
    step's loss. Raises ValueError for another `how`."""
    if how == 'token':
        return terms.sum() / n_tokens
    if how == 'sequence':
        return (terms.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum() / n_replies
    if how == 'constant':
        return terms.sum() / (n_replies * max_new)
    raise ValueError(f"loss_norm must be token, sequence or constant, not '{how}'")


if __name__ == '__main__':
    import bench
    import parallel
    from checkpoint import (CheckpointError, check_new_run, find_checkpoint, load_model, make_out_dir,
                            read_train_state, save_run_file)
    from configurator import ConfigError, configure, pick_device, pick_dtype
    from gsm8k_eval import official_extract
    from optim import make_optimizer

    sys.stdout.reconfigure(line_buffering=True)
    if os.environ.get('RANK', '0') != '0':
        sys.stdout = open(os.devnull, 'w')

    def fail(msg):
        print(f"rl.py: error: {msg}".replace('\n', '\\n'), file=sys.stderr)
        parallel.leave(1)

    try:
        config = configure(globals())
        ddp, rank, local_rank, world = parallel.ranks()
        device = pick_device(device)
        device = parallel.local_device(device, local_rank) if ddp else device
        device_type = device.split(':')[0]
        dtype = pick_dtype(dtype, device_type)
        if group_size < 2:
            raise ConfigError(f"group_size must be at least 2 (got {group_size}): advantages compare the replies to "
                              f"one problem")
        if temperature <= 0 or min(max_new_tokens, ppo_epochs, micro_batch, eval_problems, eval_interval,
                                   synth_problems) < 1 or min(max_iters, warmup_iters, gen_prompts, kl_coef,
                                                              block_size) < 0 or clip_eps <= 0:
            raise ConfigError(f"need temperature > 0 (got {temperature}: RL samples), clip_eps > 0 (got {clip_eps}), "
                              f"max_new_tokens, ppo_epochs, micro_batch, eval_problems, eval_interval and "
                              f"synth_problems >= 1, max_iters, warmup_iters, gen_prompts, kl_coef and block_size >= 0")
        gen_prompts = gen_prompts or prompts_per_step
        if prompts_per_step < 1 or prompts_per_step % gen_prompts or (prompts_per_step // gen_prompts) % world:
            raise ConfigError(f"prompts_per_step ({prompts_per_step}) must be a multiple of gen_prompts "
                              f"({gen_prompts}) times the number of processes ({world})")
        if loss_norm not in ('token', 'sequence', 'constant'):
            raise ConfigError(f"loss_norm must be token, sequence or constant, not '{loss_norm}'")
        if dtype == 'float16':
            raise ConfigError("dtype float16 needs a loss scaler rl.py does not have: use bfloat16 or float32")
        if not init_from:
            raise ConfigError("set --init_from to the run to start from (e.g. out-reasoning-llama), or resume")
        if wandb_log:
            import wandb
    except (ConfigError, ImportError) as e:
        fail(str(e))
    if ddp:
        parallel.init(device)
    torch.manual_seed(seed)
    ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------------ the start model (and the resume)
    resume = None
    try:
        if init_from == 'resume':
            resume = read_train_state(os.path.join(out_dir, 'ckpt.pt')) \
                if os.path.isfile(os.path.join(out_dir, 'ckpt.pt')) else None
            if resume is None or 'rl_start' not in resume:
                raise CheckpointError(f"init_from='resume' needs an rl.py checkpoint {out_dir}/ckpt.pt: start a run "
                                      f"with --init_from=<SFT run> first, or fix --out_dir")
            start = resume['rl_start']
        else:
            check_new_run(out_dir, overwrite)  # a new run: never over another run's checkpoint unless told to
            start = os.path.abspath(init_from if os.path.isfile(init_from) else find_checkpoint(init_from)) \
                if not init_from.startswith(('hf:', 'llama2c:')) else init_from
        model, tok, start_ck = load_model(start, 'cpu', resume['model_args']['block_size'] if resume else block_size)
    except (CheckpointError, FileNotFoundError) as e:
        fail(str(e))
    if not {'<|im_start|>', '<|im_end|>'} <= tok.special.keys():
        fail(f"{start} has no chat tokens (<|im_start|>, <|im_end|>) in its tokenizer: RL needs a model that answers "
             f"in the chat format (train one with prepare.py's chat recipes)")
    from lora import base_fingerprint
    start_print = base_fingerprint(model)  # resume checks that the start is still the same model
    if resume is not None and resume.get('rl_start_fingerprint') != start_print:
        fail(f"{start}, this run's start, changed since the run began (another model at that path): resume needs the "
             f"same start model")
    model_type, model_args = start_ck['model_type'], start_ck['model_args']
    L = model_args['block_size'] if model_type == 'llama' else None  # a reply ends where a Llama's context does
    if L and max_new_tokens >= L:
        fail(f"max_new_tokens ({max_new_tokens}) must be less than the context of {start} ({L} tokens): the prompt "
             f"needs room")

    def fit_reply(prompt, out, finished):
        """A reply cut to the room the prompt leaves in a Llama's context (as SFT saw it): (ids, finished)."""
        room = L - len(prompt) if L else len(out)
        return out[:room], finished and len(out) <= room

    data_dir = data_dir or start_ck.get('config', {}).get('data_dir', '')
    config['data_dir'] = data_dir  # bench.py's gsm_synth table reads the generator settings from it
    ref_model = copy.deepcopy(model).eval().to(device) if kl_coef else None
    for p in (ref_model.parameters() if ref_model is not None else ()):
        p.requires_grad_(False)
    lora = None
    if resume is not None and bool(lora_r) != ('lora' in resume):
        fail(f"{out_dir}/ckpt.pt is a LoRA run: resume it with its --lora_r={resume['lora']['r']}" if 'lora' in resume
             else f"{out_dir}/ckpt.pt trains every weight: resume it without --lora_r (LoRA needs a new run)")
    if lora_r:
        from lora import lora_state_dict, merged_state_dict, new_settings, setup_lora
        lora = resume['lora'] if resume else new_settings(dict(config, model_type=model_type, qlora=False,
                                                               lora_dropout=0.0, init_from=start),
                                                          os.path.basename(start))
        try:
            print(setup_lora(model, lora, resume['model'] if resume else None))
        except ValueError as e:
            fail(str(e))
    elif resume is not None:
        model.load_state_dict(resume['model'])
    model.to(device).eval()  # eval: no dropout, so the update is a function of the replies alone
    params = [p for p in model.parameters() if p.requires_grad]
    # the model's own groups (weight decay where it belongs, RWKV-7's lr_scale), as train.py's AdamW
    optimizer = make_optimizer(model, 'adamw', learning_rate, (beta1, beta2), weight_decay, device_type)
    iter_num, best_acc, elapsed = 0, -1.0, 0.0
    if resume is not None:
        optimizer.load_state_dict(resume['optimizer'])
        iter_num, best_acc, elapsed = resume['iter_num'], resume['best_acc'], resume['elapsed_s']
        print(f"resuming {out_dir}/ckpt.pt at step {iter_num} (best held-out accuracy {best_acc:.4f})")
    resume = None

    # ------------------------------------------------------------------------ problems
    try:
        if data:
            problems = bench.read_problems(data, '--data')
        else:
            import gsm_synth
            dataset, kw, synth_seed = bench.synth_settings(data_dir)
            if dataset != 'gsm_synth':
                raise ConfigError(f"data='' draws gsm_synth problems, but {data_dir or 'the start run'} has no "
                                  f"gsm_synth data_dir: give --data=problems.jsonl or --data_dir")
            kw.update({k: v for k, v in (('min_steps', synth_min_steps), ('max_steps', synth_max_steps),
                                         ('digits', synth_digits)) if v})
            kw['min_steps'] = min(kw.get('min_steps', 2), kw.get('max_steps', 4))
            problems = gsm_synth.generate('train', synth_problems, synth_seed, **kw)
        eval_set = bench.read_problems(eval_data or os.path.join(data_dir, 'test.jsonl'),
                                       '--eval_data')[:eval_problems]
    except (ConfigError, ValueError) as e:
        fail(str(e))
    numeric = lambda a: official_extract(a).lstrip('-').replace('.', '', 1).isdigit()  # noqa: E731
    problems = [p for p in problems if numeric(p['answer'])]
    if not problems:
        fail(f"no problem in {data or 'the data'} has a numeric '#### N' answer: RL rewards a checkable number")
    if not eval_set:
        fail(f"no held-out problems in {eval_data or os.path.join(data_dir, 'test.jsonl')}: give --eval_data")
    prompts = [bench.chat_ids(model, tok, p['question'], max_new_tokens)[0] for p in problems]
    eval_prompts = [bench.chat_ids(model, tok, p['question'], max_new_tokens)[0] for p in eval_set]
    if L and max(map(len, prompts + eval_prompts)) >= L:
        fail(f"a prompt of {max(map(len, prompts + eval_prompts))} tokens leaves no room for a reply in the context "
             f"of {start} ({L} tokens): shorten the system prompt or the questions")
    stop_ids = sorted({tok.eot_id, tok.special['<|im_end|>']})
    print(f"{len(problems):,} problems ({data or 'gsm_synth train'}), eval on {len(eval_set)} of "
          f"{eval_data or os.path.join(data_dir, 'test.jsonl')}; {model_type}, {sum(p.numel() for p in params):,} "
          f"trainable parameters, {device}, {dtype}" + (f", {world} processes" if ddp else ''))

    @torch.no_grad()
    def evaluate():
        """Greedy held-out accuracy and the mean reply length in tokens, as bench.py's final-answer figure has it (a
        reply is scored as generated, past a Llama's context by its context shift)."""
        right, lengths = 0, []
        for i in range(0, len(eval_set), 50):
            with ctx:
                outs, fin = bench.generate_ids(model, tok, eval_prompts[i:i + 50], stop_ids, max_new_tokens,
                                               device=device)
            for o, p in zip(outs, eval_set[i:i + 50]):
                right += reward(tok.decode([t for t in o if t not in stop_ids]), p['answer'], True)[1]
                lengths.append(len(o))
        return right / len(eval_set), sum(lengths) / len(lengths)

    def save(name, full):
        """out_dir/name atomically (rank 0): full, the model (a LoRA run's merged) for bench.py and sample.py; else
        what resume needs (the weights or the adapters, the optimizer, the step, the start)."""
        weights = (merged_state_dict(model) if full else lora_state_dict(model)) if lora else model.state_dict()
        ck = {'model': weights, 'model_type': model_type, 'model_args': model_args, 'config': config,
              'tokenizer': tok.state(), 'iter_num': iter_num, 'best_acc': best_acc}
        if not full:
            ck.update(optimizer=optimizer.state_dict(), elapsed_s=elapsed + time.time() - t_start, rl_start=start,
                      rl_start_fingerprint=start_print,
                      **({'lora': lora} if lora else {}))
        try:
            save_run_file(ck, out_dir, name, config)
        except CheckpointError as e:
            fail(str(e))

    def log(rec):
        with open(os.path.join(out_dir, 'log.jsonl'), 'a') as f:
            f.write(json.dumps(rec) + '\n')
        if wandb_log:
            wandb.log(rec)

    if rank == 0:
        try:
            make_out_dir(out_dir, init_from != 'resume')
        except CheckpointError as e:
            fail(str(e))
        path = os.path.join(out_dir, 'log.jsonl')
        if iter_num and os.path.isfile(path):  # resumed: the records of steps after the checkpoint are redone
            keep = [line for line in open(path) if json.loads(line)['iter'] <= iter_num]
            with open(path + '.tmp', 'w') as f:
                f.writelines(keep)
            os.replace(path + '.tmp', path)
        if wandb_log:
            wandb.init(project=wandb_project, name=wandb_run_name, config=config)
    stop_signal = parallel.StopFlag('saving a checkpoint at the end of this step')

    # ------------------------------------------------------------------------ the loop
    t_start, start_iter, stop = time.time(), iter_num, False
    while True:
        at_eval = (iter_num % eval_interval == 0 or iter_num >= max_iters) and (iter_num > start_iter or iter_num == 0)
        if stop and not at_eval and rank == 0 and iter_num > start_iter:  # Ctrl-C, SIGTERM, max_minutes: save, go
            save('ckpt.pt', full=False)
            print(f"saved {out_dir}/ckpt.pt at step {iter_num}; resume with --init_from=resume")
        if at_eval:
            if rank == 0:
                t0 = time.time()
                acc, mean_len = evaluate()
                print(f"step {iter_num}: held-out accuracy {acc:.4f} ({len(eval_set)} problems, greedy), mean reply "
                      f"{mean_len:.0f} tokens ({time.time() - t0:.0f} s)")
                log({'iter': iter_num, 'eval_accuracy': acc, 'eval_mean_len': mean_len,
                     'elapsed_s': round(elapsed + time.time() - t_start, 1)})
                if acc > best_acc:
                    best_acc = acc
                    save('best.pt', full=True)
                if iter_num > start_iter:
                    save('ckpt.pt', full=False)
            if ddp:
                torch.distributed.barrier()
        if iter_num >= max_iters or stop:
            break
        lr = learning_rate * min(1.0, (iter_num + 1) / (warmup_iters + 1))
        for g in optimizer.param_groups:
            g['lr'] = lr * g.get('lr_scale', 1.0)

        # sample: this process's generation batches of the step's problems, each group_size replies per problem
        t0 = time.time()
        picks = problem_order(len(problems), seed, iter_num, prompts_per_step)
        n_batches = prompts_per_step // gen_prompts
        seqs, starts, rewards, correct, lengths, cut = [], [], [], [], [], 0
        for j in range(rank, n_batches, world):
            mine = picks[j * gen_prompts:(j + 1) * gen_prompts]
            rows = [prompts[i] for i in mine for _ in range(group_size)]
            gen = torch.Generator(device=device).manual_seed(step_seed(seed, iter_num, j))
            with ctx:
                outs, fin = bench.generate_ids(model, tok, rows, stop_ids, max_new_tokens, temperature, gen,
                                               device=device)
            for k, (o, f) in enumerate(zip(outs, fin)):
                o, f = fit_reply(rows[k], o, f)
                text = tok.decode([t for t in o if t not in stop_ids])
                r, c = reward(text, problems[mine[k // group_size]]['answer'], f, malformed_reward)
                seqs.append(rows[k] + o)
                starts.append(len(rows[k]))
                rewards.append(r)
                correct.append(c)
                lengths.append(len(o))
                cut += not f
        t_gen = time.time() - t0
        r = torch.tensor(rewards).view(-1, group_size)
        adv = group_advantages(r, scale_rewards).flatten()
        uniform = (r == r[:, :1]).all(dim=1)
        keep = [i for i in range(len(seqs)) if not (skip_uniform and uniform[i // group_size])]
        # the step's totals over every process: tokens and replies in the update, and the figures to log
        totals = torch.tensor([sum(lengths[i] for i in keep), len(keep), sum(rewards), sum(correct), len(rewards),
                               float(uniform.sum()), float((r == 1).all(dim=1).sum()), float((r <= 0).all(dim=1).sum()),
                               sum(lengths), cut, float(stop_signal.requested),
                               float(max_minutes > 0 and elapsed + time.time() - t_start > 60 * max_minutes)],
                              dtype=torch.float64)
        maxes = torch.tensor([max(lengths)], dtype=torch.float64)
        if ddp:
            torch.distributed.all_reduce(totals)
            torch.distributed.all_reduce(maxes, op=torch.distributed.ReduceOp.MAX)
        (n_tok, n_rep, sum_r, n_right, n_all, n_uniform, n_all_right, n_all_wrong, sum_len, n_cut, stop_f,
         late_f) = totals.tolist()

        # update: ppo_epochs optimizer steps over the replies; the first pass's log-probs are the old policy's
        t1 = time.time()
        old, ref, clip_n, kl_sum = {}, {}, 0.0, 0.0
        for epoch in range(ppo_epochs if n_tok else 0):
            optimizer.zero_grad(set_to_none=True)
            for m in range(0, len(keep), micro_batch):
                ids = keep[m:m + micro_batch]
                with ctx:
                    logp, mask = token_logprobs(model, [seqs[i] for i in ids], [starts[i] for i in ids], temperature,
                                                tok.vocab_size)
                if epoch == 0:
                    old[m] = logp.detach()
                    if ref_model is not None:
                        with torch.no_grad(), ctx:
                            ref[m] = token_logprobs(ref_model, [seqs[i] for i in ids], [starts[i] for i in ids],
                                                    temperature, tok.vocab_size)[0]
                terms, clipped, kl = policy_loss(logp, old[m], adv[ids].to(device), mask, clip_eps, ref.get(m),
                                                 kl_coef)
                normalize(terms, mask, loss_norm, n_tok, n_rep, max_new_tokens).backward()
                if epoch == ppo_epochs - 1:
                    clip_n += float(clipped.sum())
                    kl_sum += float((kl.detach() * mask).sum()) if kl is not None else 0.0
            if ddp:  # the step's gradient is the sum of every process's share (each normalised by the totals)
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    torch.distributed.all_reduce(p.grad)
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t_upd = time.time() - t1
        figures = torch.tensor([clip_n, kl_sum], dtype=torch.float64)
        if ddp:
            torch.distributed.all_reduce(figures)
        iter_num += 1
        n_groups = n_all / group_size
        rec = {'iter': iter_num, 'reward': sum_r / n_all, 'accuracy': n_right / n_all,
               'all_correct': n_all_right / n_groups, 'all_wrong': n_all_wrong / n_groups,
               'uniform_groups': n_uniform / n_groups, 'mean_len': sum_len / n_all, 'max_len': int(maxes.item()),
               'cut': int(n_cut), 'clip_frac': figures[0].item() / max(n_tok, 1),
               **({'kl': figures[1].item() / max(n_tok, 1)} if kl_coef else {}),
               'gen_tok_per_s': sum(lengths) / t_gen, 'gen_s': round(t_gen, 2), 'update_s': round(t_upd, 2), 'lr': lr,
               'elapsed_s': round(elapsed + time.time() - t_start, 1)}
        print(f"step {iter_num}: reward {rec['reward']:.3f}, accuracy {rec['accuracy']:.3f}, groups all right "
              f"{rec['all_correct']:.2f} / all wrong {rec['all_wrong']:.2f}, reply {rec['mean_len']:.0f} (max "
              f"{rec['max_len']}) tokens, clip {rec['clip_frac']:.3f}" + (f", kl {rec['kl']:.4f}" if kl_coef else '')
              + f"; sampling {t_gen:.1f} s ({rec['gen_tok_per_s']:.0f} tok/s), update {t_upd:.1f} s")
        if rank == 0:
            log(rec)
        stop = stop_f > 0 or late_f > 0
    print(f"done: step {iter_num}, best held-out accuracy {best_acc:.4f} ({out_dir}/best.pt)")
    parallel.leave(0)
