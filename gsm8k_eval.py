"""
GSM8K scoring the way the published numbers are computed, importable for scoring your own generations:

    from gsm8k_eval import score_gsm8k
    score_gsm8k("... The answer is 18.", "Janet sells ... #### 18", task='gsm8k_cot')
    # {'official': False, 'strict-match': True, 'flexible-extract': True, 'final-answer': False, ...}

`official` is openai/grade-school-math's extraction and exact match; `strict-match` and `flexible-extract` are
lm-evaluation-harness's gsm8k / gsm8k_cot filters and exact_match (yaml metadata version 3.0), quirks included;
`final-answer` is the number after `**Final Answer:**` of our reasoning format (chat.py). Also lm-eval's few-shot
prompts (fewshot_texts, COT_SHOTS, STOPS), majority voting over k samples (judge_samples) and the Wilson interval.
bench.py --task=gsm8k uses them.
"""

import math
import random
import re
from collections import Counter

import chat

# ---------------------------------------------------------------------------- GSM8K scoring
GSM_ANS = r'#### (\-?[0-9\.\,]+)'            # openai/grade-school-math, and lm-eval gsm8k's strict-match
COT_ANS = r'The answer is (\-?[0-9\.\,]+).'  # lm-eval gsm8k_cot's strict-match (its final '.' is any character)
FLEX = r'(-?[$0-9.,]{2,})|(-?[0-9]+)'        # lm-eval's flexible-extract, the last match (group_select -1)
IGNORE = [',', r'\$', '(?s).*#### ', r'\.$']  # lm-eval's regexes_to_ignore (gsm8k.yaml and gsm8k-cot.yaml v3.0)
FIGURES = ('official', 'strict-match', 'flexible-extract', 'final-answer')


def official_extract(text):
    """openai/grade-school-math's extract_answer: the first '#### N', stripped, commas removed; '[invalid]' if none."""
    m = re.search(GSM_ANS, text)
    return m.group(1).strip().replace(',', '') if m else '[invalid]'


def regex_filter(text, pattern, group_select=0):
    """lm-eval's RegexFilter: re.findall, the group_select-th match (of a tuple of groups the first non-empty one),
    stripped; '[invalid]' when nothing matches."""
    found = re.findall(pattern, text)
    if not found:
        return '[invalid]'
    m = found[group_select]
    return ([g for g in m if g][0] if isinstance(m, tuple) else m).strip()


def lm_eval_match(pred, ref):
    """lm-eval's exact_match as the gsm8k tasks set it up: each of regexes_to_ignore removed (re.sub, in order) from
    prediction and reference, then both lower-cased and compared."""
    for r in IGNORE:
        pred, ref = re.sub(r, '', pred), re.sub(r, '', ref)
    return pred.lower() == ref.lower()


def extract_gsm8k(completion, task='gsm8k'):
    """The answer each figure reads in a completion: {figure: str} (final-answer: None when there is none)."""
    if task not in ('gsm8k', 'gsm8k_cot'):
        raise ValueError(f"task must be 'gsm8k' or 'gsm8k_cot', not '{task}'")
    return {'official': official_extract(completion),
            'strict-match': regex_filter(completion, GSM_ANS if task == 'gsm8k' else COT_ANS),
            'flexible-extract': regex_filter(completion, FLEX, -1),
            'final-answer': chat.final_answer(completion)}


def judge_gsm8k(preds, gold_answer, task='gsm8k'):
    """{figure: bool} for the extracted answers `preds` (see extract_gsm8k) against a GSM8K solution '... #### N'.
    lm-eval's reference: gsm8k the whole solution, gsm8k_cot the text after the last '####'."""
    gold = official_extract(gold_answer)
    if gold == '[invalid]':
        raise ValueError(f"gold answer without a '#### N' line: {gold_answer[-80:]!r}")
    ref = gold_answer if task == 'gsm8k' else gold_answer.split('####')[-1].strip()
    return {'official': preds['official'] == gold,
            'strict-match': lm_eval_match(preds['strict-match'], ref),
            'flexible-extract': lm_eval_match(preds['flexible-extract'], ref),
            'final-answer': preds['final-answer'] == chat.gsm8k_parts(gold_answer)[1]}


def score_gsm8k(completion, gold_answer, task='gsm8k'):
    """Score one completion against a GSM8K solution ('...\\n#### 18') as openai/grade-school-math and
    lm-evaluation-harness's `task` ('gsm8k' | 'gsm8k_cot', metadata version 3.0) do, plus our final-answer.
    Returns {'official', 'strict-match', 'flexible-extract', 'final-answer': bool, and '<figure>_pred': the
    extracted string ('[invalid]', or None for final-answer, when there is none)}. Raises ValueError on a gold answer
    without '#### N' or an unknown task."""
    preds = extract_gsm8k(completion, task)
    return {**judge_gsm8k(preds, gold_answer, task), **{f'{k}_pred': v for k, v in preds.items()}}


def custom_answer(completion):
    """The answer of a custom-task completion: after '**Final Answer:**' if there is one, else its first line."""
    ans = chat.final_answer(completion)
    return ans if ans is not None else (completion.strip().split('\n') or [''])[0].strip()


def custom_match(pred, gold):
    """Numeric-or-exact: equal numbers when both are numbers (chat.normalize_number: '1,234', '$5', '7.00'), else the
    same string up to case and surrounding space. A gold GSM8K solution counts by its '#### N'."""
    gold = chat.gsm8k_parts(gold)[1] if '####' in gold else gold
    a, b = chat.normalize_number(pred), chat.normalize_number(gold)
    num = r'-?\d+(\.\d+)?'
    if re.fullmatch(num, a) and re.fullmatch(num, b):
        return float(a) == float(b)
    return pred.strip().lower() == gold.strip().lower()


def vote(values):
    """The most common value, ties going to the first seen (Counter.most_common, as lm-eval's majority_vote)."""
    return Counter(values).most_common(1)[0][0]


def judge_samples(samples, gold_answer, scoring='gsm8k'):
    """(preds, correct) of one problem's completions, each figure's answer majority-voted over them (maj@k; one
    completion: its own). scoring 'gsm8k' | 'gsm8k_cot': the FIGURES (final-answer voted among the completions that
    have one); 'custom': the one figure 'match' (custom_answer, custom_match)."""
    if scoring == 'custom':
        pred = vote([custom_answer(s) for s in samples])
        return {'match': pred}, {'match': custom_match(pred, gold_answer)}
    each = [extract_gsm8k(s, scoring) for s in samples]
    preds = {k: vote([e[k] for e in each]) for k in FIGURES[:3]}
    finals = [e['final-answer'] for e in each if e['final-answer'] is not None]
    preds['final-answer'] = vote(finals) if finals else None
    return preds, judge_gsm8k(preds, gold_answer, scoring)


def wilson(k, n, z=1.96):
    """The Wilson score interval of k successes in n trials (95% for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


# ---------------------------------------------------------------------------- GSM8K prompts and data
# lm-eval gsm8k-cot.yaml's fewshot samples (Wei et al. 2022, chain-of-thought prompting, table 20)
COT_SHOTS = [
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there "
     "will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been "
     "21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they "
     "had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason "
     "give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The "
     "answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The "
     "answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers "
     "were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls "
     "did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he "
     "had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
     "left. 23 - 15 is 8. The answer is 8."),
]
STOPS = {'gsm8k': ['Question:', '</s>', '<|im_end|>'], 'gsm8k_cot': ['Q:', '</s>', '<|im_end|>']}  # `until`


def fewshot_texts(problems, train_docs, kind):
    """lm-eval's prompts: gsm8k = 5 shots 'Question: q\\nAnswer: a' drawn per problem, in order, by one
    random.Random(1234) (its default sampler, fewshot seed 1234) from train_docs; gsm8k_cot = the 8 fixed shots
    'Q: q\\nA: a'. Shots are joined and followed by '\\n\\n', then the problem without its answer."""
    if kind == 'gsm8k_cot':
        shots = ''.join(f"Q: {q}\nA: {a}\n\n" for q, a in COT_SHOTS)
        return [f"{shots}Q: {p['question']}\nA:" for p in problems]
    rnd = random.Random(1234)
    return [''.join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in rnd.sample(train_docs, 5))
            + f"Question: {p['question']}\nAnswer:" for p in problems]
