"""``mmusim compare``: the same attacks on every stack strategy, side by side."""
