"""Routing: which expert each token goes to.

Hash routing (``HashRouter`` with the ``HASH_TYPES`` registry and its
``--hash-gates``), the learned Switch / Token Switch router and BASE layers'
balanced assignment (``BalancedAssignmentRouter``) live here. Every router
returns a ``Route`` (k experts per token); sorting tokens by expert is
``parlai_hash.dispatch``'s job, running the experts ``parlai_hash.experts``'.
"""

from parlai_hash.routing.context import RoutingContext
from parlai_hash.routing.hash_functions import (
    HASH_TYPES,
    HashFunction,
    TableInputs,
    register_hash,
)
from parlai_hash.routing.hash_gates import HASH_GATES, LearnedHashGate
from parlai_hash.routing.hash_router import HashRouter, hash_function_class, make_hash_function
from parlai_hash.routing.assignment import balanced_assignment
from parlai_hash.routing.balanced_assignment_router import BalancedAssignmentRouter
from parlai_hash.routing.route import Route
from parlai_hash.routing.switch_router import SwitchRouter, load_balancing_loss

__all__ = [
    'RoutingContext',
    'HASH_TYPES',
    'HashFunction',
    'register_hash',
    'TableInputs',
    'hash_function_class',
    'HASH_GATES',
    'LearnedHashGate',
    'HashRouter',
    'make_hash_function',
    'balanced_assignment',
    'BalancedAssignmentRouter',
    'Route',
    'SwitchRouter',
    'load_balancing_loss',
]
