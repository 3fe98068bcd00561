"""Compile the funnel model for nutpie, with its C entry points kept in PyTensor's disk cache.

``nutpie.compile_pymc_model`` builds the log-density and its gradient with PyTensor's numba
backend (cached on disk by PyTensor) and then wraps them in two ``numba.cfunc`` entry points
that the Rust sampler calls. Those wrappers are compiled afresh in every process: LLVM
re-optimises the whole linked log-density each time, about 9 s of the 12 s a 100,000-deal
model took to compile, even when nothing had changed.

:func:`compile_model` makes the two wrappers cacheable: they are rebuilt from source as
functions without closures and registered with PyTensor's numba cache under a key made of
the PyTensor graph's own cache key, the entry point's sizes and the library versions. The
first fit of a model shape compiles as before and saves them; later fits on the machine load
them (about 2 s in all). The machine code is the same as nutpie's, so the same seed gives
the same draws whether the wrappers were compiled or loaded.

This leans on two private helpers of nutpie 0.16 (``_make_c_logp_func`` and
``_make_c_expand_func``, swapped for the duration of one compile), so pyproject.toml bounds
nutpie to 0.16.x. With another nutpie release, or a graph PyTensor does not cache, it falls
back to the plain ``nutpie.compile_pymc_model``; tests/test_nutpie.py checks that both paths
give the same draws.
"""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np

__all__ = ["compile_model"]

_SUPPORTED_NUTPIE = "0.16."

# nutpie's two entry points (compile_pymc._make_c_logp_func and _make_c_expand_func), written
# as module-level source so they have no closure: numba keys its cache on the closure's pickle,
# which differs in every process
_LOGP_SOURCE = '''
def logp_entry(dim, x_, out_, logp_, user_data_):
    if dim != n_dim:
        return -1
    try:
        x = numba.carray(x_, (n_dim,))
        out = numba.carray(out_, (n_dim,))
        logp = numba.carray(logp_, ())
        logp_val, grad = extract(x, user_data_)
        logp[()] = logp_val
        out[...] = grad
        if not np.all(np.isfinite(out)):
            return 3
        if not np.isfinite(logp_val):
            return 4
    except Exception:
        return 1
    return 0
'''

_EXPAND_SOURCE = '''
def expand_entry(dim, expanded, x_, out_, user_data_):
    if dim != n_dim:
        return -1
    if expanded != n_expanded:
        return -1
    try:
        x = numba.carray(x_, (n_dim,))
        out = numba.carray(out_, (n_expanded,))
        (values,) = extract(x, user_data_)
        out[...] = values
    except Exception:
        return -2
    return 0
'''


class _NotCacheable(Exception):
    """PyTensor did not cache the log-density: compile the plain way."""


def compile_model(model):
    """``nutpie.compile_pymc_model(model, freeze_model=False)``, with the sampler's entry points
    loaded from the disk cache when this model shape was compiled before on the machine."""
    import nutpie

    if nutpie.__version__.startswith(_SUPPORTED_NUTPIE):
        try:
            with _cacheable_entry_points():
                return nutpie.compile_pymc_model(model, freeze_model=False, cache=True)
        except _NotCacheable:
            pass
    return nutpie.compile_pymc_model(model, freeze_model=False)


@contextlib.contextmanager
def _cacheable_entry_points():
    """Swap nutpie's entry-point factories for ones returning closure-free functions
    registered with PyTensor's numba cache."""
    import nutpie.compile_pymc as npc

    plain_logp, plain_expand = npc._make_c_logp_func, npc._make_c_expand_func

    def logp_factory(n_dim, logp_fn, user_data, shared_keys, shared_data):
        _, signature = plain_logp(n_dim, logp_fn, user_data, shared_keys, shared_data)
        key = _cache_key("logp", logp_fn, n_dim, shared_keys, shared_data, user_data)
        extract = npc.make_extraction_fn(logp_fn, shared_data, shared_keys, user_data.dtype)
        return _entry_point(_LOGP_SOURCE, "logp_entry", key, n_dim=n_dim, extract=extract), signature

    def expand_factory(n_dim, n_expanded, expand_fn, user_data, shared_keys, shared_data):
        _, signature = plain_expand(n_dim, n_expanded, expand_fn, user_data, shared_keys, shared_data)
        key = _cache_key("expand", expand_fn, (n_dim, n_expanded), shared_keys, shared_data, user_data)
        extract = npc.make_extraction_fn(expand_fn, shared_data, shared_keys, user_data.dtype)
        return _entry_point(_EXPAND_SOURCE, "expand_entry", key, n_dim=n_dim, n_expanded=n_expanded,
                            extract=extract), signature

    npc._make_c_logp_func, npc._make_c_expand_func = logp_factory, expand_factory
    try:
        yield
    finally:
        npc._make_c_logp_func, npc._make_c_expand_func = plain_logp, plain_expand


def _cache_key(name, pytensor_fn, sizes, shared_keys, shared_data, user_data) -> str:
    """What fixes an entry point's machine code: PyTensor's cache key of the function it
    calls, its sizes, the layout of the data it reads (rank and dtype of each container; the
    field names nutpie gives them are random) and the versions of the libraries involved."""
    import numba
    import nutpie
    import pytensor
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    source_fn = getattr(pytensor_fn, "py_func", None)   # a plain function has none: not cached
    inner = None if source_fn is None else CACHED_SRC_FUNCTIONS.get(source_fn)
    if inner is None or not pytensor.config.numba__cache:
        raise _NotCacheable(name)
    layout = [(shared_data[k].ndim, str(shared_data[k].dtype)) for k in shared_keys]
    text = repr((name, inner, sizes, layout, user_data.dtype.itemsize, numba.__version__, nutpie.__version__,
                 pytensor.__version__, bool(pytensor.config.numba__fastmath)))
    return "funnelsim-" + hashlib.sha256(text.encode()).hexdigest()


def _entry_point(source: str, name: str, key: str, **constants):
    """The function defined by ``source``, its free names bound as module globals, and
    registered under ``key`` with PyTensor's numba cache locator."""
    import numba
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    # numba rebuilds a cached function's environment by importing the module named here
    env = {"__name__": "numba", "numba": numba, "np": np, **constants}
    local: dict = {}
    exec(compile(source, f"funnelsim_{name}", "exec"), env, local)
    function = local[name]
    CACHED_SRC_FUNCTIONS[function] = key
    return function
