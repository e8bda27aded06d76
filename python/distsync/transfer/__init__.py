"""Moving ciphertext: ranged reads from the store (and, later, a BitTorrent swarm)."""
