"""Chaos suite: outage scenarios under load, counted at the simulator.

python -m chaos [--profile short|long] [--json PATH] [--only NAME ...]
"""

from chaos.scenarios import SCENARIOS, ScenarioResult, run, table

__all__ = ["SCENARIOS", "ScenarioResult", "run", "table"]
