"""Examples for functional-optreg; ``examples.seed_cnn`` holds the seed CNN's reusable pieces."""
