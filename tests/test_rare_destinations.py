"""Rare destinations and destinations only some segments take (issue 18, item 2).

A (stage, destination) seen from a stage but never taken by one segment, although the other
segments' share predicts many of its exits, is impossible there (``ModelData.absent``): left in,
its logit ran down a tail bounded only by the segment spread and the fit failed its checks
(R-hat 1.05, bulk ESS 80-108 on two of three 13,000-deal logs). A rare destination that every
segment takes now and then stays possible everywhere.
"""

import warnings

import numpy as np
import pytest

from funnelsim.data import synth
from funnelsim.data.events import FunnelDefinition
from funnelsim.model.likelihood import ABSENT_EXPECTED_EXITS, model_data

DEALS = 13_000
RARE = synth.SynthConfig(weeks=52, rare_destinations={("Prospecting", "Won"): 0.006},
                         destination_segments={("Proposal", "Won"): ("Enterprise", "MidMarket")})


def _snapshot(seed, n=DEALS, config=RARE):
    from funnelsim.data.snapshot import Snapshot

    events, truth = synth.generate(n, seed=seed, config=config)
    funnel = FunnelDefinition(truth["stages"], won=truth["won"], lost=truth["lost"])
    return Snapshot.read(events, funnel, as_of=truth["as_of"], segment_by=truth["segment_column"], every=None), truth


@pytest.fixture(scope="module")
def rare():
    return _snapshot(2)


def test_a_destination_one_segment_never_takes_is_absent_there_and_a_rare_one_is_not(rare):
    snapshot, _ = rare
    data = model_data(snapshot.stage_stats, snapshot.stage_stats.funnel)
    cells = data.absent_cells
    assert [(c["stage"], c["segment"], c["destination"]) for c in cells] == [("Proposal", "SMB", "Won")]
    assert cells[0]["expected"] >= ABSENT_EXPECTED_EXITS and cells[0]["exits"] > 100
    # Prospecting -> Won is rare (8-25 exits in three segments, none among the 103 exits of the
    # small Partner segment, where about 0.5 are expected): possible everywhere
    s, j = data.stages.index("Prospecting"), data.destinations.index("Won")
    assert not data.absent[s, :, j].any() and (data.choice_n[s, :, j] > 0).sum() == 3


def test_the_threshold_is_the_expected_number_of_exits(rare):
    snapshot, _ = rare
    data = model_data(snapshot.stage_stats, snapshot.stage_stats.funnel)
    expected = data.absent_cells[0]["expected"]
    assert model_data(snapshot.stage_stats, snapshot.stage_stats.funnel, absent_expected=expected * 0.99).absent.sum() == 1
    assert model_data(snapshot.stage_stats, snapshot.stage_stats.funnel, absent_expected=expected * 1.01).absent.sum() == 0
    assert model_data(snapshot.stage_stats, snapshot.stage_stats.funnel, absent_expected=np.inf).absent.sum() == 0


def test_an_absent_destination_has_probability_zero_in_the_model(rare):
    """The graph gives the absent cell exactly 0 (a prior draw) and leaves the other segments' share alone."""
    import pymc as pm

    from funnelsim.model.funnel_model import FunnelModel

    snapshot, _ = rare
    model = FunnelModel.from_snapshot(snapshot)
    pymc_model = model.build_model()
    pi = pm.draw(pymc_model["pi"], random_seed=1)
    d = model.data
    s, j = d.stages.index("Proposal"), d.destinations.index("Won")
    assert pi[s, d.segments.index("SMB"), j] == 0.0
    assert pi[s, d.segments.index("Enterprise"), j] > 1e-3
    assert np.allclose(pi.sum(axis=-1), 1.0)


@pytest.mark.slow
def test_fits_converge_with_rare_and_segment_only_destinations():
    """Over 5 seeds the default fit passes its checks, gives the absent cell P = 0 and holds
    P(win from entry) within its 90% interval in at least 80% of the cells (measured: 93 of
    100). The control: keeping every destination in every segment fails the checks on seed 2
    (R-hat 1.055, bulk ESS 108 when measured)."""
    from funnelsim.model.funnel_model import FunnelModel
    from tests.test_instant_stays import _covered

    hits = cells = 0
    table = []
    for seed in (1, 2, 3, 4, 5):
        snapshot, truth = _snapshot(seed)
        model = FunnelModel.from_snapshot(snapshot)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(random_seed=seed)
        diag = model.diagnostics
        table.append((seed, diag["r_hat_max"], diag["ess_bulk_min"], diag["divergences"]))
        assert diag["converged"], table
        pi = model.idata.posterior["pi"].sel(stage="Proposal", segment="SMB", destination="Won")
        assert float(pi.max()) == 0.0
        hit, total = _covered(model, truth)
        hits, cells = hits + hit, cells + total
    print("\nseed, max R-hat, min bulk ESS, divergences:", table)
    assert hits >= 0.8 * cells, (hits, cells)

    snapshot, _ = _snapshot(2)
    control = FunnelModel.from_snapshot(snapshot, model_config={"absent_expected_exits": float("inf")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        control.fit(random_seed=2)
    assert not control.diagnostics["converged"]
