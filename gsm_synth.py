"""
gsm_synth: a seeded generator of multi-step arithmetic word problems written in GSM8K's exact format (a question; a
solution of one line per step with `<<expr=result>>` calculator annotations; `#### N`). No download needed.

    from gsm_synth import generate
    problems = generate('train', 1000, seed=0)   # [{'question', 'answer', 'steps'}, ...]

Splits are disjoint by construction: a problem belongs to the split that a hash of its question text picks (5% test,
5% val, 90% train), so no test question text can appear in train. Default difficulty: 2-4 steps mixing +, -,
x (one factor <= 12) and exact / (divisor <= 12), numbers in the question up to 100, intermediate results up to 1000.

`scratch=True` quotes each step's sentence of the question, then writes each computation out digit by digit before
its solution line, the way it is done on paper (columns from the right for +, - and x, long division from the left):

    She finds 75 more eggs.
    405+75: 5+5=10, 0+7=7+1=8, 4+0=4.
    Ivy has 405 + 75 = <<405+75=480>>480 eggs.

More tokens, but each one is a copy or a one-operation fact a small model can learn, where finding the next sentence's
number in the question and 405 + 75 = 480 in one go are not. Each `=` does one operation on two numbers in sight: the
carry, the borrow and the multiplication's carry are chained on (`0+7=7+1=8`, `6-8=-2+10=8`, `4*9=36+4=40`), and long
division writes the remainder as a subtraction (`29/6=4 r29-24=5`). Errors of a 1.2M-parameter Llama after 1800
steps, per column step: a 3-operand fact in one go (`4*9+4=40`) 62%, chained (`4*9=36+4=40`) 13%.
"""

import hashlib
import random
import re

NAMES = [('Mia', 'she', 'her'), ('Liam', 'he', 'his'), ('Ava', 'she', 'her'), ('Noah', 'he', 'his'),
         ('Zoe', 'she', 'her'), ('Omar', 'he', 'his'), ('Priya', 'she', 'her'), ('Kenji', 'he', 'his'),
         ('Lucia', 'she', 'her'), ('Tom', 'he', 'his'), ('Amara', 'she', 'her'), ('Diego', 'he', 'his'),
         ('Hana', 'she', 'her'), ('Felix', 'he', 'his'), ('Nora', 'she', 'her'), ('Sam', 'he', 'his'),
         ('Ivy', 'she', 'her'), ('Mateo', 'he', 'his'), ('Leila', 'she', 'her'), ('Jonas', 'he', 'his')]
ITEMS = ['apples', 'marbles', 'stickers', 'cookies', 'books', 'pencils', 'coins', 'shells', 'cards', 'stamps',
         'beads', 'toy cars', 'flowers', 'eggs', 'candies', 'blocks', 'balloons', 'crayons', 'buttons', 'seeds']
FRIENDS = ['a friend', 'a neighbor', 'a classmate', 'the teacher', 'a cousin', 'a younger cousin']
CONTAINERS = ['bags', 'boxes', 'packs', 'jars', 'baskets']
OPS = '+-*/'
VERSION = 3  # of the generated text: bump it on a change, so that prepare.py renders existing data again
SPLITS = {'test': range(0, 5), 'val': range(5, 10), 'train': range(10, 100)}


def split_of(question):
    """'train', 'val' or 'test': the split a question belongs to, from a hash of its text."""
    h = int(hashlib.md5(question.encode()).hexdigest()[:8], 16) % 100
    return next(s for s, r in SPLITS.items() if h in r)


def columns(a, op, b):
    """The paper-and-pencil working of `a op b` (non-negative ints; for / b <= 12, for x one factor <= 12) as one
    line of text. For x, b is the multiplier unless it is over 12: `8*38` is worked as `38*8: 8*8=64, 3*8=24+6=30.`"""
    if op == '/':  # long division from the left: (remainder, next digit) / b = quotient digit, remainder
        steps, r = [], 0
        for d in str(a):
            cur = r * 10 + int(d)
            q, r = divmod(cur, b)
            steps.append(f"{cur}/{b}={q}" + (f" r{cur}-{q * b}={r}" if q else f" r{r}" if r else ''))
        return f"{a}/{b}: {', '.join(steps)}."
    da, steps, carry = str(a)[::-1], [], 0
    if op == '*':  # columns from the right, each digit of the larger factor times the smaller (<= 12) plus the carry
        if b > 12:
            a, b = b, a
            da = str(a)[::-1]
        for d in da:
            p = int(d) * b
            v = p + carry
            steps.append(f"{d}*{b}={p}" + (f"+{carry}={v}" if carry else ''))
            carry = v // 10
        return f"{a}*{b}: {', '.join(steps)}."
    db = str(b)[::-1]
    for i in range(max(len(da), len(db))):  # + and - column by column from the right, with the carry or the borrow
        d, e = da[i] if i < len(da) else '0', db[i] if i < len(db) else '0'
        if op == '+':
            v = int(d) + int(e)
            steps.append(f"{d}+{e}={v}" + (f"+1={v + 1}" if carry else ''))
            carry = (v + carry) // 10
        else:
            v = int(d) - int(e)
            steps.append(f"{d}-{e}={v}" + (f"-1={v - 1}" if carry else '')
                         + (f"+10={v - carry + 10}" if v - carry < 0 else ''))
            carry = int(v - carry < 0)
    return f"{a}{op}{b}: {', '.join(steps)}."


def make_problem(rng, n_steps, max_start=100, max_value=1000, ops=OPS, scratch=False):
    """One problem of n_steps operations on a running total: {'question', 'answer', 'steps'}."""
    name, he, his = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    total = rng.randint(5, max_start)
    cap = lambda s: s[0].upper() + s[1:]  # noqa: E731
    text = [rng.choice([f"{name} has {total} {item}.", f"{name} starts with {total} {item}.",
                        f"There are {total} {item} in {name}'s collection."])]
    lines, first = [], []  # first: the index of each step's first solution line
    for _ in range(n_steps):
        first.append(len(lines))
        choices = [op for op in ops if (op == '+' and total + 2 <= max_value) or (op == '-' and total > 1)
                   or (op == '*' and total * 2 <= max_value)
                   or (op == '/' and any(total % k == 0 for k in range(2, 13)))]
        op = rng.choice(choices)
        if op == '+':
            if rng.random() < 0.4 and total + 4 <= max_value:  # a + with its own product: bags of items
                a = rng.randint(2, 12)
                b = rng.randint(2, max(2, min(max_start, (max_value - total) // a)))
                box = rng.choice(CONTAINERS)
                text.append(f"{cap(he)} buys {a} {box} with {b} {item} in each.")
                lines.append(f"The {box} hold {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {item}.")
                n = a * b
            else:
                n = rng.randint(2, max(2, min(max_start, max_value - total)))
                text.append(rng.choice([f"{cap(he)} finds {n} more {item}.", f"{cap(rng.choice(FRIENDS))} gives "
                                        f"{name} {n} {item}.", f"Then {he} gets {n} more {item}."]))
            lines.append(f"{name} has {total} + {n} = <<{total}+{n}={total + n}>>{total + n} {item}.")
            total += n
        elif op == '-':
            n = rng.randint(1, min(total - 1, max_start))
            text.append(rng.choice([f"{cap(he)} gives {n} {item} to {rng.choice(FRIENDS)}.",
                                    f"{cap(he)} loses {n} of them.", f"{cap(he)} uses {n} {item} for a project."]))
            lines.append(f"{name} has {total} - {n} = <<{total}-{n}={total - n}>>{total - n} {item} left.")
            total -= n
        elif op == '*':
            k = rng.randint(2, min(12, max_value // total))
            word = {2: 'twice', 3: 'three times'}.get(k, f"{k} times")
            text.append(rng.choice([f"Then {his} number of {item} becomes {word} as large.",
                                    f"Later {he} has {word} as many {item} as before."]))
            lines.append(f"{word.capitalize()} as many is {total} * {k} = <<{total}*{k}={total * k}>>{total * k}.")
            total *= k
        else:
            k = rng.choice([k for k in range(2, 13) if total % k == 0])
            text.append(rng.choice([f"{cap(he)} splits the {item} into {k} equal groups and keeps one group.",
                                    f"{cap(he)} shares them equally among {k} people, {name} included, and keeps "
                                    f"{his} share."]))
            lines.append(f"One of {k} equal parts is {total} / {k} = <<{total}/{k}={total // k}>>{total // k}.")
            total //= k
    if scratch:  # each step's sentence quoted, then the column working of each computation on the line before it
        lines = [(text[1 + first.index(i)] + '\n' if i in first else '') + f"{columns(int(a), op, int(b))}\n{line}"
                 for i, line in enumerate(lines) for a, op, b in [re.search(r'<<(\d+)([-+*/])(\d+)=', line).groups()]]
    text.append(rng.choice([f"How many {item} does {name} have now?", f"How many {item} does {name} have at the end?"]))
    return {'question': ' '.join(text), 'answer': '\n'.join(lines) + f"\n#### {total}", 'steps': n_steps}


def generate(split, n, seed=0, min_steps=2, max_steps=4, max_start=100, max_value=1000, ops=OPS, scratch=False):
    """n distinct problems of `split` ('train' | 'val' | 'test'), the same for the same arguments. `ops`: the operations
    each step draws from (among those valid for the running total); one written twice is drawn twice as often."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, not '{split}'")
    rng = random.Random(f"gsm_synth-{seed}-{split}")
    out, seen, tries = [], set(), 0
    while len(out) < n:
        tries += 1
        if tries > 1000 * n + 10000:
            raise ValueError(f"could not find {n} distinct {split} problems with these settings: widen them")
        p = make_problem(rng, rng.randint(min_steps, max_steps), max_start, max_value, ops, scratch)
        if p['question'] not in seen and split_of(p['question']) == split:
            seen.add(p['question'])
            out.append(p)
    return out
