"""How well an SLM predicts the teacher's own words on held-out states.

The held-out text of a state is its short SLM prompt (slm_prompts) followed by
the teacher's answer, the text of its most likely option, and, where the
verbalized readout produced one, ". " and the teacher's explanation. For each
model this reports

  perplexity               exp(mean negative log-likelihood) over every answer and explanation token
  answer_perplexity        the same over the answer tokens only
  explanation_perplexity   the same over the explanation tokens only (null without explanations)
  answer_ce                mean over states of -sum_k P_teacher(k) log Q_model(k), with Q the model's
                           answer-token probabilities normalised over the options (as TokenScorer reads them)

all given the prompt (prompt tokens are context, never scored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..data.scenario import Scenario
from ..data.schema import Schema, teacher_probs
from ..data.split import read_held_out, usable_rows
from ..data.states import states_from_frame
from ..lm.load import LoadedModel, load_causal_lm
from ..lm.scorer import TokenScorer, final_logits, scores_from_logits
from ..lm.scorer_checks import require_fast_head
from ..lm.tokens import right_pad
from ..stats.metrics import ce
from ..teacher.ask import Prompts
from .answers import slm_prompts

EXPLANATION_SEPARATOR = ". "  # joins answer and explanation, as lora-train writes its training text
LOGIT_ROWS = 256  # positions per vocabulary projection: bounds memory with a large vocabulary


@dataclass(frozen=True)
class HeldOutText:
    prompts: Prompts
    answers: list[str]  # the teacher's most likely option's text, per state
    explanations: list[str]  # separator + explanation, or "" where there is none
    P: np.ndarray  # the teacher's distribution over the options, [N, K]


def held_out_text(frame: pd.DataFrame, scenario: Scenario, max_states: int | None = None) -> HeldOutText:
    """The teacher's text for the first `max_states` states of a split frame (ok rows only)."""
    frame = usable_rows(frame).head(max_states).reset_index(drop=True)
    P = teacher_probs(frame, [o.id for o in scenario.options])
    answers = [scenario.options[k].text for k in P.argmax(axis=1)]
    notes = frame["explanation"] if "explanation" in frame else [None] * len(frame)
    explanations = [EXPLANATION_SEPARATOR + n.strip() if isinstance(n, str) and n.strip() else "" for n in notes]
    return HeldOutText(slm_prompts(scenario, states_from_frame(frame, scenario)), answers, explanations, P)


def token_rows(scorer: TokenScorer, text: HeldOutText) -> list[tuple[list[int], list[int], list[int]]]:
    """(context, answer, explanation) token ids per state, tokenized the way the scorer
    tokenizes prompts, so the answer position is the one TokenScorer reads."""
    prefix = scorer.encode_prefix(text.prompts.prefix)
    return [(prefix + scorer.encode_suffix(suffix), scorer.encode_suffix(answer), scorer.encode_suffix(note))
            for suffix, answer, note in zip(text.prompts.suffixes, text.answers, text.explanations)]


@torch.inference_mode()
def text_scores(model: LoadedModel, text: HeldOutText, option_texts: list[str], batch_size: int = 16,
                desc: str = "perplexity") -> dict:
    """The report described in the module docstring for one model."""
    scorer = TokenScorer(model, option_texts, batch_size)
    rows = token_rows(scorer, text)
    if rows:
        require_fast_head(model.model, rows[0][0], final_logits, "slm.model")
    nll = {"answer": 0.0, "explanation": 0.0}
    count = {"answer": 0, "explanation": 0}
    probs = []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        batch = rows[start : start + batch_size]
        ids, mask = right_pad([c + a + e for c, a, e in batch], scorer.pad_id)
        hidden = model.model.model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).last_hidden_state
        # Position t predicts token t + 1: score every answer and explanation token.
        where, targets, kinds = [], [], []
        for b, (context, answer, note) in enumerate(batch):
            for offset, token in enumerate(answer + note):
                where.append((b, len(context) - 1 + offset))
                targets.append(token)
                kinds.append("answer" if offset < len(answer) else "explanation")
        index = torch.tensor(where, device=model.device)
        logp = _target_logprobs(model, hidden[index[:, 0], index[:, 1]], torch.tensor(targets, device=model.device))
        for kind, value in zip(kinds, logp.tolist()):
            nll[kind] -= value
            count[kind] += 1
        last = torch.tensor([len(c) - 1 for c, _, _ in batch], device=model.device)
        answer_hidden = hidden[torch.arange(len(batch), device=model.device), last]
        probs.append(scores_from_logits(final_logits(model.model, answer_hidden), scorer.option_ids).probs)
    Q = np.concatenate(probs)
    total = sum(count.values())
    return {
        "perplexity": math.exp(sum(nll.values()) / total),
        "answer_perplexity": math.exp(nll["answer"] / count["answer"]),
        "explanation_perplexity": math.exp(nll["explanation"] / count["explanation"]) if count["explanation"] else None,
        "answer_ce": ce(text.P, Q),
        "tokens": total,
    }


def _target_logprobs(model: LoadedModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    parts = []
    for i in range(0, len(hidden), LOGIT_ROWS):
        logits = final_logits(model.model, hidden[i : i + LOGIT_ROWS]).float()
        parts.append(torch.log_softmax(logits, dim=-1).gather(1, targets[i : i + LOGIT_ROWS, None])[:, 0])
    return torch.cat(parts).double().cpu()


def perplexity_report(splits_dir: str | Path, scenario: Scenario, models: dict[str, Path], dtype: str, device: str,
                      trust_remote_code: bool, batch_size: int, max_states: int) -> dict:
    """`text_scores` of each model directory in `models` ({name: dir}) on the test split's
    first `max_states` states: {"states", "explanations", name: {...}, ...}."""
    splits_dir = Path(splits_dir)
    test = read_held_out(splits_dir, Schema.load(splits_dir / "features.json"))["test"]
    text = held_out_text(test, scenario, max_states)
    report = {"states": len(text.answers), "explanations": sum(bool(e) for e in text.explanations)}
    for name, model_dir in models.items():
        model = load_causal_lm(model_dir, dtype, device, trust_remote_code)
        report[name] = text_scores(model, text, [o.text for o in scenario.options], batch_size, desc=name)
        del model  # one model in memory at a time
    return report
