"""Reading finished runs: trial facts (`facts`), the leaderboard and Pareto ranks (`leaderboard`),
tables and text formats (`render`), all runs (`runs`), one trial in full (`detail`), the watch
view (`watch`), the HTML report (`html`) and its plots (`plots`).

Never imports torch or Lightning: `cnnsearch leaderboard` starts at once and works where they
are not installed. Library functions return renderables and text; they never print.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

from cnnsearch._lazy import lazy_exports

_EXPORTS = {
    "trial_detail": "detail",
    "text_chart": "detail",
    "TrialFacts": "facts",
    "trial_facts": "facts",
    "state_label": "facts",
    "arch_epochs": "facts",
    "study_facts": "facts",
    "write_report": "html",
    "Board": "leaderboard",
    "Leaderboard": "leaderboard",
    "leaderboard_rows": "leaderboard",
    "leaderboard_frame": "leaderboard",
    "run_objectives": "leaderboard",
    "pareto_ranks": "leaderboard",
    "make_board": "leaderboard",
    "board_notes": "leaderboard",
    "board_frame": "leaderboard",
    "sort_and_cut": "leaderboard",
    "param_importances": "plots",
    "humanise": "render",
    "percent": "render",
    "plain_text": "render",
    "display_cells": "render",
    "frame_to_text": "render",
    "state_style": "render",
    "leaderboard_table": "render",
    "runs_frame": "runs",
    "runs_table": "runs",
    "watch_view": "watch",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
