import warnings

import pytest

import scmulan


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore::UserWarning:lightning.*"))
        item.add_marker(pytest.mark.filterwarnings("ignore:.*does not have many workers.*"))
        item.add_marker(pytest.mark.filterwarnings("ignore:.*LitLogger.*"))


@pytest.fixture(scope="module")
def atlas():
    """300 prepared synthetic cells (not registered)."""
    data = scmulan.datasets.synthetic_atlas(n_cells=300, n_genes=160, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scmulan.pp.prepare(data)
    return data
