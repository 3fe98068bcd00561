"""funnelsim.model._nutpie: the cached sampler entry points and the plain fallback give the same draws.

The cached path swaps two private helpers of nutpie 0.16 (pyproject bounds nutpie to 0.16.x);
any other release, or a graph PyTensor does not cache, takes nutpie's own compile. Both paths
must sample: checked here on a small model, draw for draw.
"""

import numpy as np
import nutpie
import pymc as pm
import pytest

from funnelsim.model import _nutpie


def small_model():
    rng = np.random.default_rng(0)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 5)
        sigma = pm.HalfNormal("sigma", 2)
        pm.Normal("y", mu, sigma, observed=rng.normal(1.5, 0.7, 50))
    return model


def draws(compiled) -> np.ndarray:
    trace = nutpie.sample(compiled, draws=50, tune=50, chains=1, seed=7, progress_bar=False)
    return trace.posterior["mu"].values.ravel()


def test_pyproject_bounds_nutpie_to_the_release_whose_helpers_are_patched():
    assert nutpie.__version__.startswith(_nutpie._SUPPORTED_NUTPIE)


@pytest.mark.slow
def test_an_unsupported_nutpie_release_falls_back_to_the_plain_compile(monkeypatch):
    patched = draws(_nutpie.compile_model(small_model()))
    calls = []
    monkeypatch.setattr(nutpie, "__version__", "0.17.0")
    monkeypatch.setattr(_nutpie, "_cacheable_entry_points",
                        lambda: calls.append("patched") or pytest.fail("patched an unsupported nutpie"))
    plain = draws(_nutpie.compile_model(small_model()))
    assert calls == []
    np.testing.assert_array_equal(plain, patched)   # same machine code, same seed: same draws
    assert abs(plain.mean() - 1.5) < 0.5


@pytest.mark.slow
def test_a_graph_pytensor_does_not_cache_falls_back(monkeypatch):
    import pytensor

    monkeypatch.setattr(pytensor.config, "numba__cache", False)
    with pytest.raises(_nutpie._NotCacheable):   # a plain function (no py_func) used to raise TypeError
        _nutpie._cache_key("logp", lambda: None, 1, [], {}, np.zeros(1))
    plain = draws(_nutpie.compile_model(small_model()))
    assert abs(plain.mean() - 1.5) < 0.5        # it samples (PyTensor's uncached build: other bits)
