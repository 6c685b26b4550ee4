"""Everything rendered from run records: REPRODUCTION.md and the model cards.

- ``reproduction``: the report, each paper's table beside ours (``python -m medmodels report``)
- ``xray``: the chest X-ray studies' report sections and card sections
- ``cards``: a run folder's README.md (``render_card``); ``card_meta``: its Hub metadata

The package reads records (``medmodels.record``, ``medmodels.latency``) and the registry;
it never imports ``medmodels.train`` (training imports it to write the card).
"""
from medmodels.report.reproduction import add_parser, render_report, run, write_report

__all__ = ["add_parser", "render_report", "run", "write_report"]
