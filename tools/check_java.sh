#!/usr/bin/env bash
# Spark 4 needs Java 17 or newer; say how to get it instead of failing later inside pyspark.
set -u
java_bin=java
[ -n "${JAVA_HOME:-}" ] && java_bin="$JAVA_HOME/bin/java"
if ! command -v "$java_bin" >/dev/null 2>&1; then
  cat >&2 <<MSG
Java was not found. Spark 4 needs Java 17 or newer.
  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless
  macOS:         brew install openjdk@17
  or set JAVA_HOME to a JDK/JRE 17+ installation.
MSG
  exit 1
fi
version=$("$java_bin" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
major=${version%%.*}
[ "$major" = "1" ] && major=$(echo "$version" | cut -d. -f2)
if [ -z "$major" ] || [ "$major" -lt 17 ] 2>/dev/null; then
  echo "Java $version found at $(command -v "$java_bin"), but Spark 4 needs Java 17 or newer." >&2
  echo "  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless; then set JAVA_HOME" >&2
  exit 1
fi
