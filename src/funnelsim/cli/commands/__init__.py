"""The commands, one module per concern; :mod:`funnelsim.cli.app` registers them.

- :mod:`.describe`: ``funnel`` (the log's funnel table) and ``stages`` (a saved model's);
- :mod:`.fit`: ``fit`` (fit the model and save it);
- :mod:`.simulate`: ``forecast``, ``whatif`` and ``bottlenecks`` (push the open deals through it);
- :mod:`.report`: ``report`` (the quarterly forecast report, HTML and PDF);
- :mod:`.backtest`: ``backtest`` (replay history and score the forecasts);
- :mod:`.synthetic`: ``synth`` (a synthetic CRM) and ``demo`` (the whole job on one).
"""
