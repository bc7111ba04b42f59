"""What every app shares and nothing of theirs: the one error renderer, money values, the model catalogue, clocks and counters."""
