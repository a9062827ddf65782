"""The CoEL world: a simulator core that knows nothing of gymnasium."""
