"""The report's Jinja2 template and style sheet (autoescaped: every value from the log is text).

Kept as Python strings so the package ships them without package-data rules. Style: system
sans-serif fonts only (no web font, no network), selectors under ``.fsr`` so the same markup
sits inside a Jupyter output cell, and print rules that fit both A4 (210 mm wide) and Letter
(279 mm tall): margins of 14 mm, no fixed heights, sections and table rows kept whole.
"""

CSS = """
.fsr { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
  color: #1a1a1a; max-width: 182mm; margin: 0 auto; font-size: 10pt; line-height: 1.35; }
.fsr h1 { font-size: 16pt; margin: 0 0 2pt 0; }
.fsr h2 { font-size: 12pt; margin: 14pt 0 4pt 0; border-bottom: 1px solid #ccc; padding-bottom: 2pt; }
.fsr .sub { color: #555; margin: 0 0 8pt 0; }
.fsr .cards { display: flex; flex-wrap: wrap; gap: 6pt; margin: 6pt 0; }
.fsr .card { flex: 1 1 36mm; border: 1px solid #ccc; border-radius: 4pt; padding: 5pt 7pt; }
.fsr .card .k { color: #555; font-size: 8.5pt; }
.fsr .card .v { font-size: 14pt; font-weight: 600; }
.fsr .card .d { color: #555; font-size: 8.5pt; }
.fsr table { border-collapse: collapse; width: 100%; font-size: 8.5pt; margin: 4pt 0; }
.fsr th, .fsr td { padding: 2pt 4pt; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
.fsr th { background: #f3f3f3; }
.fsr td.n, .fsr th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.fsr .dim { color: #666; }
.fsr .ci { font-size: 7.5pt; }
.fsr .warn { border: 2px solid #D55E00; background: #fff3ec; padding: 5pt; }
.fsr .ok { border: 1px solid #009E73; background: #eefaf5; padding: 5pt; }
.fsr figure { margin: 4pt 0; }
.fsr figure svg { width: 100%; height: auto; }
.fsr ul { margin: 2pt 0; padding-left: 14pt; }
@page { margin: 14mm; }
@media print {
  .fsr { max-width: none; font-size: 9pt; }
  .fsr section, .fsr figure, .fsr tr, .fsr .cards { break-inside: avoid; }
  .fsr h2 { break-after: avoid; }
  .fsr thead { display: table-header-group; }
  .fsr .card, .fsr th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""

BODY = r"""
{%- macro band(b) -%}{{ b.p10|money }} – {{ b.p90|money }}{%- endmacro -%}
{%- macro ci(v, fmt) -%}{%- if fmt == 'pct' -%}{{ v[0]|pct }}<br><span class="dim ci">{{ v[1]|pct }}–{{ v[2]|pct }}</span>
{%- else -%}{{ v[0]|days }}<br><span class="dim ci">{{ v[1]|days }}–{{ v[2]|days }}</span>{%- endif -%}{%- endmacro -%}
<div class="fsr">
<h1>Revenue forecast as of {{ h.as_of }}</h1>
<p class="sub">Next {{ h.horizon_days }} days ({{ h.as_of }} to {{ h.horizon_end }}) · {{ h.open_deals|count }} open deals
worth {{ h.open_amount|money }} · {{ h.draws|count }} posterior draws · amounts in the event log's currency</p>

<section id="headline">
<div class="cards">
 <div class="card"><div class="k">Open pipeline, 80% band</div>
  <div class="v">{{ h.pipeline.p10|compact }} – {{ h.pipeline.p90|compact }}</div>
  <div class="d"><span data-key="pipeline_band">{{ band(h.pipeline) }}</span><br>median <span data-key="pipeline_p50">{{ h.pipeline.p50|money }}</span> · mean <span data-key="pipeline_mean">{{ h.pipeline.mean|money }}</span></div></div>
 {%- if h.total %}
 <div class="card"><div class="k">With deals created during the horizon</div>
  <div class="v">{{ h.total.p10|compact }} – {{ h.total.p90|compact }}</div>
  <div class="d"><span data-key="total_band">{{ band(h.total) }}</span><br>median <span data-key="total_p50">{{ h.total.p50|money }}</span> · mean {{ h.total.mean|money }}</div></div>
 {%- endif %}
 <div class="card"><div class="k">Target</div>
  {%- if h.target is not none %}
  <div class="v" data-key="target">{{ h.target|money }}</div>
  <div class="d">P(hit) open pipeline <b data-key="p_hit">{{ h.p_hit|pct }}</b>{% if h.p_hit_total is not none %} · with new deals <b data-key="p_hit_total">{{ h.p_hit_total|pct }}</b>{% endif %}</div>
  {%- else %}<div class="v">—</div><div class="d">no target given (--target)</div>{% endif %}</div>
 <div class="card"><div class="k">Already won in {{ h.period_label }} (since {{ h.period_start }})</div>
  <div class="v" data-key="won_to_date">{{ h.won_to_date|money }}</div>
  <div class="d">{{ h.won_deals_to_date|count }} deals won up to {{ h.as_of }}</div></div>
</div>
{%- if not a.diagnostics.converged %}
<p class="warn"><b>The model fit failed its convergence checks</b>: treat these numbers as unreliable ({{ a.diagnostics.problems|join('; ') }}).</p>
{%- endif %}
</section>

<section id="fan"><h2>Cumulative revenue</h2><figure>{{ fan|safe }}</figure></section>

<section id="periods"><h2>Revenue by period</h2><figure>{{ periods_svg|safe }}</figure>
<table><thead><tr><th>period</th><th>from</th><th>to</th><th class="n">mean</th><th class="n">P10</th><th class="n">P50</th><th class="n">P90</th><th class="n">wins</th>{% if h.total %}<th class="n">new deals</th><th class="n">total</th>{% endif %}</tr></thead><tbody>
{%- for r in periods %}
<tr><td>{{ r.period }}</td><td>{{ r.start }}</td><td>{{ r.end }}</td><td class="n">{{ r.mean|money }}</td><td class="n">{{ r.p10|money }}</td><td class="n">{{ r.p50|money }}</td><td class="n">{{ r.p90|money }}</td><td class="n">{{ "%.1f"|format(r.wins) }}</td>{% if h.total %}<td class="n">{{ r.new|money }}</td><td class="n">{{ r.total|money }}</td>{% endif %}</tr>
{%- endfor %}</tbody></table></section>

<section id="segments"><h2>By segment</h2>
<p class="dim">Open pipeline revenue within the horizon. Each band comes from the per-draw sums of the segment's deals, so the segments add up to the total in every draw (their P10s need not add up to the total's P10).</p>
{% if segments|length > 1 %}<figure>{{ segments_svg|safe }}</figure>{% endif %}
<table><thead><tr><th>segment</th><th class="n">open deals</th><th class="n">open amount</th><th class="n">mean</th><th class="n">P10</th><th class="n">P50</th><th class="n">P90</th><th class="n">share</th></tr></thead><tbody>
{%- for r in segments %}
<tr><td class="seg">{{ r.segment }}</td><td class="n">{{ r.deals|count }}</td><td class="n">{{ r.open_amount|money }}</td><td class="n">{{ r.mean|money }}</td><td class="n">{{ r.p10|money }}</td><td class="n">{{ r.p50|money }}</td><td class="n">{{ r.p90|money }}</td><td class="n">{{ r.share|pct }}</td></tr>
{%- endfor %}
<tr><th>all</th><th class="n">{{ h.open_deals|count }}</th><th class="n">{{ h.open_amount|money }}</th><th class="n">{{ h.pipeline.mean|money }}</th><th class="n">{{ h.pipeline.p10|money }}</th><th class="n">{{ h.pipeline.p50|money }}</th><th class="n">{{ h.pipeline.p90|money }}</th><th class="n">100%</th></tr>
</tbody></table></section>

{%- if c %}
<section id="changes"><h2>What changed since {{ c.then }}</h2>
<p class="dim">The live open amount: deals open and not gone dark (older in their stage than 90% of the stays that moved forward from it). Every deal counts in exactly one step, so the steps add up.</p>
<figure>{{ waterfall|safe }}</figure>
<table id="waterfall"><thead><tr><th>step</th><th class="n">deals</th><th class="n">amount</th><th>note</th></tr></thead><tbody>
{%- for s in c.steps %}
<tr><td>{{ s.step }}</td><td class="n">{{ s.deals|count }}</td><td class="n" data-amount="{{ s.amount }}">{{ s.amount|signed if not loop.first and not loop.last else s.amount|money }}</td>
<td class="dim">{% if s.step == 'moved forward or back' %}{{ s.moved_amount|money }} changed stage and stays in the pipeline{% elif s.step == 'open then' %}as of {{ c.then }}{% elif s.step == 'open now' %}as of {{ c.now }}{% endif %}</td></tr>
{%- endfor %}</tbody></table>
<p>The forecast for {{ h.as_of }} to {{ h.horizon_end }} made from the pipeline of {{ c.then }} (with today's model, so the difference is the pipeline's):
mean {{ c.forecast_then.mean|money }} (80% band {{ band(c.forecast_then) }}); from today's pipeline: mean {{ c.forecast_now.mean|money }} (80% band {{ band(c.forecast_now) }}).
Meanwhile {{ c.won_between|money }} was won.</p>
<table><thead><tr><th>deal</th><th>segment</th><th>stage then → now</th><th class="n">expected then</th><th class="n">expected now</th><th class="n">change</th><th>why</th></tr></thead><tbody>
{%- for r in c.movers %}
<tr><td>{{ r.deal_id }}</td><td>{{ r.segment }}</td><td>{{ r.stage_then or '—' }} → {{ r.stage_now or '—' }}</td><td class="n">{{ r.then|money }}</td><td class="n">{{ r.now|money }}</td><td class="n">{{ r.change|signed }}</td><td>{{ r.why }}</td></tr>
{%- endfor %}</tbody></table></section>
{%- endif %}

<section id="stages"><h2>Stages</h2>
<p class="dim">Posterior mean, then the 90% interval. Advance (to a later stage or won), back (to an earlier stage), lost and stall add up to 100%; "stall" is a deal that goes dark and never moves again. Median days: the model's median time in the stage of deals that leave it. Days to close: expected days from entering the stage to won or lost, for deals that close.</p>
<table><thead><tr><th>stage</th><th>segment</th><th class="n">stays</th><th class="n">advance</th><th class="n">back</th><th class="n">lost</th><th class="n">stall</th><th class="n">win from entry</th><th class="n">median days</th><th class="n">days to close</th></tr></thead><tbody>
{%- for r in stages %}
<tr><td>{{ r.stage }}</td><td>{{ r.segment or 'all' }}</td><td class="n">{{ r.stays|count }}</td>
<td class="n">{{ ci(r.p_advance, 'pct') }}</td><td class="n">{{ ci(r.p_back, 'pct') }}</td><td class="n">{{ ci(r.p_lost, 'pct') }}</td><td class="n">{{ ci(r.p_stall, 'pct') }}</td><td class="n">{{ ci(r.p_win_from_entry, 'pct') }}</td><td class="n">{{ ci(r.median_days, 'days') }}</td><td class="n">{{ ci(r.expected_days_to_close, 'days') }}</td></tr>
{%- endfor %}</tbody></table></section>

<section id="losses"><h2>Where deals are lost</h2>
<p class="dim">Of the deals entering the top of the funnel that end lost or dark, the share that end so in each stage.</p>
<table><thead><tr><th>stage</th><th class="n">share of losses</th><th class="n">90% interval</th></tr></thead><tbody>
{%- for r in losses %}<tr><td>{{ r.stage }}</td><td class="n">{{ r.share|pct }}</td><td class="n">{{ r.low|pct }}–{{ r.high|pct }}</td></tr>{%- endfor %}
</tbody></table></section>

<section id="bottlenecks"><h2>Top bottlenecks</h2>
<p class="dim">Revenue gained within the horizon from +5 points of a stage's conversion, or 20% less time in it (paired simulations{% if bottleneck_draws %}, {{ bottleneck_draws|count }} draws{% endif %}).</p>
<table><thead><tr><th>rank</th><th>stage</th><th>lever</th><th class="n">gain (mean)</th><th class="n">80% interval</th><th class="n">P(gain)</th></tr></thead><tbody>
{%- for r in bottlenecks %}<tr><td>{{ r.rank }}</td><td>{{ r.stage }}</td><td>{{ r.lever }}</td><td class="n">{{ r.gain_mean|signed }}</td><td class="n">{{ r.gain_p10|money }} – {{ r.gain_p90|money }}</td><td class="n">{{ r.p_gain|pct }}</td></tr>{%- endfor %}
</tbody></table></section>

<section id="dark"><h2>Deals going dark</h2>
<p>{{ dark.count|count }} open deals worth {{ dark.amount|money }} have sat in their stage longer than 90% of the deals that moved forward from it.</p>
{%- if dark.rows %}
<table><thead><tr><th>deal</th><th>segment</th><th>stage</th><th class="n">days in stage</th><th class="n">90% moved on by</th><th class="n">amount</th></tr></thead><tbody>
{%- for r in dark.rows %}<tr><td>{{ r.deal_id }}</td><td>{{ r.segment }}</td><td>{{ r.stage }}</td><td class="n">{{ r.age_days|days }}</td><td class="n">{{ r.limit|days }}</td><td class="n">{{ r.amount|money }}</td></tr>{%- endfor %}
</tbody></table>{%- endif %}</section>

<section id="deals"><h2>Top deals</h2>
<table><thead><tr><th>deal</th><th>segment</th><th>stage</th><th class="n">amount</th><th class="n">P(win in horizon)</th><th class="n">P(win ever)</th><th class="n">expected revenue</th><th>expected close</th></tr></thead><tbody>
{%- for r in deals %}<tr><td>{{ r.deal_id }}</td><td>{{ r.segment }}</td><td>{{ r.stage }}</td><td class="n">{{ r.amount|money }}</td><td class="n">{{ r.p_win|pct }}</td><td class="n">{{ r.p_win_ever|pct }}</td><td class="n">{{ r.expected|money }}</td><td>{{ r.close or '—' }}</td></tr>{%- endfor %}
</tbody></table>
<p class="dim">Expected close: the median day of winning among the simulations that win the deal within the horizon.</p></section>

<section id="assumptions"><h2>Diagnostics and assumptions</h2>
<p class="{{ 'ok' if a.diagnostics.converged else 'warn' }}">Model fit: {{ 'passed' if a.diagnostics.converged else 'FAILED' }} its checks
(largest R-hat {{ "%.3f"|format(a.diagnostics.r_hat_max) }}, smallest effective sample size {{ a.diagnostics.ess_bulk_min|count }} bulk / {{ a.diagnostics.ess_tail_min|count }} tail, {{ a.diagnostics.divergences }} divergent transitions; sampler {{ a.diagnostics.sampler }}).</p>
<ul>
<li>Data: {{ a.source }}, events from {{ a.first_event }} to the end of {{ a.as_of }}; later events are not used.{% if a.history_days %} Conversion and time in stage are learnt from stays that began in the last {{ "%g"|format(a.history_days) }} days.{% endif %}{% if a.segment_by %} Segments: column {{ a.segment_by }}, read from each deal's first event.{% endif %}</li>
<li>Currency: whatever the log's amount column holds; nothing is converted. A won deal is worth its last amount times the won/last-amount ratio learnt from its segment; a deal without an amount takes one from its segment's won amounts.</li>
<li>Each open deal is simulated once per posterior draw ({{ a.draws|count }} draws, seed {{ a.seed }}) through the fitted funnel ({{ a.sojourn }} time in stage), from the stage it is in and the days it has already spent there.</li>
<li>A stall is a deal that goes dark and never moves again; the older a deal is in its stage, the likelier it has stalled. "Going dark" in this report means older than 90% of the stays that moved forward from the stage.</li>
{%- if a.new_deals_per_week is not none %}<li>New deals: about {{ "%.1f"|format(a.new_deals_per_week) }} a week are created, as over the last {{ a.new_deal_weeks }} weeks, with no trend or season assumed.</li>{% else %}<li>Deals created during the horizon are not included.</li>{% endif %}
{%- if a.capped %}<li>{{ a.capped|count }} simulated paths hit the step limit and count as not won.</li>{% endif %}
{%- for note in a.notes %}<li class="dim">{{ note }}</li>{% endfor %}
</ul></section>
<p class="dim">Made by funnelsim.</p>
</div>
"""

DOCUMENT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Revenue forecast as of {{ h.as_of }}</title>
<style>{{ css|safe }}{{ page_css|safe }}</style></head>
<body>{{ body|safe }}</body></html>
"""
