"""Loading a large cases file: `python -m tests.bench.cases_load [--cases 5500]`.

Writes a cases file of N cases (the knowledge-base example's cases, repeated) and loads it through
`proxy.cli.cases.load_cases` with the Python `yaml.SafeLoader` and with the loader it uses
(`yaml.CSafeLoader` where libyaml is present), best of 3 each. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from proxy.cli import cases

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "examples" / "knowledge-base.cases.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5500)
    count = parser.parse_args().cases
    blocks = EXAMPLE.read_text(encoding="utf-8").split("cases:\n", 1)[1].split("  - name:")[1:]
    text = "cases:\n" + "".join("  - name:" + blocks[i % len(blocks)] for i in range(count))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "many.cases.yaml"
        path.write_text(text, encoding="utf-8")
        for name, loader in (
            ("SafeLoader (Python)", yaml.SafeLoader),
            (f"{cases.LOADER.__name__} (used)", cases.LOADER),
        ):
            cases.LOADER = loader
            best, loaded = float("inf"), []
            for _ in range(3):
                start = time.perf_counter()
                loaded = cases.load_cases(str(path))
                best = min(best, time.perf_counter() - start)
            print(f"{name}: {len(loaded)} cases in {best:.2f} s")


if __name__ == "__main__":
    main()
