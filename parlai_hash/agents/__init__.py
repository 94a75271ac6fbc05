"""ParlAI agents; reachable as ``-m hash_generator`` through the import hook."""
