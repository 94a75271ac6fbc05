"""Routing: which expert each token goes to.

Hash routing (``HashRouter`` with the ``HASH_TYPES`` registry) lives here;
moving tokens to experts is ``parlai_hash.dispatch``'s job.
"""

from parlai_hash.routing.context import RoutingContext
from parlai_hash.routing.hash_functions import (
    HASH_TYPES,
    HashFunction,
    TableInputs,
    register_hash,
)
from parlai_hash.routing.hash_router import HashRouter, hash_function_class, make_hash_function

__all__ = [
    'RoutingContext',
    'HASH_TYPES',
    'HashFunction',
    'register_hash',
    'TableInputs',
    'hash_function_class',
    'HashRouter',
    'make_hash_function',
]
