"""The stylesheet and the small script inlined into every page (a page makes no request at all)."""

CSS = """
:root { --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --bg: #f7f8fa; --card: #fff;
        --bad: #c4320a; --warn: #b54708; --ok: #027a48; --accent: #1849a9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header { padding: 18px 28px 10px; background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 4px; font-size: 22px; }
.meta { color: var(--muted); font-size: 12px; }
main { padding: 10px 28px 40px; max-width: 1500px; }
table.changes td, table.health td, table.matrix th.model, ul.what { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
h2 { font-size: 18px; margin: 26px 0 8px; }
h3 { font-size: 16px; margin: 0 0 2px; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0 4px; }
.tile { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 110px; }
.tile b { display: block; font-size: 20px; }
.tile.bad b { color: var(--bad); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px;
        margin: 14px 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); gap: 10px; }
.chart-box h4 { margin: 6px 0 0; font-size: 13px; color: var(--muted); font-weight: 600; }
svg.chart { width: 100%; height: auto; display: block; }
svg .grid { stroke: #eaecf0; stroke-width: 1; }
svg .tick, svg .unit, svg .legend, svg .group { font-size: 10px; fill: var(--muted); }
svg .group { font-weight: 600; fill: #475467; }
svg .band-a { fill: #f2f4f7; } svg .band-b { fill: #ffffff; }
svg .flag { fill: none; stroke: var(--bad); stroke-width: 2; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eaecf0; vertical-align: top; }
th { color: var(--muted); font-weight: 600; background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { font-weight: 600; } .v-pass { color: var(--ok); } .v-warn { color: var(--warn); }
.v-fail, .kind-bad { color: var(--bad); font-weight: 600; }
tr.flagged td:first-child { box-shadow: inset 3px 0 0 var(--bad); }
a { color: var(--accent); } a.missing { color: var(--muted); text-decoration: line-through; }
.hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11.5px; }
.empty { color: var(--muted); font-style: italic; }
nav a { margin-right: 12px; white-space: nowrap; }
#board-filter { padding: 4px 6px; border: 1px solid var(--line); border-radius: 6px; }
.hidden { display: none; }
ul.what { margin: 0; padding-left: 16px; }
table.matrix { table-layout: fixed; }
table.matrix td, table.matrix th { text-align: center; border: 1px solid #eaecf0; font-size: 12px; }
table.matrix th.model { width: 190px; text-align: left; }
table.matrix tbody th { background: #fafbfc; color: var(--fg); font-weight: 600; }
.board-group h3 { margin-bottom: 6px; }
.st-none { background: #fcfcfd; color: var(--muted); } .st-old { background: #f2f4f7; color: #475467; }
.ch-new-bug, .ch-new-regression { color: var(--bad); font-weight: 700; }
.ch-still-broken { color: var(--warn); font-weight: 600; } .ch-recovered { color: var(--ok); font-weight: 600; }
.health-quarantined, .health-failing { color: var(--bad); font-weight: 700; }
.health-ok { color: var(--ok); }
table.health td[class^="health-"] { overflow-wrap: normal; }
.v-INFRA { color: var(--muted); } tr.infra td { color: var(--muted); }
.st-ok { background: #ecfdf3; color: var(--ok); } .st-warn { background: #fffaeb; color: var(--warn); }
.st-regression { background: #fef0c7; color: #93370d; font-weight: 600; }
.st-bug { background: #fee4e2; color: var(--bad); font-weight: 600; }
"""

# Runs last: a script error leaves data-runs-rendered unset, which the browser test detects.
JS = """
(function () {
  var select = document.getElementById('board-filter');
  var groups = Array.prototype.slice.call(document.querySelectorAll('[data-board]'));
  function apply() {
    groups.forEach(function (g) {
      g.classList.toggle('hidden', select.value !== '' && g.getAttribute('data-board') !== select.value);
    });
  }
  if (select) { select.addEventListener('change', apply); }
  var ids = {};
  document.querySelectorAll('[data-run]').forEach(function (el) { ids[el.getAttribute('data-run')] = true; });
  var count = Object.keys(ids).length;
  document.documentElement.setAttribute('data-runs-rendered', String(count));
  if (count > 0) { document.title = document.title + ' (' + count + ' runs)'; }
})();
"""
