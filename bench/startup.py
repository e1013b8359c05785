"""Start-up of the CLI, which is part of the product: ``k8sx --help`` <= 0.2 s, a TAB <= 0.15 s.

Run: ``.venv/bin/python bench/startup.py [-n 20]``. Each figure is the median wall time of whole
processes. The references, measured in the same run: a bare interpreter start (the floor nobody
beats) and a minimal typer app with six empty groups printing its help (what "just use typer"
costs). Not a test: timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)

MINIMAL_TYPER = """
import typer
app = typer.Typer(add_completion=False)
for g in ("runtime", "cni", "flannel", "crd", "operator", "completion"):
    app.add_typer(typer.Typer(help=g + " things"), name=g)
@app.callback()
def root(): "Root."
app()
"""


def median_ms(argv: list[str], n: int, env: dict[str, str] | None = None) -> float:
    samples = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples[1:])  # the first run warms the page cache


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20)
    n = parser.parse_args().n
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="k8sxt-bench-", delete=False) as f:
        f.write(MINIMAL_TYPER)
    try:
        k8sx = os.path.join(BIN, "k8sx")
        tab = dict(os.environ, _K8SX_COMPLETE="bash", COMP_LINE="k8sx crd ls --output ")
        rows = [
            ("python -c pass (floor)", median_ms([sys.executable, "-c", "pass"], n), None),
            ("minimal typer app --help (framework)", median_ms([sys.executable, f.name, "--help"], n), None),
            ("k8sx --help", median_ms([k8sx, "--help"], n), 200.0),
            ("k8sx cni --help", median_ms([k8sx, "cni", "--help"], n), 200.0),
            ("k8sx TAB (bash, option values)", median_ms([k8sx], n, tab), 150.0),
            ("kubectl_complete-x crd ''", median_ms([os.path.join(BIN, "kubectl_complete-x"), "crd", ""], n), 150.0),
        ]
    finally:
        os.unlink(f.name)
    floor, framework = rows[0][1], rows[1][1]
    print(f"{'what':40} {'median ms':>10} {'target':>8} {'x floor':>8} {'x typer':>8}")
    for name, ms, target in rows:
        verdict = "" if target is None else ("ok" if ms <= target else "OVER")
        print(f"{name:40} {ms:10.1f} {'' if target is None else f'{target:.0f}':>8} "
              f"{ms / floor:8.2f} {ms / framework:8.2f} {verdict}")


if __name__ == "__main__":
    main()
