"""Property-based: any search-space document either loads or fails with a clear SearchSpaceError."""

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import BaseDistribution

from autocompress.errors import SearchSpaceError
from autocompress.plugin_manager import build_host
from autocompress.search_space import parse_overrides

TECHNIQUES = {entry.name: entry.cls for entry in build_host(autoload=False).techniques}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(-5, 100), st.just(float("nan")),
                    st.text(max_size=8))
distribution_docs = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["float", "int"]), "low": scalars, "high": scalars},
                          optional={"log": scalars, "step": scalars, "extra": scalars}),
    st.fixed_dictionaries({"type": st.just("categorical"), "choices": st.lists(scalars, max_size=4) | scalars}),
    st.dictionaries(st.text(max_size=6), scalars, max_size=3),
    scalars,
)
field_names = st.one_of(st.sampled_from(["keep_fraction", "multiple_of", "dtype", "rank_ratio", "fraction"]),
                        st.text(max_size=8))
documents = st.dictionaries(
    st.one_of(st.sampled_from(sorted(TECHNIQUES)), st.text(max_size=8)),
    st.one_of(st.dictionaries(field_names, distribution_docs, max_size=3), scalars),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_every_document_loads_or_gives_a_clear_error(document):
    text = yaml.safe_dump(document)
    try:
        spaces = parse_overrides(yaml.safe_load(text), TECHNIQUES, "space.yaml")
    except SearchSpaceError as error:
        message = str(error)
        assert message.startswith("space.yaml: ") and len(message) > len("space.yaml: ") + 10
        return
    for name, fields in spaces.items():
        assert name in TECHNIQUES
        for field, distribution in fields.items():
            assert isinstance(distribution, BaseDistribution)
            assert field in TECHNIQUES[name].Config.__dataclass_fields__


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(TECHNIQUES)), st.floats(0.01, 0.5), st.floats(0.5, 0.99))
def test_valid_float_ranges_always_load(name, low, high):
    technique = TECHNIQUES[name]
    floats = [f for f, d in technique.search_space().items() if type(d).__name__ == "FloatDistribution"]
    if not floats:
        return
    document = {name: {floats[0]: {"type": "float", "low": low, "high": high}}}
    spaces = parse_overrides(document, TECHNIQUES, "space.yaml")
    assert spaces[name][floats[0]].low == low
