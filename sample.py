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
from configurator import ConfigError, configure, pick_device
from tokenizer import tokenizer_from_state

# -----------------------------------------------------------------------------
out_dir = 'out'
ckpt = ''               # checkpoint file in out_dir; '' = best.pt if there is one, else ckpt.pt; or a pretrained
                        # model: hf:<folder or hub id> | llama2c:<file.bin> (Llama.from_pretrained, its own tokenizer)
start = '\n'            # prompt: a string, or FILE:path to read it from a file
num_samples = 2
max_new_tokens = 500
temperature = 0.8       # 0 = greedy
top_k = 200             # 0 = off
top_p = 1.0             # nucleus sampling; 1.0 = off
seed = 1337
device = 'auto'
stream = True           # print tokens as they are generated
mode = 'generate'       # 'generate' | 'reasoning' | 'chat'
system_prompt = chat.SYSTEM_PROMPT
# -----------------------------------------------------------------------------


def fail(msg):
    print(f"sample.py: error: {msg}".replace('\n', '\\n'), file=sys.stderr)  # one line, also for values with newlines
    sys.exit(1)


try:
    configure(globals(), verbose=False)
    device = pick_device(device)
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
except ConfigError as e:
    fail(str(e))
name = ckpt or ('best.pt' if os.path.isfile(os.path.join(out_dir, 'best.pt')) else 'ckpt.pt')
if name.startswith(('hf:', 'llama2c:')):  # --ckpt=hf:<folder or hub id> | llama2c:<file.bin>: with its own tokenizer
    path = name
    from model_llama import Llama, resolve_pretrained
    from tokenizer import get_tokenizer, pretrained_tokenizer
    try:
        local = resolve_pretrained(path.split(':', 1)[1])
        model, tok = Llama.from_pretrained(local), get_tokenizer(pretrained_tokenizer(local))
    except (OSError, ValueError) as e:
        fail(f"cannot load {path}: {e}")
    checkpoint = {'model_type': 'llama', 'iter_num': 'pretrained'}
else:
    path = os.path.join(out_dir, name)
    if not os.path.isfile(path):
        fail(f"no checkpoint {path}: train first (python train.py ...) or set --out_dir")
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # a truncated zip, a text file, a foreign pickle: whatever torch.load cannot read
        fail(f"cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): it is damaged "
             f"or not a train.py checkpoint")
    if not isinstance(checkpoint, dict) or not {'model', 'model_args', 'tokenizer'} <= checkpoint.keys():
        fail(f"{path} is not a train.py checkpoint (no model, model_args and tokenizer)")
    if checkpoint.get('model_type') not in ('llama', 'rwkv7'):
        fail(f"{path} holds a '{checkpoint.get('model_type')}' model, which this sample.py cannot run")
    if 'lora' in checkpoint:
        fail(f"{path} holds only the LoRA adapters of a run: sample from its merged best.pt (--ckpt=best.pt)")
    if checkpoint['model_type'] == 'llama':
        from model_llama import Llama as Model, LlamaConfig as Config
    else:  # RWKV-7 generates with its recurrent state: constant time and memory per token
        from model_rwkv7 import RWKV7 as Model, RWKV7Config as Config
    try:
        model = Model(Config(**checkpoint['model_args']))
        model.load_state_dict(checkpoint['model'])
        tok = tokenizer_from_state(checkpoint['tokenizer'])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:  # RuntimeError: missing or misshapen weights
        fail(f"{path} does not load into its model ({type(e).__name__}: {' '.join(str(e).split())[:300]})")
model.eval().to(device)
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


def fit(ids):
    """The last tokens of ids that leave room for max_new_tokens in a Llama's context, but never less than half of it
    (a long reply runs past block_size, see Llama.generate_stream). RWKV-7 has no limit."""
    L = model.config.block_size
    return ids[-max(L - max_new_tokens, L // 2):] if checkpoint['model_type'] == 'llama' else ids


if mode == 'generate':
    for k in range(num_samples):
        complete(fit(tok.encode(start) or [tok.eot_id]), start)
        print('---------------')
elif mode == 'reasoning':
    for k in range(num_samples):
        reply = complete(fit(chat.prompt(tok, start, system_prompt)))
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
            reply = complete(fit(chat.prompt(tok, question, system_prompt, history)))
            history += [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': reply}]
