"""Make `dvc plots show` work offline: an HTML template with Vega inlined.

DVC's default page loads vega, vega-lite and vega-embed from a CDN. This script
fetches the same releases from the npm registry once (at setup), inlines them
into .dvc/plots/offline.html and points this checkout's local DVC config at it.
Without npm it says so and leaves DVC's default template in place.
"""

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}  # the versions DVC asks for
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>DVC plots</title>
{inlined}
<style>table {{ border-spacing: 15px; }} img {{ max-width: 100%; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def fetch_build(package: str, version: str, workdir: Path) -> str:
    subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    with tarfile.open(workdir / f"{package}-{version}.tgz") as tar:
        member = tar.extractfile(f"package/build/{package}.min.js")
        return member.read().decode("utf-8")


def main() -> None:
    if shutil.which("npm") is None:
        print("npm not found: `dvc plots show` will load Vega from its CDN", file=sys.stderr)
        return
    if not TEMPLATE.exists():
        with tempfile.TemporaryDirectory() as tmp:
            scripts = [fetch_build(p, v, Path(tmp)) for p, v in PACKAGES.items()]
        inlined = "\n".join("<script>" + js.replace("</script", "<\\/script") + "</script>" for js in scripts)
        TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
        TEMPLATE.write_text(PAGE.format(inlined=inlined))
    subprocess.run(["dvc", "config", "--local", "plots.html_template", "plots/offline.html"], cwd=ROOT, check=True)
    print(f"offline plot template: {TEMPLATE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
