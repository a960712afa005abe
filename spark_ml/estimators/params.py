"""Spark ML Params declared once: each carries its default, what it accepts and its description.

Every SageMaker hyperparameter becomes a camelCase Param (``mini_batch_size`` → ``miniBatchSize``) with a
type converter that validates through the same declaration the worker uses, so a bad value fails when it
is set, naming the Param, the hyperparameter and what it accepts. The Spark-side settings every estimator
shares (``featuresCol``, ``numWorkers``…) are declared the same way.

From these declarations alone, :class:`DeclaredParams` gives each class its defaults, pyspark's getters and
setters, a constructor and ``setParams`` whose ``inspect.signature`` lists every Param as a keyword (what
tab-completion and ``help()`` show), and a docstring listing the Params (:mod:`.docstrings`), so an algorithm
added later gets all of it without writing any of it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from pyspark.ml.param import Param, Params

from algorithms.hyperparameters import AUTO, Hyperparameter, HyperparameterError


class ParamError(ValueError):
    pass


class DeclaredParam(Param):
    """A Param that also knows its default, the Python type of its values and what it accepts.

    ``doc`` (what ``explainParams()`` prints) is built from ``summary`` and ``accepts``; the default is not
    part of it, since ``explainParams()`` prints the default itself.
    """

    def __init__(self, name: str, summary: str, typeConverter: Callable[[Any], Any], *, kind: Any,
                 default: Any = None, accepts: str = "", required: bool = False,
                 hyperparameter: Hyperparameter | None = None) -> None:
        self.summary = _sentence(summary)
        self.kind = kind  # the annotation of a value: int, float, bool, str, list[str]…
        self.default = default  # None: unset until the user sets it
        self.accepts = accepts  # what values are allowed, when the type alone does not say it
        self.required = required
        self.hyperparameter = hyperparameter  # the SageMaker hyperparameter this Param sends, if any
        super().__init__(Params._dummy(), name, _explanation(self.summary, accepts, required), typeConverter)

    def with_default(self, default: Any) -> DeclaredParam:
        """The same Param with another default (a class that trains something more specific, say)."""
        return DeclaredParam(self.name, self.summary, self.typeConverter, kind=self.kind, default=default,
                             accepts=self.accepts, required=self.required, hyperparameter=self.hyperparameter)


def _sentence(text: str) -> str:
    """Declarations written as phrases ("boosting rounds") read as sentences beside the accepted values."""
    text = text.strip()
    first = text.split(" ", 1)[0]
    if first.isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    return text if not text or text[-1] in ".!?" else text + "."


def _explanation(summary: str, accepts: str, required: bool) -> str:
    parts = [summary]
    if accepts:
        parts.append(f"Accepts {accepts}.")
    if required:
        parts.append("Required.")
    return " ".join(p for p in parts if p)


def _annotation(hp: Hyperparameter) -> Any:
    kind = list[str] if hp.kind is list else hp.kind
    if hp.auto and hp.kind is not str:
        kind = kind | str  # "auto" is a string
    if hp.default is not None and not isinstance(hp.default, hp.kind) and hp.default != AUTO:
        kind = kind | type(hp.default)  # a declaration that also takes numbers (or strings) as its default shows
    return kind


def _accepts(hp: Hyperparameter) -> str:
    """What the declaration accepts, or "" when its type already says all of it (any integer, any string…)."""
    said = hp.describe()
    return "" if said == Hyperparameter(hp.name, hp.kind).describe() else said


def _converter(hp: Hyperparameter, label: str, strict: bool = False) -> Callable[[Any], Any]:
    """Validation through the declaration, failing with ``Param <label>: …``; ``strict`` also refuses non-strings
    for a string (a hyperparameter takes ``5`` for ``"5"``, as SageMaker's strings do, but a column name or a
    folder is never a number)."""

    def convert(value: Any) -> Any:
        if strict and hp.kind is str and not isinstance(value, str):
            raise ParamError(f"Param {label}: must be a string, got {value!r}")
        try:
            return hp.parse(value)
        except HyperparameterError as exc:
            raise ParamError(f"Param {label}: {exc.problem}") from None

    return convert


def hyperparameter_param(hp: Hyperparameter) -> DeclaredParam:
    """The Param of a SageMaker hyperparameter: its camelCase name, its declaration's default and range."""
    return DeclaredParam(hp.param_name, hp.doc or f"SageMaker hyperparameter {hp.name}.",
                         _converter(hp, f"{hp.param_name} ({hp.name})"), kind=_annotation(hp), default=hp.default,
                         accepts=_accepts(hp), required=hp.required, hyperparameter=hp)


def setting_param(name: str, kind: type, summary: str, default: Any = None, **limits: Any) -> DeclaredParam:
    """A Spark-side setting (never sent to the algorithm), validated and described like a hyperparameter.

    ``limits`` are :class:`Hyperparameter`'s ``low``/``high``/``choices``/``required``… .
    """
    declaration = Hyperparameter(name, kind, default=default, doc=summary, param_name=name, **limits)
    return DeclaredParam(name, summary, _converter(declaration, name, strict=True), kind=_annotation(declaration),
                         default=default, accepts=_accepts(declaration), required=declaration.required)


class DeclaredParams(Params):
    """Params whose defaults, accessors, keyword signatures and docstring come from their :class:`DeclaredParam`
    class attributes. A subclass may set ``_param_defaults`` to change inherited defaults, ``_positional`` to
    let the constructor take some Params by position as well, and ``_other_parameters`` to have its Params
    listed apart (as the settings every estimator shares are)."""

    _param_defaults: ClassVar[dict[str, Any]] = {}
    _positional: ClassVar[tuple[str, ...]] = ()
    _other_parameters: ClassVar[bool] = False  # True: subclasses list this class's Params as "Other Parameters"
    _declared: ClassVar[dict[str, DeclaredParam]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, default in cls.__dict__.get("_param_defaults", {}).items():
            setattr(cls, name, getattr(cls, name).with_default(default))
        cls._declared = declared_params(cls)
        _add_accessors(cls)
        _sign(cls, "__init__", signature(cls, positional=cls._positional))
        _sign(cls, "setParams", signature(cls))
        from .docstrings import document

        shared = _shared_names(cls)
        document(cls, own=[p for n, p in cls._declared.items() if n not in shared],
                 other=[p for n, p in cls._declared.items() if n in shared], notes=cls._docstring_notes())

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        # what getters and explainParams show while a Param is unset; isSet() still tells the two apart
        self._setDefault(**{name: p.default for name, p in self._declared.items() if p.default is not None})
        self.setParams(**kwargs)

    def setParams(self, **kwargs: Any):
        """Sets the Params given as keywords (None leaves one as it is) and returns this instance."""
        unknown = sorted(k for k in kwargs if k not in self._declared)
        if unknown:
            raise ParamError(_unknown_message(type(self).__name__, unknown[0], list(self._declared)))
        self._set(**{k: v for k, v in kwargs.items() if v is not None})
        return self

    @classmethod
    def _docstring_notes(cls) -> list[str]:
        """Sentences the generated docstring adds after the class's own summary."""
        return []


def declared_params(cls: type) -> dict[str, DeclaredParam]:
    """``cls``'s DeclaredParams by name: those the constructor also takes by position, the hyperparameters in
    their declaration order, the class's other Params in the order their classes define them (bases first),
    then the shared ones (``_other_parameters``)."""
    found: dict[str, DeclaredParam] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, DeclaredParam):
                found[name] = getattr(cls, name)  # the most derived declaration, in the first one's place
    shared = _shared_names(cls)
    positional = {n: found[n] for n in getattr(cls, "_positional", ()) if n in found}
    hyperparameters = {n: p for n, p in found.items() if p.hyperparameter is not None}
    own = {n: p for n, p in found.items() if p.hyperparameter is None and n not in shared}
    return {**positional, **hyperparameters, **own, **{n: p for n, p in found.items() if n in shared}}


def _shared_names(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ if klass.__dict__.get("_other_parameters")
            for name, value in vars(klass).items() if isinstance(value, DeclaredParam)}


def _unknown_message(owner: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{owner} has no Param {name!r}{hint} (Params: {', '.join(sorted(known))})"


def signature(cls: type, positional: tuple[str, ...] = ()) -> inspect.Signature:
    """``(self, <positional>, *, <every other Param>=<its default>)``, annotated with the values' types."""
    declared = cls._declared
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    order = [n for n in positional if n in declared] + [n for n in declared if n not in positional]
    for name in order:
        param = declared[name]
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if name in positional else inspect.Parameter.KEYWORD_ONLY
        annotation = param.kind if param.default is not None else param.kind | None
        parameters.append(inspect.Parameter(name, kind, default=param.default, annotation=annotation))
    return inspect.Signature(parameters)


def _sign(cls: type, method: str, sig: inspect.Signature) -> None:
    """Give ``cls`` its own ``method`` with ``sig``, calling the hand-written implementation it inherits."""
    inherited = getattr(cls, method)
    implementation = getattr(inherited, "__wrapped__", inherited)

    def signed(self, *args, **kwargs):
        return implementation(self, *args, **kwargs)

    signed.__name__ = method
    signed.__qualname__ = f"{cls.__qualname__}.{method}"
    signed.__module__ = cls.__module__
    signed.__doc__ = implementation.__doc__ if method != "__init__" else (
        f"A {cls.__name__} with the Params given as keywords (see ``help({cls.__name__})``); a name that is not "
        "a Param fails, naming it.")
    signed.__wrapped__ = implementation
    signed.__signature__ = sig
    setattr(cls, method, signed)


def _add_accessors(cls: type) -> None:
    """pyspark's ``getX()`` / ``setX(value)`` for every Param that has none yet."""
    for name in cls._declared:
        cap = name[0].upper() + name[1:]
        if not hasattr(cls, f"get{cap}"):
            setattr(cls, f"get{cap}", _getter(name))
        if not hasattr(cls, f"set{cap}"):
            setattr(cls, f"set{cap}", _setter(name))


def _setter(name: str):
    def setter(self, value):
        return self._set(**{name: value})

    setter.__name__ = f"set{name[0].upper()}{name[1:]}"
    setter.__doc__ = f"Sets {name}; returns this instance."
    return setter


def _getter(name: str):
    def getter(self):
        return self.getOrDefault(getattr(self, name))

    getter.__name__ = f"get{name[0].upper()}{name[1:]}"
    getter.__doc__ = f"The value of {name}, or its default."
    return getter


def declared_hyperparameter_params(spec, skip: set[str]) -> dict[str, DeclaredParam]:
    """The Params of an algorithm's hyperparameters, except those the class fixes itself."""
    return {hp.param_name: hyperparameter_param(hp) for hp in spec if hp.name not in skip}


class CommonParams(DeclaredParams):
    """Params every spark_ml estimator and model shares."""

    _other_parameters = True

    featuresCol = setting_param("featuresCol", str, "The features column: a vector or array<float|double>.",
                                "features")
    labelCol = setting_param("labelCol", str, "The label column (supervised algorithms; bring-your-own code gets "
                             "it when the column exists).", "label")
    numWorkers = setting_param("numWorkers", int, "Training workers: one Spark barrier task each, all running "
                               "at once.", 1, low=1)
    gpusPerWorker = setting_param("gpusPerWorker", float, "GPUs each worker asks Spark for; 0 trains on CPU.",
                                  0.0, low=0)
    modelStore = setting_param("modelStore", str, "Where models are written: a folder or URI. Unset: "
                               "$SPARK_ML_HOME/models, or spark_ml/models beside a cluster's shared warehouse.")
    stagingDir = setting_param("stagingDir", str, "Where DataFrames are written as channels before training: a "
                               "folder or URI every executor can read. Unset: $SPARK_ML_HOME/staging, or "
                               "spark_ml/staging beside a cluster's shared warehouse.")
    deleteStagingData = setting_param("deleteStagingData", bool, "Remove the channels written from DataFrames "
                                      "once training ends.", True)
    showProgress = setting_param("showProgress", bool, "Show a live progress bar while training.", True)
