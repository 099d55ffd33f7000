"""The four students: small networks that map an encoded state to logits over the options.

Every student takes the FeatureEncoder's output, `forward(ids, values) -> logits[N, K]`:
  ids     LongTensor[N, L]   token ids, right-padded with 0
  values  FloatTensor[N, L]  1.0 for a categorical token, the standardised number for a
                             numeric one, 0 at padding
The probabilities are softmax(logits) over the K options in the schema's order.

  logreg   linear map of the multi-hot state; for K=2 exactly logistic regression
  mlp      the same input through hidden ReLU layers
  encoder  a transformer over the state's tokens without positions: a state is a set
  decoder  a causal transformer with learned positions, read out at the last real token

A saved student is two files: model.safetensors (weights) and config.json (arch,
hyper-parameters, the encoder's schema), so loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.atomic import write_json
from ..core.errors import UserError
from .encoding import FeatureEncoder, PAD, densify

ARCHES = ("logreg", "mlp", "encoder", "decoder")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# A student directory holds its primary student (the first training seed) and, with more
# seeds, one more student per seed under seeds/<seed>/, plus each seed's training summary.
SEEDS_DIR = "seeds"
SEEDS_JSON = "seeds.json"
ENSEMBLE = "_ensemble"  # `<arch>_ensemble`: the mean of an architecture's seeds, a student of its own


class LogisticRegression(nn.Module):
    def __init__(self, vocab_size: int, n_options: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.linear = nn.Linear(vocab_size, n_options)

    def forward_dense(self, dense: torch.Tensor) -> torch.Tensor:
        return self.linear(dense)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return self.forward_dense(densify(ids, values, self.vocab_size))


class MLP(nn.Module):
    def __init__(self, vocab_size: int, n_options: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.vocab_size = vocab_size
        blocks, width = [], vocab_size
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, n_options))

    def forward_dense(self, dense: torch.Tensor) -> torch.Tensor:
        return self.net(dense)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return self.forward_dense(densify(ids, values, self.vocab_size))


class TokenEmbedding(nn.Module):
    """E[id] + value * S[id]: a category is a learned vector, a number also moves it along
    a learned direction. A learned start token goes first, so a state with no present
    values (all sets empty) still has one token to attend to and read out."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.token = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.scale = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.start = nn.Parameter(torch.randn(d_model) * 0.02)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (embeddings [N, 1+L, d], padding mask [N, 1+L], True at padding)."""
        x = self.token(ids) + values.unsqueeze(-1) * self.scale(ids)
        start = self.start.expand(ids.shape[0], 1, -1)
        padding = torch.cat([torch.zeros_like(ids[:, :1], dtype=torch.bool), ids == PAD], dim=1)
        return torch.cat([start, x], dim=1), padding


def _transformer(d_model: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model, heads, dim_feedforward=4 * d_model, dropout=dropout, batch_first=True, norm_first=True
    )
    # Nested tensors do not support pre-norm layers; turning them off avoids a warning.
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)


class EncoderTransformer(nn.Module):
    """No positional encoding: permuting a state's tokens does not change the output."""

    def __init__(self, vocab_size: int, n_options: int, d_model: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.embed = TokenEmbedding(vocab_size, d_model)
        self.transformer = _transformer(d_model, heads, layers, dropout)
        self.head = nn.Linear(d_model, n_options)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        x, padding = self.embed(ids, values)
        h = self.transformer(x, src_key_padding_mask=padding)
        real = (~padding).unsqueeze(-1).to(h.dtype)
        pooled = (h * real).sum(dim=1) / real.sum(dim=1)  # mean over real tokens only
        return self.head(pooled)


class DecoderTransformer(nn.Module):
    """Reads the state left to right (tokens in id order) and answers at the last real token."""

    def __init__(
        self, vocab_size: int, n_options: int, max_len: int, d_model: int, heads: int, layers: int, dropout: float
    ):
        super().__init__()
        self.embed = TokenEmbedding(vocab_size, d_model)
        self.position = nn.Embedding(max_len + 1, d_model)  # +1 for the start token
        self.transformer = _transformer(d_model, heads, layers, dropout)
        self.head = nn.Linear(d_model, n_options)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        x, padding = self.embed(ids, values)
        length = x.shape[1]
        x = x + self.position(torch.arange(length, device=ids.device))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=ids.device), diagonal=1)
        h = self.transformer(x, mask=causal, src_key_padding_mask=padding, is_causal=True)
        last = (~padding).sum(dim=1) - 1  # padding is on the right, so this is the last real token
        return self.head(h[torch.arange(h.shape[0]), last])


def build_student(arch: str, hparams: dict, encoder: FeatureEncoder) -> nn.Module:
    """A fresh student. `hparams` is Student.hparams(arch) (student.<arch>, its width resolved);
    lr is ignored here."""
    vocab, k = encoder.vocab_size, len(encoder.options)
    if arch == "logreg":
        return LogisticRegression(vocab, k)
    if arch == "mlp":
        return MLP(vocab, k, hparams["hidden"], hparams["layers"], hparams["dropout"])
    if arch in ("encoder", "decoder"):
        if hparams["d_model"] % hparams["heads"]:
            raise UserError(
                f"student.{arch}: d_model ({hparams['d_model']}, from student.hidden unless student.{arch}.d_model "
                f"sets it) must be divisible by student.{arch}.heads ({hparams['heads']})"
            )
        shape = (hparams["d_model"], hparams["heads"], hparams["layers"], hparams["dropout"])
        if arch == "encoder":
            return EncoderTransformer(vocab, k, *shape)
        return DecoderTransformer(vocab, k, encoder.width, *shape)
    raise UserError(f"unknown student architecture '{arch}'; choose one of {', '.join(ARCHES)}")


def save_student(directory: str | Path, arch: str, hparams: dict, model: nn.Module, encoder: FeatureEncoder) -> None:
    """Write model.safetensors + config.json into `directory` (the caller makes it atomic)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    save_file(weights, directory / WEIGHTS_FILE)
    config = {"arch": arch, "hparams": hparams, "options": list(encoder.options), "encoder": encoder.to_json()}
    write_json(config, directory / CONFIG_FILE)


def load_student(directory: str | Path) -> tuple[nn.Module, FeatureEncoder]:
    """Rebuild a saved student (in eval mode) and its encoder from the two files alone."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).exists():
            raise UserError(f"{directory / name}: not found; run the train stage for this student first")
    config = json.loads((directory / CONFIG_FILE).read_text())
    encoder = FeatureEncoder.from_json(config["encoder"])
    model = build_student(config["arch"], config["hparams"], encoder)
    try:
        weights = load_file(directory / WEIGHTS_FILE)  # safetensors only: never unpickles
    except Exception as err:  # safetensors raises its own error type for a non-safetensors file
        raise UserError(f"{directory / WEIGHTS_FILE}: not a safetensors file ({type(err).__name__}); "
                        "only safetensors weights are loaded, retrain the student") from None
    model.load_state_dict(weights)
    return model.eval(), encoder


def seed_dirs(directory: str | Path) -> dict[int | None, Path]:
    """Every seed's student in a student directory, the primary first: {seed: directory}
    (seed None for the primary of a directory trained before seeds were recorded)."""
    directory = Path(directory)
    summary = directory / SEEDS_JSON
    if not summary.exists():
        return {None: directory}
    seeds = [row["seed"] for row in json.loads(summary.read_text())]
    return {seed: directory if k == 0 else directory / SEEDS_DIR / str(seed) for k, seed in enumerate(seeds)}


def ensemble_dir(name: str, students_dir: str | Path) -> Path | None:
    """students_dir/<arch> for a name `<arch>_ensemble`, else None."""
    return Path(students_dir) / name[: -len(ENSEMBLE)] if name.endswith(ENSEMBLE) else None


def predict_seeds(directory: str | Path, frame: pd.DataFrame) -> dict[int | None, np.ndarray]:
    """P(option | state) [N, K] of every seed's student in `directory`."""
    out = {}
    for seed, path in seed_dirs(directory).items():
        model, encoder = load_student(path)
        out[seed] = predict(model, encoder, frame)
    return out


def predict(model: nn.Module, encoder: FeatureEncoder, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
    """P(option | state) as float64[N, K], rows summing to 1. Puts the model in eval mode."""
    ids, values = encoder.encode(frame)
    model.eval()
    with torch.inference_mode():
        probs = [
            torch.softmax(model(ids[i : i + batch_size], values[i : i + batch_size]).double(), dim=-1)
            for i in range(0, len(ids), batch_size)
        ]
    if not probs:
        return np.zeros((0, len(encoder.options)))
    return torch.cat(probs).numpy()
