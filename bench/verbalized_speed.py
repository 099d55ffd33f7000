"""How much does sharing the prompt prefix speed up verbalized answers?

The stability stage samples stability.states x stability.repeats verbalized answers
(JSON with an explanation), in groups of teacher.batch_size. Every prompt carries the
same instructions and worked examples, most of its tokens. `VerbalizedReader` computes
that prefix once and generates each batch on top of a copy of its cache; with
share_prefix=False each batch generates from its whole prompts, left-padded.

Both ways, and transformers' own `generate` (whole prompts, its multinomial sampler and
stop-string check: the reader before it had its own decoding loop), one after the other,
on the same states (default: models/teacher, the packaged
Gemma-3-270M after download@teacher, in the dtype teacher.dtype resolves to):
sampled at stability.temperature, as the stability stage does, and greedy, where the two
must write the same replies (a differing reply is printed: in bfloat16 the two layouts
round differently, so an occasional near-tie may break the other way).
The last line printed is
`answers_per_s shared=<n> whole=<n> generate=<n> ratio_to_generate=<x> greedy_same=<k>/<n>`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.verbalized import VerbalizedReader
from decision_distill.teacher.ask import Readout, build_prompts


def timed(reader: VerbalizedReader, prefix: str, suffixes, seed: int) -> tuple[list[dict], float]:
    started = time.perf_counter()
    answers = reader.answer(prefix, suffixes, seed=seed)
    return answers, time.perf_counter() - started


class LibraryReader(VerbalizedReader):
    """The same prompts answered by transformers' generate, whole and left-padded."""

    @torch.inference_mode()
    def answer(self, prefix, suffixes, seed=0):
        from decision_distill.lm.verbalized import parse_verbalized

        results = []
        for i in range(0, len(suffixes), self.batch_size):
            prompts = [prefix + "".join(s) for s in suffixes[i : i + self.batch_size]]
            self.tokenizer.padding_side = "left"
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
            torch.manual_seed(seed + i)
            sampling = ({"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
                        if self.temperature > 0 else {"do_sample": False, "top_k": None, "top_p": None})
            out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, stop_strings=["\n"],
                                      tokenizer=self.tokenizer, pad_token_id=self.pad_id, **sampling)
            texts = self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            results += [parse_verbalized(t, self.key) for t in texts]
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=ROOT / "models" / "teacher")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--states", type=int, default=64, help="prompts per way (default: %(default)s)")
    args = parser.parse_args()

    params = load_params(args.params)
    scenario = load_scenario(ROOT / params.scenario)
    t, s = params.teacher, params.stability
    teacher = load_causal_lm(args.teacher, t.dtype, t.device, t.trust_remote_code)
    prompts = build_prompts(scenario, scenario.sample_states(args.states, seed=0),
                            Readout.teacher(params).with_(readout="verbalized"), teacher.tokenizer)
    print(f"dtype={teacher.dtype} batch_size={t.batch_size} max_new_tokens={t.max_new_tokens} "
          f"prefix_tokens={len(teacher.tokenizer(prompts.prefix).input_ids)} states={args.states}", flush=True)
    readers = {name: {temp: kind(teacher, scenario.verbalized_key, t.max_new_tokens, temp, t.batch_size,
                                 share_prefix=name == "shared")
                      for temp in (s.temperature, 0.0)}
               for name, kind in (("shared", VerbalizedReader), ("whole", VerbalizedReader),
                                  ("generate", LibraryReader))}
    timed(readers["shared"][0.0], prompts.prefix, prompts.suffixes[:2], 0)  # warm-up: first-call allocations
    seconds, greedy = {}, {}
    for name, reader in readers.items():
        sampled, seconds[name] = timed(reader[s.temperature], prompts.prefix, prompts.suffixes, s.seed)
        greedy[name], greedy_s = timed(reader[0.0], prompts.prefix, prompts.suffixes, 0)
        parsed = sum(a["ok"] for a in sampled)
        print(f"{name}: sampled {args.states / seconds[name]:.2f} answers/s ({parsed} parsed), "
              f"greedy {args.states / greedy_s:.2f} answers/s", flush=True)
    same = [a["raw"] == b["raw"] for a, b in zip(greedy["shared"], greedy["whole"])]
    for i in (i for i, ok in enumerate(same) if not ok):
        print(f"greedy reply {i} differs:\n  shared {greedy['shared'][i]['raw']!r}\n  whole  {greedy['whole'][i]['raw']!r}")
    rate = {name: args.states / sec for name, sec in seconds.items()}
    print(f"answers_per_s shared={rate['shared']:.2f} whole={rate['whole']:.2f} generate={rate['generate']:.2f} "
          f"ratio_to_generate={rate['shared'] / rate['generate']:.2f} greedy_same={sum(same)}/{len(same)}")


if __name__ == "__main__":
    main()
