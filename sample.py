"""
Sample from a trained model, printing tokens as they are generated:

    python sample.py --out_dir=out-shakespeare-char
    python sample.py --out_dir=out --start="Once upon a time" --num_samples=3 --temperature=0.8 --top_k=200
    python sample.py --out_dir=out --start=FILE:prompt.txt --temperature=0   # greedy
    python sample.py --out_dir=out-sft --mode=reasoning --start="Mia has 5 apples. ... How many ...?"
    python sample.py --out_dir=out-sft --mode=chat                           # multi-turn, 'exit' quits

Modes: generate (raw continuation), reasoning (one question in the chat format of chat.py: streams the thinking, then
prints the final answer on its own line), chat (an interactive loop reading stdin, the history kept within the
model's context). The tokenizer comes from the checkpoint, so it is always the one the model was trained with.
"""

import os
import sys

import torch

import chat
from checkpoint import CheckpointError, find_checkpoint, load_model
from configurator import ConfigError, configure, pick_device

# -----------------------------------------------------------------------------
out_dir = 'out'         # the run to sample from
ckpt = ''               # '' = out_dir's best.pt if there is one, else its ckpt.pt; a file name in out_dir; a path to
                        # a checkpoint file; or a pretrained model: hf:<folder or hub id> | llama2c:<file.bin>
                        # (Llama.from_pretrained, with its own tokenizer)
start = '\n'            # prompt: a string, or FILE:path to read it from a file
num_samples = 2         # at temperature 0 one (greedy samples are all the same)
max_new_tokens = 500
temperature = 0.8       # 0 = greedy
top_k = 200             # 0 = off
top_p = 1.0             # nucleus sampling; 1.0 = off
seed = 1337
device = 'auto'
stream = True           # print tokens as they are generated (generation stops at end-of-text)
mode = 'generate'       # 'generate': raw continuation | 'reasoning': start is a question in the chat format; the
                        # thinking streams, then the final answer on its own line | 'chat': a multi-turn loop on
                        # stdin ('exit' quits), the history kept within the context
system_prompt = chat.SYSTEM_PROMPT  # the system text of reasoning and chat modes
compile = False         # RWKV-7: torch.compile its one-token decode step (13-45 s once, then 1.1-2.7x tokens/s on a
                        # CPU, the more the smaller the model: for long generations); a Llama: a one-line error
threads = 0             # torch's CPU threads; 0 = PyTorch's default (one per core); the first line on stderr
                        # says how many
# -----------------------------------------------------------------------------


def fail(msg):
    print(f"sample.py: error: {msg}".replace('\n', '\\n'), file=sys.stderr)  # one line, also for values with newlines
    sys.exit(1)


try:
    configure(globals(), verbose=False)
    device = pick_device(device)
    print(f"sample.py: {torch.get_num_threads()} threads, device {device}", file=sys.stderr)  # set by configure
    if mode not in ('generate', 'reasoning', 'chat'):
        raise ConfigError(f"mode must be generate, reasoning or chat, not '{mode}'")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or num_samples < 1 or max_new_tokens < 1:
        raise ConfigError(f"need temperature >= 0 (got {temperature}), 0 < top_p <= 1 (got {top_p}), top_k >= 0 "
                          f"(got {top_k}), num_samples >= 1 (got {num_samples}) and max_new_tokens >= 1 (got "
                          f"{max_new_tokens})")
    if start.startswith('FILE:'):
        if not os.path.isfile(start[5:]):
            raise ConfigError(f"prompt file '{start[5:]}' not found (--start=FILE:path)")
        try:
            with open(start[5:], encoding='utf-8') as f:
                start = f.read()
        except UnicodeDecodeError as e:
            raise ConfigError(f"prompt file '{start[5:]}' is not UTF-8 text ({e}); convert it, e.g. iconv -t utf-8")
    path = find_checkpoint(out_dir, ckpt)
except (ConfigError, FileNotFoundError) as e:
    fail(str(e))
if temperature == 0 and num_samples > 1:
    num_samples = 1
try:  # RWKV-7 generates with its recurrent state: constant time and memory per token
    model, tok, checkpoint = load_model(path, device)
except CheckpointError as e:
    fail(str(e))
if compile:
    if checkpoint['model_type'] != 'rwkv7':
        fail("--compile=True compiles RWKV-7's one-token decode step; a Llama decodes with its KV cache, uncompiled: "
             "drop --compile")
    model.compile_step()
print(f"loaded {path} (iteration {checkpoint.get('iter_num', '?')}, {model.get_num_params() / 1e6:.2f}M parameters)",
      file=sys.stderr)

gen = torch.Generator(device=device).manual_seed(seed)
stops = [tok.eot_id] + ([tok.special['<|im_end|>']] if mode != 'generate' else [])


def complete(ids, shown_text=''):
    """Generate after ids, printing as it goes (after shown_text); returns the new text, without the stop token."""
    out, shown = list(ids), len(tok.decode(ids))
    print(shown_text, end='', flush=True)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    for nxt in model.generate_stream(x, max_new_tokens, temperature, top_k or None, top_p, stops, gen,
                                     vocab_limit=tok.vocab_size):
        if int(nxt[0]) in stops:
            break
        out.append(int(nxt[0]))
        if stream:
            text = tok.decode(out)
            if not text.endswith('\ufffd'):  # wait for the rest of a multi-byte character
                print(text[shown:], end='', flush=True)
                shown = len(text)
    text = tok.decode(out)
    print(text[shown:], flush=True)
    return text[len(tok.decode(ids)):]


def budget():
    """The prompt tokens that leave room for max_new_tokens in a Llama's context, but never less than half of it (a long
    reply runs past block_size, see Llama.generate_stream). RWKV-7 has no limit (its state is recurrent): None."""
    L = model.config.block_size
    return max(L - max_new_tokens, L // 2) if checkpoint['model_type'] == 'llama' else None


def fit(question, history=()):
    """The chat prompt of question (after history) within budget(): the system prompt and the question kept, the
    oldest turns dropped first (chat.fit_prompt); says on stderr what was dropped."""
    ids, note = chat.fit_prompt(tok, question, budget() or float('inf'), system_prompt, history)
    if note:
        print(f"sample.py: {note}", file=sys.stderr)
    return ids


if mode == 'generate':
    ids = ([] if tok.bos_id is None else [tok.bos_id]) + tok.encode(start) or [tok.eot_id]
    if budget() and len(ids) > budget():  # the start of the text makes way for the reply
        print(f"sample.py: the prompt's {len(ids)} tokens cut to their last {budget()} to leave room for "
              f"max_new_tokens={max_new_tokens} in the context of {model.config.block_size}", file=sys.stderr)
        ids, start = ids[-budget():], tok.decode(ids[-budget():])
    for k in range(num_samples):
        complete(ids, start)
        print('---------------')
elif mode == 'reasoning':
    for k in range(num_samples):
        reply = complete(fit(start))
        print(f"\nFinal answer: {chat.final_answer(reply)}")
        print('---------------')
else:
    history = []
    print("chat: type a message, 'exit' to quit", file=sys.stderr)
    while True:
        try:
            question = input('> ').strip()
        except EOFError:
            break
        if question == 'exit':
            break
        if question:
            reply = complete(fit(question, history))
            history += [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': reply}]
