"""params.yaml, validated: a typo or a wrong type is a one-line error naming the key.

Each stage reads only its own sections, and `dvc.yaml` declares exactly those
keys (tests/test_params_declared.py records what each stage reads), so
`dvc exp run -S student.mlp.hidden=256` reruns only `train@mlp` and what depends
on it, and `dvc exp run -S student.hidden=256` every student with a width.

A little over 300 lines on purpose: the whole file's schema, every key's type, default and
bound, reads in one place, in the order of params.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .config import Section, one_line_error, read_yaml, reject_nan, rule_error
from .errors import UserError

class Teacher(Section):
    model: str = "packaged"
    revision: str = "main"
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    chat_template: bool = False
    readout: Literal["tokens", "verbalized"] = "tokens"
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0)


class Active(Section):
    """generate.active: used when generate.strategy is active."""
    reserve: int = Field(400, ge=0)     # first random states kept for the test split (never chosen actively)
    seed_states: int = Field(200, ge=1)  # random states asked before the first committee
    rounds: int = Field(8, ge=1)         # committee rounds sharing the remaining answers
    pool: int = Field(20000, ge=1)       # candidate states scored per round (fresh random draws)
    committee: int = Field(5, ge=2)      # bootstrapped MLPs voting
    hidden: int = Field(32, ge=1)
    epochs: int = Field(150, ge=1)
    pick: Literal["proportional", "top"] = "proportional"  # draw in proportion to disagreement | the k highest


class Rollouts(Section):
    """generate.rollouts: a share of the states drawn where a simulation goes (simulation.rollouts)."""
    share: float = Field(0.0, ge=0.0, lt=1.0)   # of generate.states; 0: random states only
    simulation: str = "simulations/christmas_market.yaml"   # a market written for the pipeline's scenario
    population: int = Field(100, ge=2)          # visitors per rollout day
    max_days: int = Field(50, ge=1)             # rollout days at most (a market of few distinct states stops here)
    seed: int = 1_000_000                       # day seeds seed, seed+1, ...: apart from simulate's days


class Generate(Section):
    source: Literal["teacher", "import"] = "teacher"
    states: int = Field(2000, ge=1)
    seed: int = 0
    # Outside the checkout by default, so `dvc exp run --temp/--queue` copies reuse it (see user_cache)
    cache: str = "~/.cache/decision-distill/answers.sqlite"
    # random: every state a seeded random draw | active: query by committee (decision_distill.teacher.active)
    strategy: Literal["random", "active"] = "random"
    active: Active = Active()
    rollouts: Rollouts = Rollouts()

    @model_validator(mode="after")
    def _rollouts_with_random(self):
        if self.rollouts.share > 0 and self.strategy != "random":
            raise rule_error("rollouts.share: rollout states mix with random states only; set it to 0 or "
                             "generate.strategy to random")
        return self


class Import(Section):
    path: str = "examples/imported_decisions.csv"
    features: list[str] = Field(default_factory=lambda: ["traits", "contexts"], min_length=1)
    probability: str | list[str] = "p_buy"
    options: list[str] = Field(default_factory=lambda: ["yes", "no"], min_length=2)


class Split(Section):
    seed: int = 0
    val: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.2, gt=0.0, lt=1.0)
    # name -> value combinations held out of training; each holdout is evaluated as its own split
    holdouts: dict[str, list[list[str]]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _ood_holdout_was_renamed(cls, raw):
        # Older params files still say ood_holdout; say what replaced it, not just "unknown key".
        if isinstance(raw, dict) and "ood_holdout" in raw:
            combos = raw["ood_holdout"] if isinstance(raw["ood_holdout"], list) and raw["ood_holdout"] else [["..."]]
            raise _params_error(f"split.ood_holdout was renamed; use split.holdouts: {{ood: {combos}}}".replace("'", ""))
        return raw

    @field_validator("holdouts")
    @classmethod
    def _holdouts_named_and_non_empty(cls, holdouts: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
        for name, combos in holdouts.items():
            if not HOLDOUT_NAME.fullmatch(name) or name in REGULAR_SPLITS:
                raise _params_error(f"holdout name '{name}' must match {HOLDOUT_NAME.pattern} and not be "
                                    f"{'/'.join(REGULAR_SPLITS)}; rename split.holdouts.{name}")
            if not combos or not all(combos):
                raise _params_error(f"holdout '{name}' has an empty value combination or none; give "
                                    f"split.holdouts.{name} non-empty ones, e.g. [[value_a, value_b], [value_c]]")
        return holdouts


HOLDOUT_NAME = re.compile(r"[a-z][a-z0-9_]*")
REGULAR_SPLITS = ("train", "val", "test")


def _params_error(message: str) -> PydanticCustomError:
    """A validation error whose message is `message` verbatim (pydantic would read braces as placeholders)."""
    return PydanticCustomError("params", "{message}", {"message": message})


class Train(Section):
    loss: Literal["soft_ce", "mse"] = "soft_ce"
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(0.01, ge=0.0)
    patience: int = Field(20, ge=1)
    seed: int = 0
    seeds: int = Field(5, ge=1)  # students per architecture, seeds seed..seed+seeds-1; unless student.ARCH.seeds


class LogReg(Section):
    lr: float = Field(0.05, gt=0.0)
    seeds: int | None = Field(None, ge=1)  # None: train.seeds


class MLP(Section):
    lr: float = Field(0.003, gt=0.0)
    hidden: int | None = Field(None, ge=1)  # None: student.hidden
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    seeds: int | None = Field(None, ge=1)  # None: train.seeds


class TransformerStudent(Section):
    lr: float = Field(0.001, gt=0.0)
    d_model: int | None = Field(None, ge=1)  # None: student.hidden
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    seeds: int | None = Field(1, ge=1)  # None: train.seeds; 1 by default: a minute per seed on 2 cores


# The key that holds each architecture's width; student.hidden fills it where it is null.
WIDTH_KEYS = {"mlp": "hidden", "encoder": "d_model", "decoder": "d_model"}


class Student(Section):
    hidden: int = Field(64, ge=1)  # the width of every student that has one, unless its own key sets it
    logreg: LogReg = LogReg()
    mlp: MLP = MLP()
    encoder: TransformerStudent = TransformerStudent()
    decoder: TransformerStudent = TransformerStudent()

    def width_key(self, arch: str) -> str | None:
        """The params key `arch`'s width comes from: student.ARCH.KEY when set, else student.hidden;
        None for an architecture with no width (logreg)."""
        key = WIDTH_KEYS.get(arch)
        if key is None:
            return None
        return f"student.{arch}.{key}" if getattr(getattr(self, arch), key) is not None else "student.hidden"

    def hparams(self, arch: str) -> dict:
        """Student `arch`'s hyperparameters, its width resolved (student.hidden unless
        student.ARCH.hidden / .d_model sets it): what training builds and config.json records."""
        hparams = getattr(self, arch).model_dump(exclude={"seeds"})
        key = WIDTH_KEYS.get(arch)
        if key is not None and hparams[key] is None:
            hparams[key] = self.hidden
        return hparams

    def seeds(self, arch: str, train: Train) -> list[int]:
        """The training seeds of `arch`'s students: train.seed onwards, student.ARCH.seeds of
        them, else train.seeds. The first is the architecture's primary student."""
        count = getattr(self, arch).seeds or train.seeds
        return list(range(train.seed, train.seed + count))

    @model_validator(mode="after")
    def _width_divisible_by_heads(self):
        for arch in ("encoder", "decoder"):
            d_model, heads = self.hparams(arch)["d_model"], getattr(self, arch).heads
            if d_model % heads:
                source = self.width_key(arch)
                alone = f", or student.{arch}.d_model for {arch} alone" if source == "student.hidden" else ""
                raise _params_error(f"student.{arch}: d_model {d_model} (from {source}) is not a multiple of "
                                    f"student.{arch}.heads {heads}; set {source} to a multiple of {heads}{alone}")
        return self


class Evaluate(Section):
    ece_bins: int = Field(10, ge=1)
    # gap_closed on P(action) counts only states where the base SLM misses the teacher by more than this
    gap_min: float = Field(0.05, gt=0.0, lt=1.0)
    # the bootstrap interval of kl_vs_noise_floor and mse_vs_noise_floor
    bootstrap: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = 0


class SLM(Section):
    """The small causal LM student: download@slm, lora-train, merge, perplexity, evaluate."""
    enabled: bool = True   # false: the SLM stages write empty markers and evaluate has no SLM rows
    model: str = "packaged"
    revision: str = "main"
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    quantize: Literal["none", "4bit"] = "none"
    batch_size: int = Field(16, ge=1)  # states per forward pass when scoring


# Constraints of the LoRA settings whose defaults personas/params.yaml overrides: one rule for both.
AtLeastOne = Annotated[int, Field(ge=1)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class LoraTraining(Section):
    """The settings every LoRA adapter trains with (decision_distill.lora.trainer): lora-train's
    `lora` section below and persona-train's (personas/params.yaml) extend it."""
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0.0)
    dropout: Dropout = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    lr: float = Field(1e-3, gt=0.0)
    epochs: AtLeastOne = 1
    batch_size: AtLeastOne = 8
    max_steps: AtLeastOne = 150        # stops at whichever comes first, epochs or steps
    checkpoint_every: AtLeastOne = 75  # steps between resumable checkpoints (and validation losses)
    seed: int = 0


class LoRA(LoraTraining):
    """lora-train: peft LoRA on slm.model, distilling the teacher's answer distribution."""
    explanation_weight: float = Field(0.0, ge=0.0)  # next-token loss on teacher explanations, when present


class Perplexity(Section):
    """perplexity: base and merged SLM on the teacher's held-out text."""
    max_states: int = Field(100, ge=1)  # first states of the test split to score


class Stability(Section):
    """stability: how consistent the teacher is, and its noise floor. The rules that need
    the scenario or several keys (repeats, temperature, paraphrases) are checked by
    decision_distill.data.scenario_file.check_stability_settings, with messages that say why."""
    states: int = Field(40, ge=2)           # the first states of the test split (data/splits/test.parquet)
    repeats: int = 3                        # R sampled verbalized answers per state (>= 2)
    temperature: float = Field(0.7, ge=0.0)  # sampling temperature (> 0)
    paraphrases: int = 3                    # K wordings of the prompt, the canonical one included (>= 2)
    shot_orders: int = Field(2, ge=0)       # seeded reorderings of the worked examples
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 8], min_length=1)  # numerics check
    seed: int = 0


class Games(Section):
    """games: per-cell comparison of a scenario that lists `cells` (decision_distill.evaluation.games)."""
    bootstrap: int = Field(1000, ge=100)            # resamples per bootstrap interval
    confidence: float = Field(0.95, gt=0.0, lt=1.0)  # interval coverage
    seed: int = 0


class Simulate(Section):
    """simulate: the simulations (simulations/*.yaml) run with the teacher and each decider."""
    simulations: list[str] = Field(default_factory=lambda: ["simulations/christmas_market.yaml",
                                                            "simulations/christmas_market_evening.yaml",
                                                            "simulations/repeated_dilemma.yaml"])
    # constant (training mean P(action)) and lookup (the teacher's answers by state) are references
    # ARCH_ensemble: the mean of ARCH's train.seeds students
    deciders: list[Literal["constant", "lookup", "logreg", "mlp", "encoder", "decoder", "slm_tuned",
                           "logreg_ensemble", "mlp_ensemble", "encoder_ensemble", "decoder_ensemble"]] = Field(
        default_factory=lambda: ["constant", "lookup", "logreg", "mlp", "encoder", "decoder", "slm_tuned",
                                 "logreg_ensemble", "mlp_ensemble"])
    population: int = Field(400, ge=2)   # visitors (players) per replicate
    replicates: int = Field(40, ge=1)    # seeded replicates per decider, seeds seed..seed+replicates-1
    seed: int = 0
    bootstrap: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)


class Effects(Section):
    """effects: per-value effects, teacher vs students; permutation importance; input ablations."""
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    repeats: int = Field(10, ge=2)        # shuffles per feature group (permutation importance)
    ablate: list[Literal["logreg", "mlp", "encoder", "decoder"]] = Field(default_factory=list)  # retrain without each group
    bootstrap: int = Field(1000, ge=100)  # resamples of each ablation's KL-rise interval
    seed: int = 0


class Params(Section):
    scenario: str = "scenarios/ice_cream.yaml"
    teacher: Teacher = Teacher()
    generate: Generate = Generate()
    # "import" is a Python keyword, hence the alias.
    import_: Import = Field(Import(), alias="import")
    split: Split = Split()
    train: Train = Train()
    student: Student = Student()
    evaluate: Evaluate = Evaluate()
    slm: SLM = SLM()
    lora: LoRA = LoRA()
    perplexity: Perplexity = Perplexity()
    stability: Stability = Stability()
    games: Games = Games()
    simulate: Simulate = Simulate()
    effects: Effects = Effects()

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


ARCHITECTURES = tuple(name for name in Student.model_fields if name != "hidden")  # its sections, in order


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: must be a mapping of sections, got {type(raw).__name__}")
    reject_nan(raw, "", source)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise UserError(one_line_error(err, source, Params)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path), str(path))
