"""Hyperparameter declarations with SageMaker's names, defaults and ranges: validation lives here, once.

Hyperparameters travel as strings (the training contract, SageMaker's ``hyperparameters.json``);
:meth:`HyperparameterSpec.parse` turns them into typed values and rejects bad ones with a message
naming the hyperparameter and what it accepts. The Spark layer derives its camelCase Params from the
same declarations, so a bad value fails before any Spark job starts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

AUTO = "auto"


class HyperparameterError(ValueError):
    def __init__(self, name: str, problem: str):
        super().__init__(f"hyperparameter {name}: {problem}")
        self.name = name
        self.problem = problem


def camel_case(name: str) -> str:
    """``mini_batch_size`` -> ``miniBatchSize`` (the Spark Param name of a SageMaker hyperparameter)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter. ``kind`` is int, float, bool, str or list (a JSON list of strings).

    Ranges are closed unless ``low_open`` / ``high_open``; ``choices`` restricts str values;
    ``auto=True`` also accepts the string ``"auto"``.
    """

    name: str
    kind: type
    default: Any = None
    required: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    auto: bool = False
    doc: str = ""
    param_name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.param_name:
            object.__setattr__(self, "param_name", camel_case(self.name))

    def describe(self) -> str:
        """What the hyperparameter accepts, for error messages and docs."""
        if self.kind is bool:
            what = "true or false"
        elif self.choices is not None:
            what = "one of " + ", ".join(self.choices)
        elif self.kind is list:
            what = "a list of strings"
        elif self.kind in (int, float):
            noun = "an integer" if self.kind is int else "a number"
            if self.low is None and self.high is None:
                what = noun
            else:
                lo = "-inf" if self.low is None else _num(self.low)
                hi = "inf" if self.high is None else _num(self.high)
                what = (f"{noun} in {'(' if self.low_open or self.low is None else '['}{lo}, "
                        f"{hi}{')' if self.high_open or self.high is None else ']'}")
        else:
            what = "a string"
        return f"{what} or auto" if self.auto else what

    def parse(self, raw: Any) -> Any:
        """A typed, validated value from a string (or an already typed value)."""
        if self.auto and isinstance(raw, str) and raw.strip().lower() == AUTO:
            return AUTO
        try:
            value = self._convert(raw)
        except (TypeError, ValueError):
            raise HyperparameterError(self.name, f"must be {self.describe()}, got {raw!r}") from None
        if self.kind in (int, float):
            if isinstance(value, float) and not math.isfinite(value):  # nan, inf: outside every range
                raise HyperparameterError(self.name, f"must be {self.describe()}, got {raw!r}")
            too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if too_low or too_high:
                raise HyperparameterError(self.name, f"must be {self.describe()}, got {raw!r}")
        if self.choices is not None and value not in self.choices:
            raise HyperparameterError(self.name, f"must be {self.describe()}, got {raw!r}")
        return value

    def _convert(self, raw: Any) -> Any:
        if self.kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1"):
                return True
            if text in ("false", "0"):
                return False
            raise ValueError(raw)
        if self.kind is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError(raw)
                return int(raw)
            text = str(raw).strip()
            number = float(text)
            if not re.fullmatch(r"[+-]?\d+(\.0*)?([eE]\+?\d+)?", text) or not number.is_integer():
                raise ValueError(raw)
            return int(number) if "e" in text.lower() or "." in text else int(text)
        if self.kind is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if self.kind is list:
            if isinstance(raw, str):
                text = raw.strip()
                items = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
            else:
                items = list(raw)
            return [str(item).strip() for item in items]
        return str(raw).strip()

    def format(self, value: Any) -> str:
        """The string SageMaker's SDK would send for a value."""
        if isinstance(value, bool):
            return str(value)  # "True" / "False", as the SDK sends them
        if isinstance(value, list | tuple):
            return json.dumps([str(v) for v in value])
        if isinstance(value, float) and value.is_integer() and self.kind is int:
            return str(int(value))
        return str(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


class HyperparameterSpec:
    """The hyperparameters an algorithm accepts, in declaration order."""

    def __init__(self, params: Iterable[Hyperparameter]):
        self._params: dict[str, Hyperparameter] = {}
        for p in params:
            if p.name in self._params:
                raise ValueError(f"hyperparameter {p.name} declared twice")
            self._params[p.name] = p

    def __iter__(self):
        return iter(self._params.values())

    def __contains__(self, name: str) -> bool:
        return name in self._params

    def __getitem__(self, name: str) -> Hyperparameter:
        return self._params[name]

    def names(self) -> list[str]:
        return list(self._params)

    def extend(self, params: Iterable[Hyperparameter]) -> HyperparameterSpec:
        merged = dict(self._params)
        for p in params:
            merged[p.name] = p
        return HyperparameterSpec(merged.values())

    def without(self, *names: str) -> HyperparameterSpec:
        return HyperparameterSpec(p for p in self if p.name not in names)

    def parse(self, raw: Mapping[str, Any], ignore_unknown: bool = False) -> dict[str, Any]:
        """Typed values for every declared hyperparameter (defaults filled in, ``None`` when unset)."""
        unknown = sorted(set(raw) - set(self._params) - _RESERVED)
        if unknown and not ignore_unknown:
            raise HyperparameterError(unknown[0], "is not a hyperparameter of this algorithm "
                                      f"(known: {', '.join(self._params)})")
        values: dict[str, Any] = {}
        for name, p in self._params.items():
            if name in raw and raw[name] is not None:
                values[name] = p.parse(raw[name])
            elif p.required:
                raise HyperparameterError(name, f"is required ({p.describe()})")
            else:
                values[name] = p.default
        return values

    def to_strings(self, values: Mapping[str, Any]) -> dict[str, str]:
        """The wire form: every set value as a string, as SageMaker's SDK serializes them."""
        out = {}
        for name, value in values.items():
            if value is None:
                continue
            p = self._params.get(name)
            out[name] = p.format(value) if p else str(value)
        return out


# Names the training platform itself may add (AMT's objective metric); accepted and ignored.
_RESERVED = {"_tuning_objective_metric"}
