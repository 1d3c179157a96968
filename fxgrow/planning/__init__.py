"""Plans: what will change, before anything changes."""

from .plan import GroupChange, ReplicationMap, WidenPlan, check_plan, make_plan  # noqa: F401
