"""
gsm_synth: a seeded generator of multi-step arithmetic word problems written in GSM8K's exact format (a question; a
solution of one line per step with `<<expr=result>>` calculator annotations; `#### N`), and the generalization
benchmark built from it. No download needed.

    from gsm_synth import generate, suite
    problems = generate('train', 1000, seed=0)   # [{'question', 'answer', 'steps'}, ...]
    splits = suite(max_steps=4, digits=2)        # {'unseen wording': {...generate() arguments}, '+1 step': ...}

Splits are disjoint by construction: a problem belongs to the split that a hash of its question text picks (5% test,
5% val, 90% train), so no test question text can appear in train. Default difficulty: 2-4 steps mixing +, -,
x (one factor <= 12) and exact / (divisor <= 12), numbers in the question of up to 2 digits, running totals of up
to 3. A step's sentence is a frame ('Then {he} {vp}.') around a verb phrase of its operation ('gives {n} {item} to
{friend}'); names, items, friends, containers, start, question and distractor sentences come from pools.

What a model never sees in training, by construction (suite() makes one test split of each, and one of all at once):
held-out wording (wording='unseen': names, items, friends, containers, start / question / distractor sentences
from the TEST_ pools, and the quarter of verb-phrase x frame pairs that unseen_combo holds out: every verb phrase and
every frame is seen, in other pairs), more steps (+1, +2), numbers one digit longer, irrelevant sentences carrying
numbers (GSM-NoOp's distractors, Mirzadeh et al. 2024) and the question asked first. A recipe may train on some of
these (prepare.py's --synth_* flags); the suite then takes its settings as in-distribution.

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

`walk=True` (walk_lines) quotes every sentence of the question in order, the start, distractors and the question
included, each followed by what it does, and writes no name or item of its own:

    Ivy has 405 eggs.
    Start: 405.
    She finds 75 more eggs.
    405+75: 5+5=10, 0+7=7+1=8, 4+0=4.
    Total: 405 + 75 = <<405+75=480>>480.
    How many eggs does Ivy have now?
    The question.
"""

import hashlib
import random
import re

# Pools of wording. Each has a part that only held-out test problems use (wording='unseen'): names, items, friends and
# containers a model never reads in training, and sentence shapes it never reads whole (every verb phrase and every
# frame of them does appear in training, in other combinations: see unseen_combo).
NAMES = [('Mia', 'she', 'her'), ('Liam', 'he', 'his'), ('Ava', 'she', 'her'), ('Noah', 'he', 'his'),
         ('Zoe', 'she', 'her'), ('Omar', 'he', 'his'), ('Priya', 'she', 'her'), ('Kenji', 'he', 'his'),
         ('Lucia', 'she', 'her'), ('Tom', 'he', 'his'), ('Amara', 'she', 'her'), ('Diego', 'he', 'his'),
         ('Hana', 'she', 'her'), ('Felix', 'he', 'his'), ('Nora', 'she', 'her'), ('Sam', 'he', 'his'),
         ('Ivy', 'she', 'her'), ('Mateo', 'he', 'his'), ('Leila', 'she', 'her'), ('Jonas', 'he', 'his'),
         ('Sofia', 'she', 'her'), ('Ravi', 'he', 'his'), ('Elena', 'she', 'her'), ('Kofi', 'he', 'his'),
         ('Yara', 'she', 'her'), ('Ben', 'he', 'his'), ('Chloe', 'she', 'her'), ('Arjun', 'he', 'his'),
         ('Maya', 'she', 'her'), ('Lucas', 'he', 'his'), ('Grace', 'she', 'her'), ('Hugo', 'he', 'his')]
TEST_NAMES = [('Freya', 'she', 'her'), ('Tariq', 'he', 'his'), ('Ines', 'she', 'her'), ('Pablo', 'he', 'his'),
              ('Wen', 'she', 'her'), ('Emil', 'he', 'his'), ('Dara', 'she', 'her'), ('Oscar', 'he', 'his')]
ITEMS = ['apples', 'marbles', 'stickers', 'cookies', 'books', 'pencils', 'coins', 'shells', 'cards', 'stamps',
         'beads', 'toy cars', 'flowers', 'eggs', 'candies', 'blocks', 'balloons', 'crayons', 'buttons', 'seeds',
         'oranges', 'rocks', 'ribbons', 'puzzles', 'kites', 'cupcakes']
TEST_ITEMS = ['lemons', 'feathers', 'postcards', 'paper cranes', 'acorns', 'magnets']
FRIENDS = ['a friend', 'a neighbor', 'a classmate', 'the teacher', 'a cousin', 'a younger cousin']
TEST_FRIENDS = ['an uncle', 'the coach']
CONTAINERS = ['bags', 'boxes', 'packs', 'jars', 'baskets']
TEST_CONTAINERS = ['crates', 'tins']
# a step's sentence: a frame around a verb phrase of its operation ({n}: the number it brings; bags: {a} x {b})
FRAMES = ['{He} {vp}.', 'Then {he} {vp}.', 'Later, {he} {vp}.', 'After that, {name} {vp}.', 'The next day, {he} {vp}.',
          'On Monday, {name} {vp}.']
VERB_PHRASES = {
    '+': ['finds {n} more {item}', 'gets {n} more {item}', 'collects {n} more {item}', 'buys {n} more {item}',
          'receives {n} {item} from {friend}', 'wins {n} {item} at a fair'],
    'bags': ['buys {a} {box} with {b} {item} in each', 'gets {a} {box} of {b} {item} each',
             'wins {a} {box} that hold {b} {item} each'],
    '-': ['gives {n} {item} to {friend}', 'loses {n} of them', 'uses {n} {item} for a project', 'sells {n} {item}',
          'gives away {n} {item}', 'trades {n} {item} for a comic'],
    '*': ['ends up with {word} as many {item} as before', 'has {word} as many {item} as before',
          'makes {his} number of {item} {word} as large'],
    '/': ['splits the {item} into {k} equal groups and keeps one group',
          'shares them equally among {k} people, {name} included, and keeps {his} share',
          'divides the {item} into {k} equal piles and keeps one pile'],
}
STARTS = ['{name} has {n} {item}.', '{name} starts with {n} {item}.', "There are {n} {item} in {name}'s collection."]
TEST_STARTS = ['At first, {name} has {n} {item}.', "{name}'s collection holds {n} {item}."]
QUESTIONS = ['How many {item} does {name} have now?', 'How many {item} does {name} have at the end?']
TEST_QUESTIONS = ['How many {item} does {name} have in the end?', 'At the end, how many {item} does {name} have?']
# irrelevant sentences that carry numbers (GSM-NoOp style): another person's things, ages, distances
DISTRACTORS = ['{other} has {n} {item}.', '{name} is {age} years old.', "{other}'s shelf holds {n} {item2}."]
TEST_DISTRACTORS = ['{other} is {age} years old.', '{name} walks {age} minutes to the park.', '{other} finds {n} {item2}.']
OPS = '+-*/'
VERSION = 5  # of the generated text: bump it on a change, so that prepare.py renders existing data again (5: made-up
             # words over the whole alphabet; the default data is the same as 4's)
SPLITS = {'test': range(0, 5), 'val': range(5, 10), 'train': range(10, 100)}
WORDINGS = ('seen', 'unseen')


def made_up_word(rng, syllables, taken=()):
    """A pronounceable word of `syllables` (consonant-)vowel(-consonant) syllables over the whole alphabet that is
    not in `taken`: a name or an item no pool has, so that a model trained on many of them learns to copy words,
    whatever their letters and so whatever tokens they split into, rather than to know them."""
    while True:
        w = ''.join(rng.choice(list('bcdfghjklmnpqrstvwxz') + ['', 'ch', 'th']) + rng.choice('aeiouy')
                    + rng.choice(['', '', 'n', 'r', 'l', 's', 'c', 'q', 'x']) for _ in range(syllables))
        if w not in taken and w.capitalize() not in taken:
            return w


HELD_OUT = {n for n, _, _ in TEST_NAMES} | set(TEST_ITEMS)  # made-up words are never these


def unseen_combo(i, j):
    """Whether verb phrase i in frame j is held out for wording='unseen' (about a quarter of the pairs; every verb
    phrase and every frame is in some pair that training sees)."""
    return (i + j) % 4 == 3


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


def make_problem(rng, n_steps, digits=2, wording='seen', distractors=0.0, question_first=0.0, ops=OPS,
                 scratch=False, made_up=0.0, walk=False):
    """One problem of n_steps operations on a running total: {'question', 'answer', 'steps'}. The numbers a sentence
    gives have at most `digits` digits, the running total at most digits + 1; wording 'seen' draws the names, items
    and sentence shapes that training uses, 'unseen' only the held-out ones; `distractors` irrelevant sentences with
    numbers (a fraction: that chance of one more); the question sentence first with chance question_first; with
    chance made_up (seen wording only) the name and the item are made-up words (made_up_word). walk=True: the
    reasoning quotes every sentence of the question in order (see walk_lines)."""
    held = wording == 'unseen'
    name, he, his = rng.choice(TEST_NAMES if held else NAMES)
    item = rng.choice(TEST_ITEMS if held else ITEMS)
    if made_up and not held and rng.random() < made_up:
        name, item = made_up_word(rng, rng.randint(2, 3), HELD_OUT).capitalize(), made_up_word(rng, 2, HELD_OUT) + 's'
        he, his = rng.choice([('she', 'her'), ('he', 'his')])
    friends, boxes = (TEST_FRIENDS, TEST_CONTAINERS) if held else (FRIENDS, CONTAINERS)
    top, cap = 10 ** digits - 1, 10 ** (digits + 1) - 1  # the largest number said, the largest total
    total = rng.randint(5, top)
    fill = dict(name=name, he=he, his=his, He=he.capitalize(), His=his.capitalize(), item=item)

    def say(kind, **slots):  # a step's sentence: a verb phrase of the operation in a frame, seen or held out together
        pairs = [(i, j) for i in range(len(VERB_PHRASES[kind])) for j in range(len(FRAMES)) if unseen_combo(i, j) == held]
        i, j = rng.choice(pairs)
        vp = VERB_PHRASES[kind][i].format(**fill, **slots)
        return FRAMES[j].format(**fill, vp=vp)

    body = [rng.choice(TEST_STARTS if held else STARTS).format(n=total, **fill)]
    start = total
    lines, first = [], []  # first: the index of each step's first solution line
    for _ in range(n_steps):
        first.append(len(lines))
        choices = [op for op in ops if (op == '+' and total + 2 <= cap) or (op == '-' and total > 1)
                   or (op == '*' and total * 2 <= cap) or (op == '/' and any(total % k == 0 for k in range(2, 13)))]
        op = rng.choice(choices)
        if op == '+':
            if rng.random() < 0.4 and total + 4 <= cap:  # a + with its own product: bags of items
                a = rng.randint(2, min(12, (cap - total) // 2))
                b = rng.randint(2, max(2, min(top, (cap - total) // a)))
                box = rng.choice(boxes)
                body.append(say('bags', a=a, b=b, box=box))
                lines.append(f"The {box} hold {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {item}.")
                n = a * b
            else:
                n = rng.randint(2, max(2, min(top, cap - total)))
                body.append(say('+', n=n, friend=rng.choice(friends)))
            lines.append(f"{name} has {total} + {n} = <<{total}+{n}={total + n}>>{total + n} {item}.")
            total += n
        elif op == '-':
            n = rng.randint(1, min(total - 1, top))
            body.append(say('-', n=n, friend=rng.choice(friends)))
            lines.append(f"{name} has {total} - {n} = <<{total}-{n}={total - n}>>{total - n} {item} left.")
            total -= n
        elif op == '*':
            k = rng.randint(2, min(12, cap // total))
            word = {2: 'twice', 3: 'three times'}.get(k, f"{k} times")
            body.append(say('*', word=word))
            lines.append(f"{word.capitalize()} as many is {total} * {k} = <<{total}*{k}={total * k}>>{total * k}.")
            total *= k
        else:
            k = rng.choice([k for k in range(2, 13) if total % k == 0])
            body.append(say('/', k=k))
            lines.append(f"One of {k} equal parts is {total} / {k} = <<{total}/{k}={total // k}>>{total // k}.")
            total //= k
    calcs = [re.search(r'<<(\d+)([-+*/])(\d+)=(\d+)>>', line).groups() for line in lines]
    if scratch and not walk:  # each step's sentence quoted, then the column working of each computation before it
        lines = [(body[1 + first.index(i)] + '\n' if i in first else '') + f"{columns(int(a), op, int(b))}\n{line}"
                 for i, line in enumerate(lines) for a, op, b, _ in [calcs[i]]]
    roles = ['start', *range(n_steps)]  # what each sentence of body is: 'start', a step's index, 'noise'
    n_noise = int(distractors) + (rng.random() < distractors - int(distractors))
    people = [p for p in (TEST_NAMES if held else NAMES) if p[0] != name]
    for _ in range(n_noise):  # anywhere among the sentences before the question
        noise = rng.choice(TEST_DISTRACTORS if held else DISTRACTORS).format(
            other=rng.choice(people)[0], n=rng.randint(2, top), age=rng.randint(6, 70), item2=rng.choice(TEST_ITEMS if held else ITEMS), **fill)
        at = rng.randint(0, len(body))
        body.insert(at, noise)
        roles.insert(at, 'noise')
    question = rng.choice(TEST_QUESTIONS if held else QUESTIONS).format(**fill)
    if rng.random() < question_first:
        body, roles = [question] + body, ['question'] + roles
    else:
        body, roles = body + [question], roles + ['question']
    if walk:
        per_step = [calcs[f:t] for f, t in zip(first, first[1:] + [len(calcs)])]
        lines = walk_lines(body, roles, start, per_step, scratch)
    return {'question': ' '.join(body), 'answer': '\n'.join(lines) + f"\n#### {total}", 'steps': n_steps}


def walk_lines(sentences, roles, start, per_step, scratch=True):
    """The reasoning of walk=True: every sentence of the question quoted in order, each followed by what it does:
    'Start: 54.' | its computations ('Total: 54 + 8 = <<54+8=62>>62.', a product of bags first as 'New: ...',
    each after its column working when scratch) | 'Not a step.' (a distractor) | 'The question.'. Nothing of the
    wording is written but the quotes, and the reasoning ends after the question's last sentence, so a reply tracks
    where it is by what it last quoted, however many steps there are. Returns the lines (str)."""
    out = []
    for text, role in zip(sentences, roles):
        out.append(text)
        if role == 'start':
            out.append(f"Start: {start}.")
        elif role == 'noise':
            out.append("Not a step.")
        elif role == 'question':
            out.append("The question.")
        else:
            for j, (a, op, b, r) in enumerate(per_step[role]):
                if scratch:
                    out.append(columns(int(a), op, int(b)))
                new = j + 1 < len(per_step[role])  # a bag product before its sum
                out.append(f"{'New' if new else 'Total'}: {a} {op} {b} = <<{a}{op}{b}={r}>>{r}.")
    return out


def generate(split, n, seed=0, min_steps=2, max_steps=4, digits=2, wording='seen', distractors=0.0, question_first=0.0,
             ops=OPS, scratch=False, made_up=0.0, walk=False):
    """n distinct problems of `split` ('train' | 'val' | 'test'), the same for the same arguments (make_problem says
    what they mean). `ops`: the operations each step draws from (among those valid for the running total); one
    written twice is drawn twice as often. wording='unseen' is for the test split only. Raises ValueError for a
    split or wording that does not exist, or settings too narrow for n distinct problems."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, not '{split}'")
    if wording not in WORDINGS or (wording == 'unseen' and split != 'test'):
        raise ValueError(f"wording must be 'seen', or 'unseen' for the test split, not '{wording}' for '{split}'")
    if not 1 <= digits <= 5 or not 0 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= digits <= 5 (got {digits}) and 0 <= min_steps <= max_steps (got {min_steps}, "
                         f"{max_steps})")
    factors = (min_steps, max_steps, digits, wording, distractors, question_first)
    rng = random.Random(f"gsm_synth-{seed}-{split}" + ('' if factors == (2, 4, 2, 'seen', 0.0, 0.0) else
                                                       f"-{factors}"))
    out, seen, tries = [], set(), 0
    while len(out) < n:
        tries += 1
        if tries > 1000 * n + 10000:
            raise ValueError(f"could not find {n} distinct {split} problems with these settings: widen them")
        p = make_problem(rng, rng.randint(min_steps, max_steps), digits, wording, distractors, question_first, ops,
                         scratch, made_up, walk)
        if p['question'] not in seen and split_of(p['question']) == split:
            seen.add(p['question'])
            out.append(p)
    return out


def suite(min_steps=2, max_steps=4, digits=2, distractors=0.0, question_first=0.0, made_up=0.0):
    """The generalization benchmark of a model trained on generate()'s problems with these settings: {split name:
    generate() keyword arguments}, each split of the test split. In-distribution: the training settings; then one
    held-out factor at a time (wording, one and two more steps than training's most, one more digit, a distractor
    in every problem, the question first), then all of them at once."""
    base = dict(min_steps=min_steps, max_steps=max_steps, digits=digits, distractors=distractors,
                question_first=question_first, made_up=made_up)
    return {'in-distribution': base,
            'unseen wording': dict(base, wording='unseen'),
            '+1 step': dict(base, min_steps=max_steps + 1, max_steps=max_steps + 1),
            '+2 steps': dict(base, min_steps=max_steps + 2, max_steps=max_steps + 2),
            '+1 digit': dict(base, digits=digits + 1),
            'distractors': dict(base, distractors=max(1.0, distractors)),
            'question first': dict(base, question_first=1.0),
            'all combined': dict(min_steps=max_steps + 1, max_steps=max_steps + 2, digits=digits + 1, wording='unseen',
                                 distractors=max(1.0, distractors), question_first=1.0)}
