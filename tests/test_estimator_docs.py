"""The public estimators and models document themselves: docstrings, signatures and examples that are true.

Params sections and signatures are generated from the hyperparameter declarations; these tests hold them
to the declarations (and to SageMaker's documented defaults), and run every class's example.
"""

import ast
import doctest
import inspect
import pydoc

import pytest

import spark_ml
from algorithms import builtin
from spark_ml.estimators import SageMakerEstimator, SageMakerModel
from spark_ml.estimators.params import CommonParams, DeclaredParams, ParamError

PUBLIC = sorted(name for name, module in spark_ml._EXPORTS.items()
                if module == "spark_ml.estimators")
CLASSES = [getattr(spark_ml, name) for name in PUBLIC]
DECLARED = [cls for cls in CLASSES if issubclass(cls, DeclaredParams)]
ESTIMATORS = [cls for cls in CLASSES if issubclass(cls, SageMakerEstimator)]
COMMON = ["featuresCol", "labelCol", "numWorkers", "gpusPerWorker", "modelStore", "stagingDir",
          "deleteStagingData", "showProgress"]


def _ids(classes):
    return [cls.__name__ for cls in classes]


def _param_names(cls) -> set[str]:
    return {p.name for p in cls().params}


def test_every_public_estimator_and_model_is_covered():
    assert len(CLASSES) == 33
    assert [cls for cls in CLASSES if cls is not spark_ml.UserCodeModel and not issubclass(cls, DeclaredParams)] == []


@pytest.mark.parametrize("cls", DECLARED, ids=_ids(DECLARED))
def test_signature_lists_every_param_as_a_keyword_with_its_default(cls):
    signature = inspect.signature(cls)
    instance = cls()
    assert set(signature.parameters) == _param_names(cls)
    for name, parameter in signature.parameters.items():
        if issubclass(cls, SageMakerModel) and name == "modelLocation":
            assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        else:
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        param = instance.getParam(name)
        expected = instance.getOrDefault(param) if instance.hasDefault(param) else None
        assert parameter.default == expected, name
    assert inspect.signature(cls.setParams).parameters.keys() - {"self"} == _param_names(cls)


@pytest.mark.parametrize("cls", DECLARED, ids=_ids(DECLARED))
def test_docstring_lists_every_param_with_its_default(cls):
    doc = cls.__doc__
    instance = cls()
    for param in instance.params:
        entry = next((line for line in doc.splitlines() if line.startswith(f"{param.name} : ")), None)
        assert entry is not None, f"{cls.__name__}: {param.name} is not documented"
        if instance.hasDefault(param):
            assert entry.endswith(f", default {instance.getOrDefault(param)!r}"), entry
        else:
            assert entry.endswith((", optional", ", required")), entry
    assert doc.index("Parameters\n----------") < doc.index("Examples\n--------")


@pytest.mark.parametrize("cls", ESTIMATORS, ids=_ids(ESTIMATORS))
def test_each_hyperparameter_is_documented_from_its_declaration(cls):
    doc = " ".join(cls.__doc__.split())  # the text rewrapped on one line
    spec = builtin.get(cls._algorithm).hyperparameters
    for hp in spec:
        if hp.name in cls._fixed:
            assert f"``{hp.name}={cls._fixed[hp.name]!r}``" in doc
            assert f"{hp.param_name} : " not in cls.__doc__
            continue
        assert f"{hp.param_name} : " in cls.__doc__
        if hp.doc:
            assert " ".join(hp.doc.split()[1:]) in doc, hp.name  # the first word may be capitalised
        described = hp.describe()
        if described != type(hp)(hp.name, hp.kind).describe():
            assert f"Accepts {described}." in doc, hp.name
    # the common Params come after the algorithm's, in their own section
    other = cls.__doc__.index("Other Parameters\n----------------")
    assert all(cls.__doc__.index(f"\n{name} : ") > other for name in COMMON)


def test_defaults_and_ranges_match_sagemakers_documentation():
    """Spot checks against SageMaker's documented values (not against the declarations the docs come from)."""
    kmeans = spark_ml.KMeans.__doc__
    assert "\nminiBatchSize : int, default 5000\n" in kmeans
    assert "\nk : int, required\n" in kmeans
    assert "\ninitMethod : str, default 'random'\n" in kmeans
    linear = spark_ml.LinearLearnerRegressor.__doc__
    assert "\nepochs : int, default 15\n" in linear
    assert "\nminiBatchSize : int, default 1000\n" in linear
    xgb = spark_ml.XGBoostRegressor.__doc__
    assert "\neta : float, default 0.3\n" in xgb and "\nmaxDepth : int, default 6\n" in xgb
    assert "\nobjective : str, default 'binary:logistic'\n" in spark_ml.XGBoostClassifier.__doc__
    assert "\nobjective : str, default 'reg:squarederror'\n" in xgb
    assert "\nnumWorkers : int, default 1\n    Training workers" in kmeans


def test_help_shows_the_keywords_and_the_params():
    text = pydoc.render_doc(spark_ml.KMeans, renderer=pydoc.plaintext)
    assert "KMeans(*, k: int | None = None, featureDim: int | None = None, miniBatchSize: int = 5000" in text
    assert "Number of clusters. Accepts an integer in (1, inf)." in text
    model = inspect.signature(spark_ml.KMeansModel)
    assert str(model).startswith("(modelLocation: str | None = None, *, featuresCol: str = 'features'")


def test_unknown_keyword_fails_naming_it_and_suggesting_the_param():
    with pytest.raises(ParamError, match=r"KMeans has no Param 'minibatchSize'; did you mean 'miniBatchSize'\?"):
        spark_ml.KMeans(k=2, minibatchSize=10)
    with pytest.raises(ParamError, match=r"ScriptEstimator has no Param 'entrypoint'; did you mean 'entryPoint'"):
        spark_ml.ScriptEstimator(entrypoint="train.py")
    with pytest.raises(ParamError, match=r"KMeansModel has no Param 'k'"):
        spark_ml.KMeansModel(k=3)
    with pytest.raises(ParamError, match=r"has no Param 'tol'"):
        spark_ml.PCA().setParams(tol=0.1)
    with pytest.raises(TypeError):
        spark_ml.KMeans(3)  # keyword-only, as pyspark's estimators


def test_explain_params_prints_each_default_once_with_the_range():
    text = spark_ml.KMeans(k=3).explainParams()
    lines = {line.split(":", 1)[0]: line for line in text.splitlines()}
    assert lines["miniBatchSize"] == ("miniBatchSize: Records per mini-batch update. Accepts an integer in [1, inf). "
                                      "(default: 5000)")
    assert lines["k"] == "k: Number of clusters. Accepts an integer in (1, inf). Required. (current: 3)"
    assert all(line.count("default") <= 1 for line in text.splitlines())


def test_getters_setters_and_set_params_follow_pyspark():
    kmeans = spark_ml.KMeans()
    assert kmeans.setK(4) is kmeans and kmeans.getK() == 4
    assert kmeans.getMiniBatchSize() == 5000 and not kmeans.isSet(kmeans.miniBatchSize)
    assert kmeans.setParams(miniBatchSize=100, numWorkers=2) is kmeans
    assert (kmeans.getMiniBatchSize(), kmeans.getNumWorkers(), kmeans.getFeaturesCol()) == (100, 2, "features")
    sent = kmeans.hyperparameters(feature_dim=3)
    assert (sent["k"], sent["mini_batch_size"], sent["feature_dim"], sent["epochs"]) == ("4", "100", "3", "1")
    with pytest.raises(ParamError, match=r"Param numWorkers: must be an integer in \[1, inf\), got 0"):
        kmeans.setNumWorkers(0)
    with pytest.raises(ParamError, match=r"Param featuresCol: must be a string, got 3"):
        kmeans.setFeaturesCol(3)
    classifier = spark_ml.XGBoostClassifier(numRound=3)
    assert classifier.getObjective() == "binary:logistic" and classifier.getPredictLeaf() is False
    assert spark_ml.XGBoostRegressor().getObjective() == "reg:squarederror"
    script = spark_ml.ScriptEstimator(hyperparameters={"lr": 0.1})
    assert script.getHyperparameters() == {"lr": "0.1"}
    assert spark_ml.ScriptEstimator().getHyperparameters() == {}  # a fresh default each time
    script.getEnvironment()["LEAK"] = "1"
    assert spark_ml.ScriptEstimator().getEnvironment() == {}


def test_a_new_algorithm_gets_params_signature_and_docs_without_writing_them():
    class Clusters(SageMakerEstimator):
        """Another K-Means front end.

        Examples
        --------
        >>> Clusters(k=2).getK()
        2
        """

        _algorithm = "kmeans"
        _model_class = spark_ml.KMeansModel

    assert "k" in inspect.signature(Clusters).parameters
    assert "\nminiBatchSize : int, default 5000\n" in Clusters.__doc__
    assert Clusters.__doc__.startswith("Another K-Means front end.")
    assert Clusters(k=2).getK() == 2
    assert issubclass(Clusters, CommonParams)


# ------------------------------------------------------------------------------------------------------ examples


def _examples(cls) -> doctest.DocTest:
    (test,) = doctest.DocTestFinder(recurse=False).find(cls, cls.__name__, globs={})
    return test


@pytest.mark.parametrize("cls", CLASSES, ids=_ids(CLASSES))
def test_example_parses_and_uses_only_real_params(cls):
    test = _examples(cls)
    assert test.examples, f"{cls.__name__} has no example"
    tree = ast.parse("".join(example.source for example in test.examples))
    public = {name: getattr(spark_ml, name) for name in PUBLIC}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "spark_ml" \
                and func.attr in public:
            target = public[func.attr]
            params = set(inspect.signature(target).parameters)
            for keyword in node.keywords:
                assert keyword.arg in params, f"{cls.__name__}'s example: {func.attr} has no Param {keyword.arg}"
        if isinstance(func, ast.Attribute) and func.attr[:3] in ("set", "get") and func.attr[3:4].isupper():
            assert any(hasattr(c, func.attr) for c in CLASSES), f"{cls.__name__}'s example: no {func.attr}"


@pytest.mark.parametrize("cls", CLASSES, ids=_ids(CLASSES))
def test_example_runs_and_prints_what_it_shows(cls, spark, spark_ml_home):
    test = _examples(cls)
    test.globs = {"spark": spark}
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
