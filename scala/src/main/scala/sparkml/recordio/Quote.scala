package sparkml.recordio

/** Strings as Python's `repr` shows them, so messages read the same on both sides. */
object Quote {
  def py(s: String): String =
    if (s.contains('\'') && !s.contains('"')) "\"" + s + "\"" else "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
}
