"""Build the spark-ml wheel with the Scala jar inside (``make wheel``), so pip users get the JVM writer.

The jar is compiled by ``make scala`` (``scala/target``); this copies the tracked source tree to a scratch
folder, puts the jar in ``spark_ml/jars/`` there (package data), and runs ``pip wheel`` on the copy, so the
checkout is never modified. ``spark_ml.jar_path()`` finds the packaged jar in an installed wheel.

    python tools/build_wheel.py [--out dist]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(out: str) -> str:
    jars = sorted(glob.glob(os.path.join(ROOT, "scala", "target", "spark-ml-scala_*.jar")))
    if not jars:
        raise SystemExit("no Scala jar in scala/target: run `make scala` first")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory(prefix="spark-ml-wheel-") as scratch:
        for name in filter(None, tracked.decode().split("\0")):
            target = os.path.join(scratch, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), target)
        os.makedirs(os.path.join(scratch, "spark_ml", "jars"), exist_ok=True)
        shutil.copy2(jars[-1], os.path.join(scratch, "spark_ml", "jars"))
        os.makedirs(out, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        os.path.abspath(out), scratch], check=True)
    built = sorted(glob.glob(os.path.join(out, "spark_ml-*.whl")), key=os.path.getmtime)
    return built[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"))
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
