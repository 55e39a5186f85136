"""Property-based: random search-space YAML documents. Every valid one loads as written; every invalid
one (unknown technique, field or key, wrong type, low > high, empty choices, not a mapping, a value
the technique rejects) gives a SearchSpaceError naming the file, the culprit and the problem."""

import decimal

import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from autocompress.errors import SearchSpaceError
from autocompress.plugin_manager import build_host
from autocompress.search_space import parse_overrides

TECHNIQUES = {entry.name: entry.cls for entry in build_host(autoload=False).techniques}
DEFAULTS = {name: cls.search_space() for name, cls in TECHNIQUES.items()}
SOURCE = "space.yaml"


def _load(document):
    """The document as a user's YAML file holds it, parsed like ``--search-space FILE``."""
    return parse_overrides(yaml.safe_load(yaml.safe_dump(document)), TECHNIQUES, SOURCE)


def _expect_error(document, *fragments):
    try:
        _load(document)
    except SearchSpaceError as error:
        message = str(error)
        assert message.startswith(f"{SOURCE}: "), message
        for fragment in fragments:
            assert fragment in message, (fragment, message)
        return message
    raise AssertionError(f"loaded without an error: {document!r}")


@st.composite
def valid_spec(draw, default: BaseDistribution):
    """A short-form distribution inside a field's default space (so the technique accepts every value)."""
    if isinstance(default, CategoricalDistribution):
        choices = draw(st.lists(st.sampled_from(default.choices), min_size=1, unique=True))
        return {"type": "categorical", "choices": choices}
    if isinstance(default, IntDistribution):
        low = draw(st.integers(default.low, default.high))
        spec = {"type": "int", "low": low, "high": draw(st.integers(low, default.high))}
    else:
        low = draw(st.floats(default.low, default.high))
        spec = {"type": "float", "low": low, "high": draw(st.floats(low, default.high))}
    if default.log:
        spec["log"] = True
    elif default.step is not None and (spec["type"] == "float" or default.step != 1):
        # A stepped range ends on a step: low as a user writes it, high a whole number of steps above.
        step = decimal.Decimal(str(default.step))
        low = draw(st.decimals(decimal.Decimal(str(default.low)), decimal.Decimal(str(default.high)), places=3))
        steps = draw(st.integers(0, int((decimal.Decimal(str(default.high)) - low) // step)))
        number = int if spec["type"] == "int" else float
        spec.update(low=number(low), high=number(low + steps * step), step=default.step)
    return spec


@st.composite
def valid_documents(draw):
    names = draw(st.lists(st.sampled_from(sorted(TECHNIQUES)), min_size=1, max_size=3, unique=True))
    document = {}
    for name in names:
        fields = draw(st.lists(st.sampled_from(sorted(DEFAULTS[name])), min_size=1, unique=True))
        document[name] = {field: draw(valid_spec(DEFAULTS[name][field])) for field in fields}
    return document


@settings(max_examples=200, deadline=None)
@given(valid_documents())
def test_every_valid_document_loads_as_written(document):
    spaces = _load(document)
    assert spaces.keys() == document.keys()
    for name, fields in document.items():
        assert spaces[name].keys() == fields.keys()
        for field, spec in fields.items():
            loaded = spaces[name][field]
            if spec["type"] == "categorical":
                assert isinstance(loaded, CategoricalDistribution) and list(loaded.choices) == spec["choices"]
            else:
                assert isinstance(loaded, IntDistribution if spec["type"] == "int" else FloatDistribution)
                assert (loaded.low, loaded.high) == (spec["low"], spec["high"])
                assert loaded.log == spec.get("log", False)


NUMERIC_FIELDS = [(name, field) for name, space in DEFAULTS.items() for field, default in space.items()
                  if not isinstance(default, CategoricalDistribution)]
ALL_FIELDS = [(name, field) for name, space in DEFAULTS.items() for field in space]
NOT_NUMBERS = st.one_of(st.text(min_size=1, max_size=6), st.booleans(), st.none(), st.lists(st.integers(), max_size=2))
NOT_LISTS = st.one_of(st.text(max_size=6), st.integers(), st.floats(allow_nan=False), st.none(),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
NOT_MAPPINGS = st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=6), st.integers(),
                         st.floats(allow_nan=False), st.none())
STEPPED_FIELDS = [(name, field) for name, field in NUMERIC_FIELDS if DEFAULTS[name][field].step not in (None, 1)]
KINDS = ["unknown technique", "unknown field", "unknown key", "wrong type", "low > high", "empty choices",
         "not a mapping", "rejected value", "steps miss high"]


@st.composite
def invalid_documents(draw):
    """(kind, document, fragments the error must contain): one valid field broken in one way."""
    kind = draw(st.sampled_from(KINDS))
    fields = {"low > high": NUMERIC_FIELDS, "steps miss high": STEPPED_FIELDS}.get(kind, ALL_FIELDS)
    name, field = draw(st.sampled_from(fields))
    spec = draw(valid_spec(DEFAULTS[name][field]))
    where = f"{name}.{field}"
    config_fields = TECHNIQUES[name].Config.__dataclass_fields__
    if kind == "unknown technique":
        other = draw(st.text(min_size=1, max_size=10).filter(lambda n: n not in TECHNIQUES))
        return kind, {other: {field: spec}}, (f"unknown technique '{other}'", "valid: distillation")
    if kind == "unknown field":
        other = draw(st.text(min_size=1, max_size=10).filter(lambda f: f not in config_fields))
        return kind, {name: {other: spec}}, (f"unknown field '{other}' for technique '{name}'", "fields: ")
    if kind == "unknown key":
        key = draw(st.sampled_from(["lo", "hi", "choice", "default", "steps", "distribution"]))
        return kind, {name: {field: {**spec, key: 1}}}, (where, f"unknown key(s) {key}", "valid: ")
    if kind == "wrong type":
        if spec["type"] == "categorical":
            junk = draw(NOT_LISTS)
            return kind, {name: {field: {**spec, "choices": junk}}}, (where, "'choices' must be a non-empty list")
        bound = draw(st.sampled_from(["low", "high"]))
        junk = draw(NOT_NUMBERS if spec["type"] == "float" else st.one_of(NOT_NUMBERS, st.floats(0.1, 0.9)))
        wanted = "a number" if spec["type"] == "float" else "an integer"
        return kind, {name: {field: {**spec, bound: junk}}}, (where, f"'{bound}' must be {wanted}")
    if kind == "low > high":
        gap = draw(st.integers(1, 10)) if spec["type"] == "int" else draw(st.floats(1e-6, 10))
        return kind, {name: {field: {**spec, "high": spec["low"] - gap}}}, (where, "is greater than high")
    if kind == "steps miss high":  # half a step past the end of the range
        high = float(decimal.Decimal(str(spec["high"])) + decimal.Decimal(str(spec["step"])) / 2)
        return kind, {name: {field: {**spec, "high": high}}}, (
            where, f"high ({high}) is not low ({spec['low']}) plus a whole number of steps", "use high: ")
    if kind == "empty choices":
        return kind, {name: {field: {"type": "categorical", "choices": []}}}, (
            where, "'choices' must be a non-empty list, got []")
    if kind == "not a mapping":
        level = draw(st.sampled_from(["document", "technique", "field"]))
        junk = draw(NOT_MAPPINGS)
        if level == "document":
            return kind, [{name: {field: spec}}], ("expected a mapping of technique names",)
        if level == "technique":
            return kind, {name: junk}, (f"technique '{name}' expects a mapping of fields",)
        return kind, {name: {field: junk}}, (where, "expected a mapping like")
    # A value the technique's Config refuses: a made-up choice, or numbers far outside the range.
    if spec["type"] == "categorical":
        made_up = draw(st.text(alphabet="xyz", min_size=1, max_size=5))
        return kind, {name: {field: {**spec, "choices": [*spec["choices"], made_up]}}}, (
            where, f"the value {made_up!r} is not accepted", f"technique '{name}'")
    return kind, {name: {field: {**spec, "low": -1000, "high": -500, "log": False}}}, (where, "is not accepted")


@settings(max_examples=400, deadline=None)
@given(invalid_documents())
def test_every_invalid_document_gives_a_clear_error(case):
    kind, document, fragments = case
    event(kind)  # hypothesis statistics show that every kind was generated
    _expect_error(document, *fragments)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(-5, 100), st.just(float("nan")),
                    st.text(max_size=8))
junk_distributions = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["float", "int"]), "low": scalars, "high": scalars},
                          optional={"log": scalars, "step": scalars, "extra": scalars}),
    st.fixed_dictionaries({"type": st.just("categorical"), "choices": st.lists(scalars, max_size=4) | scalars}),
    st.dictionaries(st.text(max_size=6), scalars, max_size=3),
    scalars,
)
junk_documents = st.dictionaries(
    st.one_of(st.sampled_from(sorted(TECHNIQUES)), st.text(max_size=8)),
    st.one_of(st.dictionaries(st.one_of(st.sampled_from(["keep_fraction", "dtype", "rank_ratio", "fraction"]),
                                        st.text(max_size=8)), junk_distributions, max_size=3), scalars),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(junk_documents)
def test_any_document_loads_or_gives_a_clear_error(document):
    try:
        spaces = _load(document)
    except SearchSpaceError as error:
        message = str(error)
        assert message.startswith(f"{SOURCE}: ") and len(message) > len(SOURCE) + 12
        return
    for name, fields in spaces.items():
        for field, distribution in fields.items():
            assert isinstance(distribution, BaseDistribution)
            assert field in TECHNIQUES[name].Config.__dataclass_fields__
