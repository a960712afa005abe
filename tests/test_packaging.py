"""The wheel carries the Scala jar, so a pip install gets the JVM writer without a checkout."""

import glob
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_wheel_carries_the_jar_and_jar_path_finds_it_once_installed(tmp_path):
    built = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_wheel.py"), "--out",
                            str(tmp_path / "dist")], check=True, capture_output=True, text=True).stdout.split()[-1]
    (jar,) = glob.glob(os.path.join(ROOT, "scala", "target", "spark-ml-scala_*.jar"))
    with zipfile.ZipFile(built) as wheel:
        names = wheel.namelist()
        packaged = f"spark_ml/jars/{os.path.basename(jar)}"
        assert packaged in names and "algorithms/proto/record.proto" in names
        with open(jar, "rb") as f:
            assert wheel.read(packaged) == f.read()
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), built],
                   check=True)
    # -S: no site-packages, so neither this checkout nor its editable install can answer instead
    found = subprocess.run([sys.executable, "-S", "-c", "import spark_ml.jvm as j; print(j.jar_path())"],
                           cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": os.environ["PATH"]},
                           check=True, capture_output=True, text=True).stdout.strip()
    assert found == str(site / packaged)
