"""personas/params.yaml, validated like params.yaml: one-line errors naming the key.

The persona pipeline reads the small LM settings (slm.model and its precision) and the
teacher's (teacher.model, its precision and teacher.chat_template) from the project's
params.yaml: both halves share the downloaded models."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..core.config import Section, one_line_error, read_yaml, reject_nan
from ..core.errors import UserError
from ..core.params import AtLeastOne, Dropout, LoraTraining

DEFAULT = Path("personas/params.yaml")


class Corpus(Section):
    path: str = "examples/board"
    personas: list[str] = Field(min_length=1)  # the corpus's personas; the training foreach runs over them

    @field_validator("personas")
    @classmethod
    def _names_unique(cls, personas: list[str]) -> list[str]:
        if len(set(personas)) != len(personas):
            raise ValueError("lists a name twice; list each person once")
        return personas


class Chunks(Section):
    words: int = Field(200, ge=10)  # about this many words per chunk
    held_out: float = Field(0.2, gt=0.0, lt=1.0)  # share of each person's words held out, as whole monologues
    seed: int = 0


class PersonaLoRA(LoraTraining):
    """persona-train: the shared LoRA settings with the persona defaults, and the chunk length."""
    dropout: Dropout = 0.1
    epochs: AtLeastOne = 2
    batch_size: AtLeastOne = 4
    max_steps: AtLeastOne = 100
    checkpoint_every: AtLeastOne = 5
    max_tokens: int = Field(320, ge=8)  # a chunk's tokens beyond this are cut (about 200 words fit)


class PersonaPerplexity(Section):
    bootstrap: int = Field(1000, ge=100)  # resamples of held-out chunks per interval
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0


class Extract(Section):
    categories: list[str] = Field(default_factory=lambda: ["belief", "memory", "personality trait"], min_length=1)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # P(yes) above which a chunk reveals the category
    cap: int = Field(3, ge=1)  # at most this many summaries and questions per person and category
    max_new_tokens: int = Field(32, ge=4)
    batch_size: int = Field(8, ge=1)  # prompts per forward pass: P(yes) batches and greedy generation batches


class Retrieval(Section):
    """The retrieval arms: the k passages of the person's own text most like the question."""
    k: int = Field(4, ge=1)  # passages per question (all of a person's, if they have fewer)
    embedder: Literal["all-MiniLM-L6-v2"] = "all-MiniLM-L6-v2"  # packaged names of decision_distill/lm/embeddings.py
    max_tokens: int = Field(1024, ge=16)  # the k passages' token budget: each is cut to max_tokens // k tokens

    @model_validator(mode="after")
    def _room_per_passage(self) -> "Retrieval":
        # A passage of a few tokens is a fragment, not what the person said: refuse rather than score it.
        if self.max_tokens // self.k < 16:
            # type "params": one_line_error prints the message as it is (it names the keys itself)
            raise PydanticCustomError("params", "{message}", {"message": (
                f"votes.retrieval.max_tokens {self.max_tokens} leaves under 16 tokens to each of "
                f"votes.retrieval.k={self.k} passages; raise max_tokens to at least {16 * self.k} or lower k")})
        return self


class ProfileCheck(Section):
    max_df: float = Field(0.1, gt=0.0, le=1.0)  # words in more than this share of the questions are boilerplate
    min_shared: int = Field(1, ge=1)  # a (person, question) pair sharing this many content words is flagged


class Votes(Section):
    batch_size: int = Field(8, ge=1)  # prompts per forward pass of the scorer
    bootstrap: int = Field(1000, ge=100)  # resamples of questions per interval
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0
    # Contextual calibration's content-free questions (Zhao et al. 2021 use these three).
    content_free: list[str] = Field(default_factory=lambda: ["N/A", "", "[MASK]"], min_length=1)
    loqo_c: float = Field(1.0, gt=0.0)  # inverse L2 penalty of the leave-one-question-out fit (scikit-learn's default)
    profile_check: ProfileCheck = ProfileCheck()
    retrieval: Retrieval = Retrieval()

    @field_validator("content_free")
    @classmethod
    def _content_free_unique(cls, texts: list[str]) -> list[str]:
        if len(set(texts)) != len(texts):
            raise ValueError("lists a question twice; list each content-free question once")
        return texts


class Agents(Section):
    """How persona-respond and persona-votes ask the agents: the base SLM (slm.model of params.yaml)
    and each person's merged model. The teacher and the judge follow teacher.chat_template."""
    # One setting for every agent, so that the tuned model and its baselines are asked alike.
    chat_template: bool = False  # ask inside slm.model's chat template (an instruction-tuned slm.model)


class Respond(Section):
    context_chunks: int = Field(2, ge=1)  # the base+chunks baseline sees this many of the person's training chunks
    max_new_tokens: int = Field(80, ge=4)
    temperature: float = Field(0.7, gt=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int = 0


class Judge(Section):
    model: str = "models/teacher"  # the judge LM's directory (default: the teacher of params.yaml)
    batch_size: int = Field(8, ge=1)
    min_mass: float = Field(0.5, gt=0.0, lt=1.0)  # below this rating-token mass a verdict is non-compliant
    # The judge's verdicts on agents count only when the lower bound of its order-averaged accuracy on
    # known pairs (a person's own words vs another member's) is above this; 0.5 is chance.
    validity_min: float = 0.5
    bootstrap: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0

    @field_validator("validity_min")
    @classmethod
    def _at_least_chance(cls, value: float) -> float:
        if not 0.5 <= value < 1.0:
            raise ValueError("is a lower bound on an accuracy whose chance level is 0.5; set it from 0.5 "
                             "(better than chance) up to below 1")
        return value


class PersonaParams(Section):
    corpus: Corpus
    chunks: Chunks = Chunks()
    lora: PersonaLoRA = PersonaLoRA()
    perplexity: PersonaPerplexity = PersonaPerplexity()
    extract: Extract = Extract()
    votes: Votes = Votes()
    agents: Agents = Agents()
    respond: Respond = Respond()
    judge: Judge = Judge()


def parse_persona_params(raw: object, source: str = str(DEFAULT)) -> PersonaParams:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: must be a mapping of sections (corpus, chunks, lora, ...)")
    reject_nan(raw, "", source)
    try:
        return PersonaParams.model_validate(raw)
    except ValidationError as err:
        raise UserError(one_line_error(err, source, PersonaParams)) from None


def load_persona_params(path: str | Path = DEFAULT) -> PersonaParams:
    return parse_persona_params(read_yaml(path), str(path))


def check_personas_match(params: PersonaParams, corpus_personas: list[str], source: str = str(DEFAULT)) -> None:
    """The foreach in personas/dvc.yaml runs over corpus.personas: it must name exactly the corpus's people."""
    listed, found = set(params.corpus.personas), set(corpus_personas)
    if listed != found:
        raise UserError(f"{source}: corpus.personas must list exactly the personas in {params.corpus.path}: "
                        f"set it to [{', '.join(sorted(found))}]")
