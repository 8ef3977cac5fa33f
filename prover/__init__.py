"""What an inference node does: models, deterministic execution, commitments, proving."""
