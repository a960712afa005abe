#!/usr/bin/env bash
# Builds scala/target/spark-ml-scala_2.13-<version>.jar with the Scala compiler that ships in pyspark's
# jars/ folder: no sbt or Maven download. Skips all work when the jar is newer than every source and was
# built against the same Spark jars. Prints the jar's path on stdout.
#
#   SPARK_JARS=/path/to/jars  use these jars instead of the venv's pyspark (e.g. $SPARK_HOME/jars)
#   VENV_PYTHON=/path/to/python  the interpreter whose pyspark to use (default: <repo>/.venv/bin/python)
#
# Needs a Java 17+ runtime (scalac is a Java program); the JDK's `jar` tool is used when present, else the
# jar is zipped with Python's zipfile module.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
python=${VENV_PYTHON:-$root/.venv/bin/python}

if [ -z "${SPARK_JARS:-}" ]; then
  if [ ! -x "$python" ]; then
    echo "scala/build.sh: $python not found; run 'make setup' first or set SPARK_JARS" >&2
    exit 1
  fi
  SPARK_JARS="$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
fi
compiler=$(ls "$SPARK_JARS"/scala-compiler-2.13.*.jar 2>/dev/null | head -n 1 || true)
if [ -z "$compiler" ]; then
  echo "scala/build.sh: no scala-compiler-2.13.*.jar in $SPARK_JARS (is this Spark 4.x built for Scala 2.13?)" >&2
  exit 1
fi

version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$root/pyproject.toml" | head -n 1)
[ -n "$version" ] || { echo "scala/build.sh: no version in $root/pyproject.toml" >&2; exit 1; }
target="$here/target"
jar="$target/spark-ml-scala_2.13-$version.jar"
stamp="$target/.built-against"
spark_id="$(ls "$SPARK_JARS" | grep -E '^spark-(core|sql)_' | paste -sd ' ' -)"

source_dirs=("$here/src/main/scala" "$here/src/main/java" "$here/src/main/resources" "$here/examples")
existing_dirs=()
for d in "${source_dirs[@]}"; do [ -d "$d" ] && existing_dirs+=("$d"); done

if [ -f "$jar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spark_id" ] \
   && [ -z "$(find "${existing_dirs[@]}" "$here/build.sh" "$root/pyproject.toml" -newer "$jar" -type f | head -n 1)" ]; then
  echo "$jar"
  exit 0
fi

mkdir -p "$target"
work=$(mktemp -d "$target/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/classes"

mapfile -t scala_sources < <(find "${existing_dirs[@]}" -name '*.scala' | sort)
mapfile -t java_sources < <(find "${existing_dirs[@]}" -name '*.java' | sort)
all_sources=("${scala_sources[@]}" "${java_sources[@]}")
if [ "${#all_sources[@]}" -eq 0 ]; then
  echo "scala/build.sh: no sources under $here/src" >&2
  exit 1
fi

echo "scala/build.sh: compiling ${#all_sources[@]} sources with $(basename "$compiler")" >&2
java -Xss8m -cp "$SPARK_JARS/*" scala.tools.nsc.Main \
  -d "$work/classes" -classpath "$SPARK_JARS/*" \
  -deprecation -feature -Werror \
  "${all_sources[@]}"
if [ "${#java_sources[@]}" -gt 0 ]; then
  javac -d "$work/classes" -cp "$work/classes:$SPARK_JARS/*" --release 17 "${java_sources[@]}"
fi
if [ -d "$here/src/main/resources" ]; then
  cp -R "$here/src/main/resources/." "$work/classes/"
fi

cat > "$work/MANIFEST.MF" <<MF
Implementation-Title: spark-ml-scala
Implementation-Version: $version
Built-Against: $spark_id
MF
if command -v jar >/dev/null 2>&1; then
  jar --create --file "$work/out.jar" --manifest "$work/MANIFEST.MF" -C "$work/classes" .
else
  mkdir -p "$work/classes/META-INF"
  { echo "Manifest-Version: 1.0"; cat "$work/MANIFEST.MF"; } > "$work/classes/META-INF/MANIFEST.MF"
  (cd "$work/classes" && "$python" -c 'import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    z.write("META-INF/MANIFEST.MF")
    for d, _, files in sorted(os.walk(".")):
        for f in sorted(files):
            p = os.path.relpath(os.path.join(d, f))
            if p != os.path.join("META-INF", "MANIFEST.MF"):
                z.write(p)' "$work/out.jar")
fi
mv -f "$work/out.jar" "$jar"
printf '%s' "$spark_id" > "$stamp"
echo "$jar"
