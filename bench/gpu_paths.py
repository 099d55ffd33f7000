"""The GPU paths, run end to end on one CUDA machine, each as the pipeline runs it (its own process).

  download     download@teacher and download@slm on --model (a local model directory)
  scorer-bN    bench/teacher_throughput.py at teacher.batch_size N (bfloat16 on CUDA under dtype auto):
               states/s, scorer vs naive loop, peak GPU memory
  fidelity     bench/dtype_fidelity.py --device cuda: float32 vs bfloat16 on the same states
  lora-bf16    lora-train under bf16 autocast on CUDA (float32 LoRA weights, bf16 frozen base)
  lora-resume  the same run killed after its first checkpoint, then rerun: it must resume and
               end with the adapter of the uninterrupted run
  qlora        lora-train with slm.quantize: 4bit (bitsandbytes NF4 base), then merge on it
  fsdp-fp32    `accelerate launch --config_file configs/accelerate_fsdp.yaml` with one process
  fsdp-bf16    per visible GPU, slm.dtype float32 and auto

--random-like DIR builds a model with DIR's config.json and tokenizer but freshly initialised
weights (seed 0): the architecture, tokenizer and shapes are the real ones, so speed, memory and
whether each path runs are measured; answers and the float32-vs-bfloat16 KL are not meaningful
on random weights. Use --model for a real model directory.

The last lines are a table: check, exit status, seconds, and the check's last output line.
Every check's whole output is in WORK/logs/.

examples:
  python -m bench.gpu_paths --model /models/gemma-3-270m
  python -m bench.gpu_paths --random-like models/teacher --only scorer fidelity
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]

from decision_distill.lora.checkpoints import CHECKPOINT_PREFIX
CHECKS = ["download", "scorer", "fidelity", "lora-bf16", "lora-resume", "qlora", "fsdp-fp32", "fsdp-bf16"]


def random_like(src: Path, out: Path) -> Path:
    """A model directory with src's config and tokenizer files and seeded random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if (out / "model.safetensors").exists():
        return out
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                 "generation_config.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


def write_params(path: Path, base: Path, **settings) -> Path:
    """params.yaml with dotted settings changed (section.key=value)."""
    yaml = YAML()
    data = yaml.load(base.read_text())
    for dotted, value in settings.items():
        section, key = dotted.split("__")
        data[section][key] = value
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


class Runner:
    def __init__(self, work: Path, limit: int, deadline: float):
        self.work, self.limit, self.rows = work, limit, []
        self.ends = time.perf_counter() + deadline
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, cmd: list[str], kill_when=None) -> int | None:
        """Run cmd from the repository root; kill_when(): stop it early (SIGKILL) once true.
        None: skipped, the --deadline has passed."""
        if time.perf_counter() > self.ends:
            self.rows.append((name, None, 0.0, "skipped: --deadline passed"))
            return None
        log = self.work / "logs" / f"{name}.log"
        print(f"=== {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            while proc.poll() is None:
                if time.perf_counter() - start > self.limit or (kill_when and kill_when()):
                    os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.05)
        seconds = time.perf_counter() - start
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        # A failure's own message, not the launcher's traceback that follows it.
        errors = [line for line in lines if line.startswith("error:") or "Error:" in line]
        last = ((errors[0] if proc.returncode and errors else lines[-1]) if lines else "")[-200:]
        print("\n".join(lines[-25:]), flush=True)
        self.rows.append((name, proc.returncode, seconds, last))
        return proc.returncode

    def table(self) -> None:
        print("\ncheck        rc   seconds  last line")
        for name, rc, seconds, last in self.rows:
            print(f"{name:<12} {'-' if rc is None else rc:>3} {seconds:>8.1f}  {last}")


def lora_cmd(params: Path, slm: Path, out: Path, launcher: list[str] | None = None) -> list[str]:
    return [*(launcher or [sys.executable]), "stages/lora_train.py", "--splits", "data/splits", "--slm", str(slm),
            "--out", str(out / "adapter"), "--checkpoints", str(out / "checkpoints"), "--live", str(out / "live"),
            "--params", str(params)]


def adapter_gap(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def fsdp_launcher() -> list[str]:
    """The README's `accelerate launch` with the FSDP config, one process per visible GPU."""
    import torch

    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate_fsdp.yaml",
            "--num_processes", str(max(1, torch.cuda.device_count()))]


def check_qlora(runner: Runner, base: Path, slm: Path) -> None:
    """lora-train on an NF4 base, then merge folds its adapter into the unquantized base."""
    out = runner.work / "qlora"
    params = write_params(runner.work / "params_qlora.yaml", base, slm__quantize="4bit")
    if runner.run("qlora", lora_cmd(params, slm, out)) == 0:
        runner.run("qlora-merge", [sys.executable, "stages/merge.py", "--base", str(slm), "--adapter",
                                   str(out / "adapter"), "--out", str(out / "merged"), "--params", str(params)])


def check_resume(runner: Runner, base: Path, slm: Path) -> None:
    """Kill lora-train once its first checkpoint exists, rerun it, and compare its adapter with
    the uninterrupted run's (lora-bf16: same params, same data)."""
    whole, resumed = runner.work / "lora-bf16", runner.work / "lora-resume"
    first = lambda: any((resumed / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"))  # noqa: E731
    runner.run("lora-killed", lora_cmd(base, slm, resumed), kill_when=first)
    if runner.run("lora-resume", lora_cmd(base, slm, resumed)) == 0 and (whole / "adapter").exists():
        gap = adapter_gap(whole / "adapter", resumed / "adapter")
        said = [line for line in (runner.work / "logs" / "lora-resume.log").read_text().splitlines()
                if "resuming" in line]
        at = said[0].split("step")[-1].strip() if said else "nothing (it was not killed in time)"
        runner.rows.append(("resume-gap", 0, 0.0, f"resumed at step {at}; max |dw| vs uninterrupted = {gap:.3e}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a local causal-LM directory (config.json + safetensors)")
    source.add_argument("--random-like", type=Path, help="config and tokenizer from here, random weights")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_paths"), help="scratch directory")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256, 1024, 4096],
                        help="teacher.batch_size values for the scorer (default: %(default)s)")
    parser.add_argument("--states", type=int, default=8192, help="states per scorer run (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=150, help="seconds before a check is killed")
    parser.add_argument("--deadline", type=float, default=3600, help="seconds after which later checks are skipped")
    parser.add_argument("--only", nargs="+", choices=CHECKS, help="run these checks only (download always runs)")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the plumbing (the GPU-only checks refuse)")
    args = parser.parse_args()

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = args.model.resolve() if args.model else random_like(args.random_like.resolve(), work / "random_model")
    wanted = set(args.only or CHECKS) | {"download"}
    runner = Runner(work, args.limit, args.deadline)
    base = write_params(work / "params.yaml", ROOT / "params.yaml", teacher__model=str(model), teacher__device=args.device,
                        slm__model=str(model), slm__device=args.device, generate__cache=str(work / "answers.sqlite"))
    teacher, slm = work / "teacher", work / "slm"
    runner.run("download", [sys.executable, "stages/download.py", "--role", "teacher", "--params", str(base),
                            "--out", str(teacher)])
    runner.run("download-slm", [sys.executable, "stages/download.py", "--role", "slm", "--params", str(base),
                                "--out", str(slm)])
    # Most wanted first: what has never run anywhere, then what --deadline may cut.
    if "scorer" in wanted:
        for batch in args.batches:
            params = write_params(work / f"params_b{batch}.yaml", base, teacher__batch_size=batch)
            runner.run(f"scorer-b{batch}", [sys.executable, "-m", "bench.teacher_throughput", "--teacher", str(teacher),
                                            "--params", str(params), "--states", str(max(args.states, 2 * batch)),
                                            "--naive-states", "64"])
    if "qlora" in wanted:
        check_qlora(runner, base, slm)
    for name, dtype in (("fsdp-fp32", "float32"), ("fsdp-bf16", "auto")):
        if name in wanted:
            params = write_params(work / f"params_{name}.yaml", base, slm__dtype=dtype)
            runner.run(name, lora_cmd(params, slm, work / name, fsdp_launcher()))
    if "lora-bf16" in wanted or "lora-resume" in wanted:
        runner.run("lora-bf16", lora_cmd(base, slm, work / "lora-bf16"))
    if "lora-resume" in wanted:
        check_resume(runner, base, slm)
    if "fidelity" in wanted:
        params = write_params(work / "params_fid.yaml", base, teacher__batch_size=256)
        runner.run("fidelity", [sys.executable, "-m", "bench.dtype_fidelity", "--teacher", str(teacher), "--params",
                                str(params), "--device", args.device, "--states", "2048", "--chunk", "512"])
    runner.table()


if __name__ == "__main__":
    main()
