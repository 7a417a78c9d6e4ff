"""Low-rank task experts: attach, route (knowledge separation), merge, unmerge, switch."""

from core.experts.attach import (
    attach_experts,
    expert_parameters,
    merge_expert,
    merge_in_place,
    shared_parameters,
    switch_expert,
    unmerge_in_place,
)
from core.experts.layer import FORMS, ExpertConv, is_eligible
from core.experts.plan import RoutePlan
from core.experts.routing import expert_layers, route

__all__ = [
    "FORMS",
    "ExpertConv",
    "RoutePlan",
    "attach_experts",
    "expert_layers",
    "expert_parameters",
    "is_eligible",
    "merge_expert",
    "merge_in_place",
    "route",
    "shared_parameters",
    "switch_expert",
    "unmerge_in_place",
]
