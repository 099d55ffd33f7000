"""The effects stage with ablations on the ice-cream scenario and the synthetic teacher of
bench/active_vs_random.py (2,000 random states, the split stage, all four students trained with
train.epochs 80, effects.ablate [logreg, mlp]); writes under /tmp/effects_demo. Results: docs/active.md."""
import sys, subprocess, time
from pathlib import Path
import yaml
from bench.active_vs_random import synthetic_teacher, frame_of
from decision_distill.core.atomic import write_parquet
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.data.split import split_decisions
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.teacher.active import cached_ask


def main() -> None:
    d = Path('/tmp/effects_demo'); d.mkdir(exist_ok=True)
    sc = load_scenario('scenarios/ice_cream.yaml')
    states = sc.sample_states(2000, 0)
    cache = AnswerCache('/tmp/aa_cache/s.sqlite')
    frame = frame_of(sc, states, cached_ask(synthetic_teacher, cache, 'synthetic-ice-cream-v1')(states))
    write_parquet(frame, d / 'd.parquet'); sc.schema().save(d / 'f.json')
    raw = yaml.safe_load(open('params.yaml'))
    raw['train']['epochs'] = 80
    raw['effects']['ablate'] = ['logreg', 'mlp']
    (d / 'params.yaml').write_text(yaml.safe_dump(raw))
    print(split_decisions(d / 'd.parquet', d / 'f.json', parse_params(raw).split, d / 'splits'))
    py = sys.executable
    for arch in ['logreg', 'mlp', 'encoder', 'decoder']:
        subprocess.run([py, 'stages/train.py', arch, '--splits', str(d/'splits'), '--out', str(d/'students'/arch), '--live', str(d/'live'/arch), '--params', str(d/'params.yaml')], check=True, capture_output=True)
        print('trained', arch, flush=True)
    t = time.time()
    r = subprocess.run([py, 'stages/effects.py', '--splits', str(d/'splits'), '--students', str(d/'students'), '--out', str(d/'effects'), '--metrics', str(d/'effects.json'), '--params', str(d/'params.yaml')], capture_output=True, text=True)
    print(r.stdout[-2000:], r.stderr[-500:], 'effects seconds', time.time() - t)


if __name__ == "__main__":
    main()
