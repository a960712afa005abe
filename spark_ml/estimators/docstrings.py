"""Class docstrings with a Params section generated from the Params' own declarations, at class creation.

A class writes by hand only what no declaration knows: a summary (what it trains or adds, and why one would
pick it) and an ``Examples`` section. The ``Parameters`` / ``Other Parameters`` sections between them are
rendered (numpydoc style) from the same :class:`~spark_ml.estimators.params.DeclaredParam` objects that
validate values, set defaults and build the constructor's signature, so what ``help()`` shows is what the
class accepts, and a new algorithm's estimator is documented by declaring its hyperparameters.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .params import DeclaredParam

_EXAMPLES = re.compile(r"^Examples\n-+[ \t]*$", re.MULTILINE)
_WIDTH = 100


def document(cls: type, own: Iterable[DeclaredParam], other: Iterable[DeclaredParam],
             notes: Iterable[str] = ()) -> None:
    """Set ``cls.__doc__``: its written summary, ``notes``, the Params sections, then its written examples."""
    written = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    match = _EXAMPLES.search(written)
    summary, examples = (written[:match.start()].rstrip(), written[match.start():]) if match else (written, "")
    parts = [summary, *(textwrap.fill(note, _WIDTH) for note in notes),
             params_section("Parameters", own), params_section("Other Parameters", other), examples]
    cls.__doc__ = "\n\n".join(part for part in parts if part) + "\n"


def params_section(title: str, params: Iterable[DeclaredParam]) -> str:
    entries = [param_entry(p) for p in params]
    if not entries:
        return ""
    return "\n".join([title, "-" * len(title), *entries])


def param_entry(param: DeclaredParam) -> str:
    """``name : type, default value`` and an indented description (numpydoc's form of a parameter)."""
    if param.required:
        qualifier = "required"
    elif param.default is None:
        qualifier = "optional"
    else:
        qualifier = f"default {param.default!r}"
    words = [param.summary]
    if param.accepts:
        words.append(f"Accepts {param.accepts}.")
    hp = param.hyperparameter
    if hp is not None and hp.doc and hp.name != param.name:
        words.append(f"SageMaker: ``{hp.name}``.")
    body = textwrap.fill(" ".join(words), _WIDTH, initial_indent="    ", subsequent_indent="    ")
    return f"{param.name} : {inspect.formatannotation(param.kind)}, {qualifier}\n{body}"

