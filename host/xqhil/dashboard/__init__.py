"""Static, offline HTML dashboard of the run history (``xqhil dashboard --db PATH --out DIR``)."""
from xqhil.dashboard.render import render_dashboard

__all__ = ["render_dashboard"]
