"""Federated learning across learnloop nodes (Flower): each node trains on its own
feedback and shares only adapter weights and example counts."""
