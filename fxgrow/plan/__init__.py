"""Plans: what will change, before anything changes."""
from .plan import GroupChange, ReplicationMap, WidenPlan, make_plan  # noqa: F401
