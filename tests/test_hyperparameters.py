"""Hyperparameter parsing from SageMaker's wire strings, formatting back, ranges, auto, and errors by name."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.hyperparameters import (
    AUTO,
    Hyperparameter,
    HyperparameterError,
    HyperparameterSpec,
    camel_case,
)

SPEC = HyperparameterSpec(
    [
        Hyperparameter("feature_dim", int, required=True, low=1),
        Hyperparameter("mini_batch_size", int, default=1000, low=1),
        Hyperparameter("learning_rate", float, default=AUTO, low=0, low_open=True, auto=True),
        Hyperparameter("wd", float, default=0.0, low=0),
        Hyperparameter("momentum", float, default=0.0, low=0, high=1, high_open=True),
        Hyperparameter("use_bias", bool, default=True),
        Hyperparameter("predictor_type", str, required=True, choices=("binary_classifier", "regressor")),
        Hyperparameter("eval_metrics", list, default=None),
        Hyperparameter("extra_center_factor", int, default=AUTO, low=1, auto=True),
        Hyperparameter("init_method", str, default="random"),
    ]
)


def parse(**raw):
    return SPEC.parse({"feature_dim": "10", "predictor_type": "regressor", **raw})


def test_sdk_strings_parse_to_typed_values():
    values = parse(
        mini_batch_size="200",
        learning_rate="0.01",
        wd="1e-4",
        momentum="0.9",
        use_bias="False",
        eval_metrics='["msd", "ssd"]',
        extra_center_factor="4",
        init_method=" kmeans++ ",
    )
    assert values == {
        "feature_dim": 10,
        "mini_batch_size": 200,
        "learning_rate": 0.01,
        "wd": 1e-4,
        "momentum": 0.9,
        "use_bias": False,
        "predictor_type": "regressor",
        "eval_metrics": ["msd", "ssd"],
        "extra_center_factor": 4,
        "init_method": "kmeans++",
    }
    assert type(values["mini_batch_size"]) is int and type(values["learning_rate"]) is float


def test_defaults_fill_in_and_none_means_unset():
    values = parse(mini_batch_size=None)
    assert values["mini_batch_size"] == 1000 and values["learning_rate"] == AUTO
    assert values["eval_metrics"] is None and values["use_bias"] is True


@pytest.mark.parametrize(
    "text,value",
    [
        ("True", True),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        (True, True),
        ("False", False),
        ("false", False),
        ("0", False),
        (False, False),
        (" true ", True),
    ],
)
def test_bool_strings(text, value):
    assert parse(use_bias=text)["use_bias"] is value


@pytest.mark.parametrize("text", ["yes", "", "2", "truthy", "None"])
def test_bad_bools_name_the_hyperparameter(text):
    with pytest.raises(HyperparameterError, match=r"hyperparameter use_bias: must be true or false, got"):
        parse(use_bias=text)


@pytest.mark.parametrize(
    "text,value",
    [
        ("7", 7),
        ("+7", 7),
        (" 7 ", 7),
        ("7.0", 7),
        ("1e3", 1000),
        ("1E+2", 100),
        (7, 7),
        (7.0, 7),
        (np.int64(7), 7),
        ("12345678901234567890", 12345678901234567890),
    ],
)
def test_int_forms(text, value):
    assert parse(mini_batch_size=text)["mini_batch_size"] == value


@pytest.mark.parametrize("text", ["7.5", "abc", "", "1e-3", "nan", "inf", True, 7.5, "0x10"])
def test_bad_ints(text):
    with pytest.raises(
        HyperparameterError, match=r"hyperparameter mini_batch_size: must be an integer in \[1, inf\)"
    ):
        parse(mini_batch_size=text)


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("mini_batch_size", "0", r"mini_batch_size: must be an integer in \[1, inf\), got '0'"),
        ("learning_rate", "0", r"learning_rate: must be a number in \(0, inf\) or auto, got '0'"),
        ("learning_rate", "-1", r"learning_rate: must be a number in \(0, inf\) or auto"),
        ("wd", "-0.5", r"wd: must be a number in \[0, inf\), got '-0.5'"),
        ("momentum", "1", r"momentum: must be a number in \[0, 1\), got '1'"),
        ("momentum", "nan", r"momentum: must be a number in \[0, 1\)"),
        ("wd", "inf", r"wd: must be a number in \[0, inf\), got 'inf'"),
        ("wd", "1e999", r"wd: must be a number in \[0, inf\)"),
        ("wd", float("nan"), r"wd: must be a number in \[0, inf\)"),
        ("feature_dim", "-3", r"feature_dim: must be an integer in \[1, inf\)"),
    ],
)
def test_ranges(name, text, message):
    with pytest.raises(HyperparameterError, match=message) as err:
        parse(**{name: text})
    assert err.value.name == name


def test_range_edges_are_inclusive_unless_open():
    assert parse(momentum="0")["momentum"] == 0.0
    assert parse(momentum="0.999")["momentum"] == 0.999
    assert parse(wd="0")["wd"] == 0.0
    assert parse(mini_batch_size="1")["mini_batch_size"] == 1


@pytest.mark.parametrize("text", ["auto", "Auto", "AUTO", " auto "])
def test_auto(text):
    assert parse(learning_rate=text, extra_center_factor=text)["learning_rate"] == AUTO
    assert parse(extra_center_factor=text)["extra_center_factor"] == AUTO


def test_auto_only_where_declared():
    with pytest.raises(HyperparameterError, match="wd: must be a number"):
        parse(wd="auto")


def test_choices():
    assert parse(predictor_type="binary_classifier")["predictor_type"] == "binary_classifier"
    with pytest.raises(
        HyperparameterError,
        match="predictor_type: must be one of binary_classifier, regressor, got 'classifier'",
    ):
        parse(predictor_type="classifier")


def test_lists():
    assert parse(eval_metrics='["msd"]')["eval_metrics"] == ["msd"]
    assert parse(eval_metrics="msd, ssd")["eval_metrics"] == ["msd", "ssd"]
    assert parse(eval_metrics=["msd", "ssd"])["eval_metrics"] == ["msd", "ssd"]
    with pytest.raises(HyperparameterError, match="eval_metrics: must be a list of strings"):
        parse(eval_metrics='["msd"')


def test_required_unknown_and_reserved():
    with pytest.raises(HyperparameterError, match=r"hyperparameter feature_dim: is required \(an integer in"):
        SPEC.parse({"predictor_type": "regressor"})
    with pytest.raises(
        HyperparameterError,
        match=r"hyperparameter minibatch_size: is not a hyperparameter of this "
        r"algorithm \(known: feature_dim, mini_batch_size",
    ):
        parse(minibatch_size="5")
    assert "minibatch_size" not in SPEC.parse(
        {"feature_dim": "3", "predictor_type": "regressor", "minibatch_size": "5"}, ignore_unknown=True
    )
    assert parse(_tuning_objective_metric="validation:rmse")["feature_dim"] == 10


def test_format_round_trips_through_parse():
    values = parse(
        mini_batch_size="250",
        learning_rate="0.1",
        wd="1e-07",
        momentum="0.5",
        use_bias="true",
        eval_metrics='["msd"]',
        extra_center_factor="auto",
    )
    strings = SPEC.to_strings(values)
    assert strings["use_bias"] == "True"  # as the SDK sends booleans
    assert strings["eval_metrics"] == '["msd"]'  # as the SDK sends lists
    assert strings["extra_center_factor"] == "auto"
    assert "eval_metrics" in strings and all(isinstance(v, str) for v in strings.values())
    assert SPEC.parse(strings) == values


def test_format_round_trips_random_floats():
    rng = np.random.default_rng(0)
    p = SPEC["wd"]
    for v in np.concatenate([rng.random(200) * 10.0 ** rng.integers(-30, 30, 200), [0.0, 5e-324, 1.7e308]]):
        v = float(v)
        assert p.parse(p.format(v)) == v
    q = SPEC["mini_batch_size"]
    for v in [1, 7, 2**40, 10**20]:
        assert q.parse(q.format(v)) == v
    assert q.format(8.0) == "8"


def test_to_strings_skips_none_and_keeps_unknown_names():
    assert SPEC.to_strings({"wd": None, "custom": 3}) == {"custom": "3"}


def test_spec_declarations():
    with pytest.raises(ValueError, match="hyperparameter wd declared twice"):
        HyperparameterSpec([Hyperparameter("wd", float), Hyperparameter("wd", float)])
    extended = SPEC.extend([Hyperparameter("wd", float, default=1.0)]).without("init_method")
    assert extended["wd"].default == 1.0 and "init_method" not in extended and "init_method" in SPEC
    assert extended.names()[:2] == ["feature_dim", "mini_batch_size"]


def test_param_names_are_camel_case():
    assert camel_case("mini_batch_size") == "miniBatchSize"
    assert camel_case("k") == "k"
    assert SPEC["feature_dim"].param_name == "featureDim"
    assert Hyperparameter("lambda", float, param_name="lambda_").param_name == "lambda_"


def test_describe_open_and_unbounded():
    assert Hyperparameter("x", float, low=0, high=1, low_open=True).describe() == "a number in (0, 1]"
    assert Hyperparameter("x", float, high=2.5).describe() == "a number in (-inf, 2.5]"
    assert Hyperparameter("x", int).describe() == "an integer"
    assert Hyperparameter("x", float).parse("1e308") == 1e308
    with pytest.raises(HyperparameterError, match="x: must be a number, got '-inf'"):
        Hyperparameter("x", float).parse("-inf")
