"""
The one conversation format of tiny-reasoner (ChatML with an explicit thinking block), shared by prepare.py,
sample.py and bench.py:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n
    <think>\\n{reasoning}\\n</think>\\n\\n**Final Answer:** {answer}<|im_end|>

`render` turns a conversation into token ids and a loss mask that is 1 exactly on what the model must learn: each
assistant reply with its closing <|im_end|>, never the `<|im_start|>assistant\\n` header, system or user text.
"""

import re

SYSTEM_PROMPT = 'You are a helpful assistant that solves problems step by step.'
FINAL = '**Final Answer:**'


def assistant_reply(reasoning, answer):
    """The assistant's text for a worked answer; no thinking block when reasoning is empty or None."""
    think = f"<think>\n{reasoning.strip()}\n</think>\n\n" if reasoning and reasoning.strip() else ''
    return f"{think}{FINAL} {str(answer).strip()}"


def render(tok, messages, system=SYSTEM_PROMPT):
    """messages: [{'role': 'user'|'assistant', 'content': str}, ...]. Returns (ids, mask), two lists of ints of the
    same length. Each piece is tokenized on its own, split at the special tokens, as generation will see it.
    Raises ValueError on an unknown role."""
    ids, mask = [], []

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
