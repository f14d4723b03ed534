"""
The one conversation format of tiny-reasoner (ChatML with an explicit thinking block), shared by prepare.py,
sample.py and bench.py:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n
    <think>\\n{reasoning}\\n</think>\\n\\n**Final Answer:** {answer}<|im_end|>

`render` turns a conversation into token ids and a loss mask that is 1 exactly on what the model must learn: each
assistant reply with its closing <|im_end|>, never the `<|im_start|>assistant\\n` header, system or user text. A
tokenizer that starts sequences with a BOS token (tok.bos_id: Llama's <s>) gets it first, as its model was trained.
"""

import re

SYSTEM_PROMPT = 'You are a helpful assistant that solves problems step by step.'
FINAL = '**Final Answer:**'
# render + prompt as a Hugging Face chat template (Jinja; tokenizer_config.json of an export): a first system message
# replaces SYSTEM_PROMPT, add_generation_prompt appends the assistant header
CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = " + repr(SYSTEM_PROMPT) + " %}{% endif %}"
    "{% if system %}<|im_start|>system\n{{ system }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def assistant_reply(reasoning, answer):
    """The assistant's text for a worked answer; no thinking block when reasoning is empty or None."""
    think = f"<think>\n{reasoning.strip()}\n</think>\n\n" if reasoning and reasoning.strip() else ''
    return f"{think}{FINAL} {str(answer).strip()}"


def render(tok, messages, system=SYSTEM_PROMPT):
    """messages: [{'role': 'user'|'assistant', 'content': str}, ...]. Returns (ids, mask), two lists of ints of the
    same length. Each piece is tokenized on its own, split at the special tokens, as generation will see it; the
    tokenizer's BOS (if it has one) comes first, unlearned. Raises ValueError on an unknown role."""
    ids = [] if tok.bos_id is None else [tok.bos_id]
    mask = [0] * len(ids)

    def add(text, learn):
        piece = tok.encode(text)
        ids.extend(piece)
        mask.extend([learn] * len(piece))

    if system:
        add(f"<|im_start|>system\n{system}<|im_end|>\n", 0)
    for m in messages:
        if m['role'] not in ('user', 'assistant'):
            raise ValueError(f"unknown role '{m['role']}' (use user or assistant)")
        add(f"<|im_start|>{m['role']}\n", 0)
        learn = int(m['role'] == 'assistant')
        add(m['content'], learn)
        add('<|im_end|>', learn)
        add('\n', 0)
    return ids, mask


def prompt(tok, question, system=SYSTEM_PROMPT, history=()):
    """Token ids that ask the model for the next assistant reply: the rendered history, the question, and the
    `<|im_start|>assistant\\n` header."""
    ids, _ = render(tok, list(history) + [{'role': 'user', 'content': question}], system)
    return ids + tok.encode('<|im_start|>assistant\n')


def fit_prompt(tok, question, budget, system=SYSTEM_PROMPT, history=()):
    """prompt() within `budget` tokens (a model's context less the room for its reply): the system prompt and the
    latest question are kept, the oldest turns of `history` are dropped first; if the system prompt and the question
    alone are too long, the question's start is cut (its end and the assistant header stay; a system prompt longer
    than the budget is kept whole, so ids may still exceed it). Returns (ids, note): note None when nothing was
    dropped, else a one-line account of what was, for the user (stderr)."""
    history = list(history)
    ids = prompt(tok, question, system, history)
    dropped = 0
    while len(ids) > budget and history:
        history, dropped = history[2:], dropped + 1  # a user turn and its reply
        ids = prompt(tok, question, system, history)
    if len(ids) <= budget:
        return ids, f"the {dropped} oldest exchange(s) of the chat dropped to fit the context of {budget}" if dropped \
            else None
    head, q = render(tok, [], system)[0] + tok.encode('<|im_start|>user\n'), tok.encode(question)
    tail = tok.encode('<|im_end|>') + tok.encode('\n') + tok.encode('<|im_start|>assistant\n')
    keep = max(budget - len(head) - len(tail), 0)
    return head + q[len(q) - keep:] + tail, (f"the question cut from {len(q)} to its last {keep} tokens (after the "
                                             f"system prompt) to fit the context of {budget}"
                                             + (f"; {dropped} earlier exchange(s) dropped" if dropped else ''))


def final_answer(text):
    """The answer after the last '**Final Answer:**' of a reply, up to the end of its line or <|im_end|>; numbers are
    normalised ('1,234' -> '1234', '$5' -> '5', '7.00' -> '7', a final period dropped). None if there is none."""
    if FINAL not in text:
        return None
    ans = text.rsplit(FINAL, 1)[1].split('<|im_end|>')[0].strip().split('\n')[0].strip()
    return normalize_number(ans)


def normalize_number(s):
    """'1,234' -> '1234', '$5' -> '5', '-3.50' -> '-3.5', '7.00' -> '7', '12.' -> '12'; non-numbers are stripped only."""
    t = s.strip().rstrip('.').replace(',', '').replace('$', '').strip()
    if re.fullmatch(r'-?\d+(\.\d+)?', t):
        if '.' in t:
            t = t.rstrip('0').rstrip('.')
        return '0' if t in ('-0', '') else t
    return s.strip()


def gsm8k_parts(solution, keep_calc=False):
    """Split a GSM8K-format solution ('...steps...\\n#### 1,234') into (reasoning, answer): the step lines, with the
    calculator annotations '<<48/2=24>>' removed unless keep_calc, and the normalised number after '####'.
    Raises ValueError when there is no '####' line."""
    if '####' not in solution:
        raise ValueError("no '#### <answer>' line in the solution")
    reasoning, answer = solution.rsplit('####', 1)
    if not keep_calc:
        reasoning = re.sub(r'<<[^<>]*>>', '', reasoning)
    return reasoning.strip(), normalize_number(answer)


def to_messages(rec, keep_calc=False):
    """One record of a supervised source -> a conversation [{'role', 'content'}, ...]. Understood shapes:
    {'messages': [...]} (OpenAI style; system turns dropped: the system prompt is set at render time),
    {'question', 'answer'} with a GSM8K '#### N' answer, {'question', 'answer', 'rationale'} (chain-of-thought,
    e.g. FLAN v2 CoT), {'user', 'reasoning', 'assistant'} (KingNish/reasoning-base-20k), {'instruction', 'input',
    'output'} (Alpaca) and {'prompt', 'response'}. Raises ValueError for anything else."""
    if not isinstance(rec, dict):
        raise ValueError(f"a record must be an object, not {type(rec).__name__}")
    if '_error' in rec:  # read_records could not parse it
        raise ValueError(rec['_error'])
    if 'messages' in rec:
        msgs = [{'role': m['role'], 'content': str(m['content'])} for m in rec['messages'] if m['role'] != 'system']
        if not any(m['role'] == 'assistant' for m in msgs):
            raise ValueError("a conversation without an assistant turn has nothing to learn")
        return msgs
    if {'question', 'answer', 'rationale'} <= rec.keys():
        return [{'role': 'user', 'content': rec['question']},
                {'role': 'assistant', 'content': assistant_reply(rec['rationale'], rec['answer'])}]
    if {'question', 'answer'} <= rec.keys():
        reasoning, answer = gsm8k_parts(str(rec['answer']), keep_calc)
        return [{'role': 'user', 'content': rec['question']},
                {'role': 'assistant', 'content': assistant_reply(reasoning, answer)}]
    if {'user', 'reasoning', 'assistant'} <= rec.keys():
        return [{'role': 'user', 'content': rec['user']},
                {'role': 'assistant', 'content': assistant_reply(rec['reasoning'], rec['assistant'])}]
    if {'instruction', 'output'} <= rec.keys():
        user = rec['instruction'] + (f"\n\n{rec['input']}" if rec.get('input') else '')
        return [{'role': 'user', 'content': user}, {'role': 'assistant', 'content': rec['output']}]
    if {'prompt', 'response'} <= rec.keys():
        return [{'role': 'user', 'content': rec['prompt']}, {'role': 'assistant', 'content': rec['response']}]
    raise ValueError(f"unknown record shape (keys {sorted(rec)}): see chat.to_messages for the supported ones")


def read_records(path):
    """Yield (where, record) from a .jsonl / .json / .tsv (question, answer, rationale columns; a literal '\\n' in a
    field is a newline) / .txt file. A .txt file holds conversations separated by lines '===', each a run of turns
    that start with '<user>' or '<assistant>' at the beginning of a line. `where` is 'file:line' for error messages;
    a record that cannot be parsed comes as {'_error': message}, which to_messages raises."""
    if path.endswith('.jsonl'):
        for n, line in enumerate(open(path, encoding='utf-8'), 1):
            if line.strip():
                yield f"{path}:{n}", _json(line, f"{path}:{n}")
    elif path.endswith('.json'):
        recs = _json(open(path, encoding='utf-8').read(), path)
        for n, rec in enumerate(recs if isinstance(recs, list) else [recs]):
            yield f"{path} record {n}", rec
    elif path.endswith('.tsv'):
        for n, line in enumerate(open(path, encoding='utf-8'), 1):
            cols = line.rstrip('\n').split('\t')
            yield f"{path}:{n}", (dict(zip(('question', 'answer', 'rationale'), (c.replace('\\n', '\n') for c in cols)))
                                  if len(cols) == 3 else {'_error': f"{len(cols)} tab-separated columns, expected 3"})
    elif path.endswith('.txt'):
        for n, block in enumerate(open(path, encoding='utf-8').read().split('\n===\n')):
            turns = re.split(r'(?m)^<(user|assistant)>', block)
            msgs = [{'role': r, 'content': c.strip()} for r, c in zip(turns[1::2], turns[2::2])]
            yield f"{path} conversation {n}", {'messages': msgs} if msgs else {'_error': 'no <user>/<assistant> turns'}
    else:
        raise ValueError(f"cannot read '{path}' as supervised data: use .jsonl, .json, .tsv or .txt")


def _json(text, where):
    import json
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return {'_error': f"malformed JSON ({e})"}
